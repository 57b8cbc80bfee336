// onair e2e: the real livekit-client (2.x, pinned in tests/livekit) in headless Chromium against
// onair's calls plugin, with tokens minted by livekit-server-sdk (AccessToken) as an app's
// backend does: the signalling WebSocket at /rtc/v1 (join request with the first offer in the
// URL, JoinResponse, the client's view of room, identity and permissions); a refused token
// reaches the app as LiveKit's ConnectionError with the reason from /rtc/v1/validate;
// room.connect() completes (the relay answers the single peer connection's offers), camera and
// microphone are published, and two clients in a room decode each other's video and audio;
// selective subscriptions (autoSubscribe off, setSubscribed, setEnabled) and setVideoDimensions
// (the simulcast layer received); a screen share next to the camera (a second video: received,
// decoded, stopped, shared again, by a late joiner, subscribed per track); a camera published
// again after its unpublish.
//
//   ONAIRD, ONAIR_PLUGIN_DIR (build/plugins); tests/livekit installed (npm ci)
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {waitFor, sleep} from './lib/browser.mjs';
import {livekitSuite} from './lib/livekit.mjs';

const suite = livekitSuite('APIe2eCalls', 'e2e-calls-secret-0123456789abcdefghijkl');
const {T} = suite;

// room.connect() in the page; the page's window.lk keeps what the app would see.
function connect(page, url, tok, autoSubscribe = true) {
  return page.evaluate(([url, tok, autoSubscribe]) => {
    const {Room, RoomEvent} = window.LivekitClient;
    const room = new Room();
    const lk = window.lk = {events: [], result: null};
    room.on(RoomEvent.ParticipantConnected, (p) => lk.events.push('connected:' + p.identity));
    room.on(RoomEvent.ParticipantDisconnected, (p) => lk.events.push('disconnected:' + p.identity));
    room.on(RoomEvent.TrackUnpublished, (pub, p) => {
      lk.events.push(`unpublished:${p.identity}:${pub.kind}`);
      lk.events.push(`unpublishedSource:${p.identity}:${pub.source}`);
    });
    room.on(RoomEvent.TrackPublished, (pub, p) => lk.events.push(`published:${p.identity}:${pub.kind}`));
    room.on(RoomEvent.ActiveSpeakersChanged, (speakers) =>
      lk.events.push('speakers:' + speakers.map((p) => p.identity).join(',')));
    room.on(RoomEvent.TrackSubscribed, (track, pub, p) => {
      lk.events.push(`subscribed:${p.identity}:${track.kind}:${pub.trackSid}`);
      lk.events.push(`subscribedSource:${p.identity}:${pub.source}:${pub.trackSid}`);
      (lk.receivers ||= {})[`${p.identity}:${pub.source}`] = track.receiver;
      const el = track.attach();
      // a screen share is a second video: its element by its source
      el.id = pub.source === 'screen_share' ? `${p.identity}-screen_share` : `${p.identity}-${track.kind}`;
      document.getElementById(el.id)?.remove();
      el.muted = true;
      document.body.appendChild(el);
    });
    room.on(RoomEvent.SignalConnected, () => {
      lk.events.push('signalConnected');
      lk.name = room.name;
      lk.identity = room.localParticipant.identity;
      lk.participantName = room.localParticipant.name;
      lk.sid = room.localParticipant.sid;
      lk.canPublish = room.localParticipant.permissions?.canPublish;
      lk.serverVersion = room.serverInfo?.version;
    });
    window.lkRoom = room;
    room.connect(url, tok, {autoSubscribe}).then(
      () => (lk.result = 'connected'),
      (e) => (lk.result = {error: String(e && e.message), reason: e?.reason, status: e?.status}));
  }, [url, tok, autoSubscribe]);
}

test('livekit-client joins over /rtc/v1: JoinResponse understood (room, identity, permissions)', T, async () => {
  const page = await suite.page('alice');
  const tok = await suite.token('alice', {room: 'match-42', roomJoin: true, canPublish: true});
  await connect(page, suite.server.base.replace('http', 'ws'), tok);
  await waitFor('SignalConnected', () => page.evaluate(() => window.lk.events.includes('signalConnected')), 15_000);
  const lk = await page.evaluate(() => window.lk);
  assert.equal(lk.name, 'match-42');
  assert.equal(lk.identity, 'alice');
  assert.equal(lk.participantName, 'ALICE');
  assert.match(lk.sid, /^PA_/);
  assert.equal(lk.canPublish, true);
  assert.ok(lk.serverVersion);
  assert.match(suite.server.log(), /alice joined room match-42/);
  // the relay answered the offer that came with the join: ICE and DTLS connect
  await waitFor('room.connect() resolves', () => page.evaluate(() => window.lk.result !== null), 20_000);
  assert.equal(await page.evaluate(() => window.lk.result), 'connected');
  // publishing: the client's re-offer with the camera and microphone is answered and the
  // server confirms each track (TrackPublishedResponse gives the publication its TR_ sid)
  const pub = await page.evaluate(async () => {
    const {createLocalTracks} = window.LivekitClient;
    const tracks = await createLocalTracks({audio: true, video: {resolution: {width: 320, height: 240}}});
    const out = [];
    for (const t of tracks) {
      const p = await window.lkRoom.localParticipant.publishTrack(t);
      out.push({kind: p.kind, sid: p.trackSid});
    }
    return out;
  });
  assert.deepEqual(pub.map((p) => p.kind).sort(), ['audio', 'video']);
  for (const p of pub) assert.match(p.sid, /^TR_/);
  // the relay receives the published media (its stats: packets from the publisher)
  await waitFor('the relay gets video', async () => {
    const st = await page.evaluate(async () => {
      const pc = window.lkRoom.engine.pcManager.publisher.pc;
      let sent = 0;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'outbound-rtp' && r.kind === 'video') sent += r.packetsSent || 0;
      });
      return {sent, state: pc.connectionState};
    });
    return st.state === 'connected' && st.sent > 20;
  }, 20_000);
  await page.evaluate(() => window.lkRoom.disconnect());
  await page.close();
});

test('an expired token: livekit-client reports LiveKit\'s reason (from /rtc/v1/validate)', T, async () => {
  const page = await suite.page('bob');
  const tok = await suite.token('bob', {room: 'match-42', roomJoin: true}, -60);
  await connect(page, suite.server.base.replace('http', 'ws'), tok);
  await waitFor('connect() fails', () => page.evaluate(() => window.lk.result !== null), 20_000);
  const lk = await page.evaluate(() => window.lk);
  assert.equal(lk.events.length, 0);
  assert.match(lk.result.error, /token is expired/);
  assert.match(suite.server.log(), /join refused from .*: token is expired/);
  await page.close();
});

test('two livekit-clients in a room know each other: join response and participant updates', T, async () => {
  const a = await suite.page('alice');
  const b = await suite.page('bob');
  const url = suite.server.base.replace('http', 'ws');
  await connect(a, url, await suite.token('alice', {room: 'match-43', roomJoin: true}));
  await waitFor('alice signalled', () => a.evaluate(() => window.lk.events.includes('signalConnected')), 15_000);
  await connect(b, url, await suite.token('bob', {room: 'match-43', roomJoin: true}));
  await waitFor('bob signalled', () => b.evaluate(() => window.lk.events.includes('signalConnected')), 15_000);
  await waitFor('bob knows alice', () => b.evaluate(() =>
    [...window.lkRoom.remoteParticipants.values()].some((p) => p.identity === 'alice')), 10_000);
  // ParticipantConnected/Disconnected are emitted only once the room is connected (media);
  // the participant updates themselves show in remoteParticipants
  const hasBob = () => a.evaluate(() => window.lkRoom.remoteParticipants.has('bob'));
  await waitFor('alice sees bob join', hasBob, 10_000);
  await b.evaluate(() => window.lkRoom.disconnect());
  await waitFor('alice sees bob leave', async () => !(await hasBob()), 10_000);
  await a.evaluate(() => window.lkRoom.disconnect());
  await a.close();
  await b.close();
});

// What the page decodes of a remote participant's video: the element's size and the
// peer connection's framesDecoded.
function decoded(page, identity) {
  return page.evaluate(async (identity) => {
    const el = document.getElementById(`${identity}-video`);
    const pc = window.lkRoom.engine.pcManager.publisher.pc;
    let frames = 0, audio = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded || 0;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') audio += r.totalSamplesReceived || 0;
    });
    return {width: el ? el.videoWidth : 0, height: el ? el.videoHeight : 0, frames, audio};
  }, identity);
}

// What the page receives of a kind: bytes and video frames decoded (its inbound-rtp streams).
function received(page, kind) {
  return page.evaluate(async (kind) => {
    const pc = window.lkRoom.engine.pcManager.publisher.pc;
    let bytes = 0, frames = 0, samples = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp' || r.kind !== kind) return;
      bytes += r.bytesReceived || 0;
      frames += r.framesDecoded || 0;
      samples += r.totalSamplesReceived || 0;
    });
    return {bytes, frames, samples};
  }, kind);
}

// A remote participant's publication of a kind: call one of its methods in the page.
function remotePub(page, identity, kind, method, arg) {
  return page.evaluate(([identity, kind, method, arg]) => {
    const p = window.lkRoom.remoteParticipants.get(identity);
    const pub = [...p.trackPublications.values()].find((t) => t.kind === kind);
    pub[method](arg);
  }, [identity, kind, method, arg]);
}

// Nothing of a kind arrives any more: once what was in flight is in, the bytes stand still
// (measure: of one track instead).
async function standsStill(page, kind, measure = () => received(page, kind)) {
  await sleep(1500);
  const before = await measure();
  await sleep(2500);
  const after = await measure();
  assert.equal(after.bytes, before.bytes, `${kind} still arrives: ${JSON.stringify([before, after])}`);
  return after;
}

async function publishAV(page, width, height) {
  return page.evaluate(async ([width, height]) => {
    const {createLocalTracks} = window.LivekitClient;
    const tracks = await createLocalTracks({audio: true, video: {resolution: {width, height}}});
    for (const t of tracks) await window.lkRoom.localParticipant.publishTrack(t);
  }, [width, height]);
}

test('a call: two livekit-clients publish camera and microphone and decode each other', T, async () => {
  const a = await suite.page('alice');
  const b = await suite.page('bob');
  const url = suite.server.base.replace('http', 'ws');
  await connect(a, url, await suite.token('alice', {room: 'match-44', roomJoin: true}));
  await waitFor('alice connected', () => a.evaluate(() => window.lk.result === 'connected'), 20_000);
  await publishAV(a, 320, 240);
  await connect(b, url, await suite.token('bob', {room: 'match-44', roomJoin: true}));
  await waitFor('bob connected', () => b.evaluate(() => window.lk.result === 'connected'), 20_000);
  await publishAV(b, 320, 240);
  // each subscribes to the other's tracks (the server's answers carry them on receive slots,
  // the mid-to-track map names them) and decodes the other's video and audio (a page only
  // receives from the relay what another participant published: nothing of its own)
  let last = null;
  for (const [page, from] of [[b, 'alice'], [a, 'bob']]) {
    await waitFor(`${from}'s video and audio decoded`, async () => {
      const d = last = await decoded(page, from);
      return d.width > 0 && d.height > 0 && d.frames > 10 && d.audio > 0;
    }, 30_000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
  }
  // the relay's active speaker (audio levels of Chromium's beeping fake microphones) reaches
  // the app as ActiveSpeakersChanged with a speaker
  const speakers = () => Promise.all([a, b].map((p) => p.evaluate(() =>
    window.lk.events.filter((e) => /^speakers:(alice|bob)/.test(e)).length)));
  await waitFor('ActiveSpeakersChanged', async () => (await speakers()).every((n) => n > 0), 20_000);
  const evA = await a.evaluate(() => window.lk.events);
  const evB = await b.evaluate(() => window.lk.events);
  assert.ok(evA.includes('connected:bob'), evA.join());
  assert.ok(evA.some((e) => /^subscribed:bob:audio:TR_/.test(e)), evA.join());
  assert.ok(evB.some((e) => /^subscribed:alice:audio:TR_/.test(e)), evB.join());
  // alice stops her camera (unpublishTrack renegotiates without it): bob sees it unpublished
  await a.evaluate(async () => {
    const lp = window.lkRoom.localParticipant;
    const cam = [...lp.videoTrackPublications.values()][0];
    await lp.unpublishTrack(cam.track);
  });
  await waitFor('bob sees alice\'s camera unpublished', () =>
    b.evaluate(() => window.lk.events.includes('unpublished:alice:video')), 15_000);
  // bob leaves: alice sees him go
  await b.evaluate(() => window.lkRoom.disconnect());
  await waitFor('alice sees bob leave', () => a.evaluate(() => window.lk.events.includes('disconnected:bob')), 15_000);
  await a.evaluate(() => window.lkRoom.disconnect());
  await a.close();
  await b.close();
});

test('two clients that join and publish at the same moment still receive each other', T, async () => {
  // the race: one's tracks are signalled (add_track) before its offer with them is answered;
  // the others are asked to offer again only once the relay has the tracks
  const a = await suite.page('carol');
  const b = await suite.page('dave');
  const url = suite.server.base.replace('http', 'ws');
  const [ta, tb] = await Promise.all([suite.token('carol', {room: 'match-45', roomJoin: true}),
    suite.token('dave', {room: 'match-45', roomJoin: true})]);
  await Promise.all([connect(a, url, ta), connect(b, url, tb)]);
  await Promise.all([a, b].map((p) => waitFor('connected', () => p.evaluate(() => window.lk.result === 'connected'), 20_000)));
  await Promise.all([publishAV(a, 320, 240), publishAV(b, 320, 240)]);
  let last = null;
  for (const [page, from] of [[b, 'carol'], [a, 'dave']]) {
    await waitFor(`${from}'s video decoded`, async () => {
      const d = last = await decoded(page, from);
      return d.width > 0 && d.frames > 10;
    }, 30_000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
  }
  await a.evaluate(() => window.lkRoom.disconnect());
  await b.evaluate(() => window.lkRoom.disconnect());
  await a.close();
  await b.close();
});

test('three in a room: each decodes the other two', T, async () => {
  const names = ['erin', 'frank', 'grace'];
  const pages = [];
  const url = suite.server.base.replace('http', 'ws');
  for (const n of names) {
    const p = await suite.page(n);
    await connect(p, url, await suite.token(n, {room: 'match-46', roomJoin: true}));
    await waitFor(`${n} connected`, () => p.evaluate(() => window.lk.result === 'connected'), 20_000);
    await publishAV(p, 320, 240);
    pages.push(p);
  }
  let last = null;
  for (const [i, page] of pages.entries())
    for (const from of names.filter((n) => n !== names[i]))
      await waitFor(`${names[i]} decodes ${from}`, async () => {
        const d = last = await decoded(page, from);
        return d.width > 0 && d.frames > 10;
      }, 30_000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
  for (const p of pages) {
    await p.evaluate(() => window.lkRoom.disconnect());
    await p.close();
  }
});

test('selective subscriptions: autoSubscribe off, setSubscribed and setEnabled on a remote track', T, async () => {
  const a = await suite.page('hank');
  const b = await suite.page('iris');
  const url = suite.server.base.replace('http', 'ws');
  await connect(a, url, await suite.token('hank', {room: 'match-47', roomJoin: true}));
  await waitFor('hank connected', () => a.evaluate(() => window.lk.result === 'connected'), 20_000);
  await publishAV(a, 320, 240);
  await connect(b, url, await suite.token('iris', {room: 'match-47', roomJoin: true}), false);
  await waitFor('iris connected', () => b.evaluate(() => window.lk.result === 'connected'), 20_000);
  // iris knows hank's two tracks but receives neither
  await waitFor('iris sees hank\'s tracks', () => b.evaluate(() => {
    const p = window.lkRoom.remoteParticipants.get('hank');
    return p && p.trackPublications.size === 2;
  }), 15_000);
  await sleep(3000);
  for (const kind of ['video', 'audio'])
    assert.equal((await received(b, kind)).bytes, 0, `${kind} arrived unsubscribed`);
  // subscribes to the video only: decodes it, still no audio
  await remotePub(b, 'hank', 'video', 'setSubscribed', true);
  let last = null;
  await waitFor('hank\'s video decoded', async () => {
    last = await received(b, 'video');
    return last.frames > 10;
  }, 30_000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
  assert.equal((await received(b, 'audio')).bytes, 0, 'audio arrived unsubscribed');
  let ev = await b.evaluate(() => window.lk.events);
  assert.ok(ev.some((e) => /^subscribed:hank:video:TR_/.test(e)), ev.join());
  assert.ok(!ev.some((e) => /^subscribed:hank:audio/.test(e)), ev.join());
  // unsubscribes: the video stops; subscribes again: frames are decoded again;
  // UpdateTrackSettings: disabled stops forwarding, enabled resumes it
  for (const method of ['setSubscribed', 'setEnabled']) {
    await remotePub(b, 'hank', 'video', method, false);
    const off = await standsStill(b, 'video');
    await remotePub(b, 'hank', 'video', method, true);
    await waitFor(`hank's video again after ${method}(true)`, async () => {
      last = await received(b, 'video');
      return last.frames > off.frames + 10;
    }, 30_000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify([off, last])}`));
  }
  // the audio, subscribed late, gets a receive slot of its own and is heard
  await remotePub(b, 'hank', 'audio', 'setSubscribed', true);
  await waitFor('hank\'s audio heard', async () => (await received(b, 'audio')).samples > 0, 30_000);
  ev = await b.evaluate(() => window.lk.events);
  assert.ok(ev.some((e) => /^subscribed:hank:audio:TR_/.test(e)), ev.join());
  for (const p of [a, b]) {
    await p.evaluate(() => window.lkRoom.disconnect());
    await p.close();
  }
});

test('UpdateTrackSettings: setVideoDimensions caps the simulcast layer a receiver gets', T, async () => {
  const a = await suite.page('jack');
  const b = await suite.page('kate');
  const url = suite.server.base.replace('http', 'ws');
  await connect(a, url, await suite.token('jack', {room: 'match-48', roomJoin: true}));
  await waitFor('jack connected', () => a.evaluate(() => window.lk.result === 'connected'), 20_000);
  await publishAV(a, 640, 480); // livekit-client's simulcast: three layers up to 640x480
  await connect(b, url, await suite.token('kate', {room: 'match-48', roomJoin: true}));
  await waitFor('kate connected', () => b.evaluate(() => window.lk.result === 'connected'), 20_000);
  let last = null;
  const size = async (ok, what) => waitFor(what, async () => {
    last = await decoded(b, 'jack');
    return last.frames > 10 && ok(last.width);
  }, 45_000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
  await size((w) => w >= 480, 'jack\'s video at 640 or 480 wide');
  // a quarter of the size: the lowest layer; the full size again: the cap is lifted
  await remotePub(b, 'jack', 'video', 'setVideoDimensions', {width: 160, height: 120});
  await size((w) => w > 0 && w <= 320, 'jack\'s video at its lowest layer');
  await remotePub(b, 'jack', 'video', 'setVideoDimensions', {width: 640, height: 480});
  await size((w) => w >= 480, 'jack\'s video back above 320 wide');
  for (const p of [a, b]) {
    await p.evaluate(() => window.lkRoom.disconnect());
    await p.close();
  }
});

// ---- screen share: a second video of a participant, next to its camera ----------------------

// A canvas of one solid colour published as a screen share (Track.Source.ScreenShare): the
// page repaints it so that it keeps producing frames.
function shareScreen(page, colour) {
  return page.evaluate(async (colour) => {
    const {Track} = window.LivekitClient;
    const canvas = document.createElement('canvas');
    canvas.width = 640;
    canvas.height = 360;
    const ctx = canvas.getContext('2d');
    const paint = () => { ctx.fillStyle = colour; ctx.fillRect(0, 0, canvas.width, canvas.height); };
    paint();
    clearInterval(window.screenPaint);
    window.screenPaint = setInterval(paint, 50);
    const mst = canvas.captureStream(20).getVideoTracks()[0];
    const pub = await window.lkRoom.localParticipant.publishTrack(mst,
      {source: Track.Source.ScreenShare, name: 'screen'});
    window.screenTrack = pub.track;
    return pub.trackSid;
  }, colour);
}

// What the page decodes of one remote track (by source): framesDecoded and bytes of its own
// receiver (the last one it was subscribed on: kept while unsubscribed), and the colour at the
// centre of its picture.
function trackView(page, identity, source) {
  return page.evaluate(async ([identity, source]) => {
    const receiver = window.lk.receivers?.[`${identity}:${source}`];
    if (!receiver) return {frames: 0, bytes: 0};
    let frames = 0, bytes = 0;
    (await receiver.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      frames += r.framesDecoded || 0;
      bytes += r.bytesReceived || 0;
    });
    const el = document.getElementById(source === 'screen_share' ? `${identity}-screen_share` : `${identity}-video`);
    let rgb = null;
    if (el && el.videoWidth) {
      const c = document.createElement('canvas');
      c.width = el.videoWidth;
      c.height = el.videoHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(el, 0, 0);
      rgb = [...ctx.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3)];
    }
    return {frames, bytes, rgb, width: el?.videoWidth || 0};
  }, [identity, source]);
}

const RED = (rgb) => !!rgb && rgb[0] > 180 && rgb[1] < 80 && rgb[2] < 80;
const BLUE = (rgb) => !!rgb && rgb[2] > 180 && rgb[0] < 80 && rgb[1] < 80;

// Frames of a track keep coming: more than `more` new ones (and the picture check, if given).
async function decodes(page, identity, source, what, more = 10, ok = () => true) {
  const start = (await trackView(page, identity, source)).frames;
  let last = null;
  await waitFor(what, async () => {
    last = await trackView(page, identity, source);
    return last.frames > start + more && ok(last.rgb);
  }, 45_000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
  return last;
}

// A page of identity connected to room (room.connect() resolved); leaveAll: they disconnect.
async function joined(identity, room) {
  const page = await suite.page(identity);
  await connect(page, suite.server.base.replace('http', 'ws'), await suite.token(identity, {room, roomJoin: true}));
  await waitFor(`${identity} connected`, () => page.evaluate(() => window.lk.result === 'connected'), 20_000);
  return page;
}

async function leaveAll(pages) {
  for (const p of pages) {
    await p.evaluate(() => window.lkRoom.disconnect());
    await p.close();
  }
}

function screenPub(page, identity, method, arg) {
  return page.evaluate(([identity, method, arg]) => {
    const p = window.lkRoom.remoteParticipants.get(identity);
    [...p.trackPublications.values()].find((t) => t.source === 'screen_share')[method](arg);
  }, [identity, method, arg]);
}

test('a screen share next to the camera: received and decoded, stopped, shared again, by a late joiner, per track', T, async () => {
  const b = await joined('mona', 'match-49');
  const a = await joined('luke', 'match-49');
  await publishAV(a, 320, 240);
  const screen1 = await shareScreen(a, '#ff0000');
  assert.match(screen1, /^TR_/);
  // mona subscribes to all three with their sources, and decodes both videos: the camera
  // (Chromium's fake one) and the red canvas
  await waitFor('mona subscribed to camera, microphone and screen share', () => b.evaluate(() =>
    ['camera', 'microphone', 'screen_share'].every((s) =>
      window.lk.events.some((e) => e.startsWith(`subscribedSource:luke:${s}:TR_`)))), 30_000);
  let ev = await b.evaluate(() => window.lk.events);
  assert.ok(ev.includes(`subscribedSource:luke:screen_share:${screen1}`), ev.join());
  assert.ok(ev.some((e) => /^subscribed:luke:video:TR_/.test(e)), ev.join());
  const cam = await decodes(b, 'luke', 'camera', 'luke\'s camera decoded');
  const scr = await decodes(b, 'luke', 'screen_share', 'luke\'s screen share decoded (red)', 10, RED);
  assert.ok(cam.rgb && !RED(cam.rgb), `the camera looks like the screen: ${JSON.stringify(cam)}`);
  assert.ok(scr.width > 0, JSON.stringify(scr));
  await waitFor('mona hears luke', async () => (await received(b, 'audio')).samples > 0, 30_000);

  // a late joiner gets the screen share too
  const c = await joined('nina', 'match-49');
  await decodes(c, 'luke', 'screen_share', 'nina decodes luke\'s screen share', 10, RED);
  await decodes(c, 'luke', 'camera', 'nina decodes luke\'s camera');
  await leaveAll([c]);

  // per track: mona unsubscribes from the screen share (the camera goes on), then subscribes
  // again; disables it (UpdateTrackSettings), then enables it
  for (const method of ['setSubscribed', 'setEnabled']) {
    await screenPub(b, 'luke', method, false);
    await standsStill(b, 'screen_share', () => trackView(b, 'luke', 'screen_share'));
    await decodes(b, 'luke', 'camera', `luke's camera goes on after ${method}(false) on the screen`);
    await screenPub(b, 'luke', method, true);
    await decodes(b, 'luke', 'screen_share', `luke's screen share again after ${method}(true)`, 10, RED);
  }

  // luke stops the screen share: mona sees it unpublished, the camera keeps decoding
  const stopped = (n) => waitFor(`mona sees screen share ${n} unpublished`, () => b.evaluate((n) =>
    window.lk.events.filter((e) => e === 'unpublishedSource:luke:screen_share').length === n, n), 15_000);
  const stopCanvas = () => a.evaluate(async () => {
    clearInterval(window.screenPaint);
    await window.lkRoom.localParticipant.unpublishTrack(window.screenTrack);
  });
  await stopCanvas();
  await stopped(1);
  ev = await b.evaluate(() => window.lk.events);
  assert.ok(!ev.includes('unpublishedSource:luke:camera'), ev.join());
  await decodes(b, 'luke', 'camera', 'luke\'s camera after the screen share stopped');

  // a second screen share (blue) works again
  const screen2 = await shareScreen(a, '#0000ff');
  assert.notEqual(screen2, screen1);
  await waitFor('mona subscribed to the second screen share', () => b.evaluate((sid) =>
    window.lk.events.includes(`subscribedSource:luke:screen_share:${sid}`), screen2), 30_000);
  await decodes(b, 'luke', 'screen_share', 'luke\'s second screen share decoded (blue)', 10, BLUE);
  await decodes(b, 'luke', 'camera', 'luke\'s camera with the second screen share');

  // livekit-client's own screen share (getDisplayMedia: Chromium's fake screen), on and off
  await stopCanvas();
  await stopped(2);
  const screen3 = await a.evaluate(async () =>
    (await window.lkRoom.localParticipant.setScreenShareEnabled(true)).trackSid);
  await waitFor('mona subscribed to setScreenShareEnabled\'s screen share', () => b.evaluate((sid) =>
    window.lk.events.includes(`subscribedSource:luke:screen_share:${sid}`), screen3), 30_000);
  await decodes(b, 'luke', 'screen_share', 'luke\'s captured screen decoded');
  await a.evaluate(() => window.lkRoom.localParticipant.setScreenShareEnabled(false));
  await stopped(3);
  await decodes(b, 'luke', 'camera', 'luke\'s camera after setScreenShareEnabled(false)');
  await leaveAll([a, b]);
});

test('a camera unpublished and published again (a new track): the other participant receives the new one', T, async () => {
  const b = await joined('pia', 'match-50');
  const a = await joined('oscar', 'match-50');
  await publishAV(a, 320, 240);
  await decodes(b, 'oscar', 'camera', 'oscar\'s first camera decoded');
  await a.evaluate(async () => {
    const lp = window.lkRoom.localParticipant;
    await lp.unpublishTrack([...lp.videoTrackPublications.values()][0].track);
  });
  await waitFor('pia sees the camera unpublished', () =>
    b.evaluate(() => window.lk.events.includes('unpublishedSource:oscar:camera')), 15_000);
  const sid = await a.evaluate(async () => {
    const {createLocalVideoTrack} = window.LivekitClient;
    const t = await createLocalVideoTrack({resolution: {width: 320, height: 240}});
    return (await window.lkRoom.localParticipant.publishTrack(t)).trackSid;
  });
  // its old receive slot is given up (a browser announces a new track only on a slot that
  // stopped receiving): the new camera comes on a new one, as a new TrackSubscribed
  await waitFor('pia subscribed to the new camera', () => b.evaluate((sid) =>
    window.lk.events.includes(`subscribedSource:oscar:camera:${sid}`), sid), 30_000);
  await decodes(b, 'oscar', 'camera', 'oscar\'s second camera decoded');
  await leaveAll([a, b]);
});
