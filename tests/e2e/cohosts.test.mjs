// onair e2e: co-hosts (plugins/cohosts, docs/media.md "Rooms and co-hosts"). The owner publishes
// (640x360) with WHIP, invites a second account, which accepts and publishes from its own
// Chromium page with WHIP ?role=cohost and its own token (320x180). A plain WHEP player still gets
// the main host (frames wider than 320); a third page with a ?participant=<co-host> session and a
// main-host session decodes frames from both (320 wide and wider). The owner mutes the co-host's
// video (that session's frames stop, the host's go on) and unmutes it (they start again). The
// owner removes the co-host: the co-host session is closed by the relay while the main-host
// sessions go on decoding, and a new WHIP of the removed co-host is 403 not_cohost.
//
//   ONAIRD, ONAIR_PLUGIN_DIR (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch, publish, tryPublish, play, stats, waitFor, frames, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, api, register, haveOnaird, PLUGIN_DIR} from './lib/onaird.mjs';
import {join} from 'node:path';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const skip = haveOnaird() ? false : 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)';
if (skip && REQUIRE) test('onaird is built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
const T = {timeout: 120_000, skip};

let browser = null;
let server = null;

after(async () => {
  try {
    await browser?.close();
  } finally {
    if (server) {
      const st = await server.stop();
      assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${server.log().slice(-4000)}`);
      assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(server.log()), server.log().slice(-6000));
    }
  }
});

const userId = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sub;
const width = (s) => s?.inbound?.video?.frameWidth ?? 0;

async function decoding(page, id, what, pred = () => true, ms = 20_000) {
  const a = await stats(page, id);
  return waitFor(what, async () => {
    const b = await stats(page, id);
    return {done: frames(b) > frames(a) + 10 && pred(b), frames: frames(b), width: width(b),
            connection: b.connectionState};
  }, ms);
}

test('host + co-host publish; the plain player gets the host, ?participant= the co-host; removal ends the co-host',
     T, async (t) => {
  server = new Onaird({
    plugins: {
      streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
      cohosts: {path: join(PLUGIN_DIR, 'cohosts.so')},
    },
  });
  await server.start();
  browser = await launch();
  const target = await onairTarget(server.base);
  const s = await target.newStream();
  const owner = s.viewerToken;
  const guest = await register(server.base, 'cohost');
  const guestId = userId(guest.token);
  const [hostPage, guestPage, mainPage, sidePage] =
      [await browser.newPage('host'), await browser.newPage('cohost'),
       await browser.newPage('main-player'), await browser.newPage('cohost-player')];
  try {
    // a viewer's socket on the stream's topic: cohost.active_speaker (the relay's choice from the
    // publishers' RFC 6464 audio levels; Chromium's fake microphone beeps)
    const sock = await mainPage.evaluate(([u, i]) => window.e2e.watchStream(u, i),
                                         [server.base.replace(/^http/, 'ws') + '/ws', s.id]);
    await publish(hostPage, target.whipUrl(s.id), s.key, {width: 640, height: 360});
    let r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/cohosts/invite`,
                      {token: owner, body: {user_id: guestId}});
    assert.equal(r.status, 201, r.text);
    r = await api(server.base, 'POST', `/api/v1/cohosts/invites/${r.json.invite.id}/accept`,
                  {token: guest.token});
    assert.equal(r.status, 200, r.text);
    const cohostWhip = target.whipUrl(s.id) + '?role=cohost';
    await publish(guestPage, cohostWhip, guest.token, {width: 320, height: 180});

    const main = await play(mainPage, target.whepUrl(s.id), null);
    const side = await play(sidePage, target.whepUrl(s.id) + `?participant=${guestId}`, null);
    const m1 = await decoding(mainPage, main.id, 'the plain player decodes the main host (wider than 320)',
                              (x) => width(x) > 320);
    const s1 = await decoding(sidePage, side.id, 'the co-host player decodes the co-host (at most 320 wide)',
                              (x) => width(x) > 0 && width(x) <= 320);
    // the same page (onair's own player) also plays the main host: frames from both hosts
    const both = await play(sidePage, target.whepUrl(s.id), null);
    const b1 = await decoding(sidePage, both.id, 'the co-host page also decodes the main host',
                              (x) => width(x) > 320);
    t.diagnostic(`main player ${m1.width} wide, co-host player ${s1.width} wide, ` +
                 `the same page's main-host session ${b1.width} wide`);
    r = await api(server.base, 'GET', `/api/v1/streams/${s.id}/cohosts`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.cohosts.map((c) => [c.user_id, c.on_air]), [[guestId, true]]);
    const spoke = await waitFor('a cohost.active_speaker on the stream topic', async () => {
      const m = ((await mainPage.evaluate((i) => window.e2e.wsMessages(i), sock)) || [])
          .filter((x) => x.type === 'cohost.active_speaker');
      return {done: m.length > 0, m: m.map((x) => x.data)};
    }, 20_000);
    for (const d of spoke.m) {
      assert.equal(d.stream, s.id);
      assert.ok(d.participant === undefined || d.participant === null || d.participant === guestId,
                JSON.stringify(d));
      assert.ok(Number.isInteger(d.at) && d.at > 0, JSON.stringify(d));
    }
    t.diagnostic(`active speakers announced: ${JSON.stringify(spoke.m.map((d) => d.participant ?? 'host'))}`);

    // the owner mutes the co-host's video: the relay stops forwarding it, the host's goes on
    const mute = (video) => api(server.base, 'POST', `/api/v1/streams/${s.id}/cohosts/${guestId}/mute`,
                                {token: owner, body: {video}});
    r = await mute(true);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.cohost.muted.video, true);
    let prev = -1;
    const still = await waitFor('the co-host player gets no more frames', async () => {
      const n = frames(await stats(sidePage, side.id));
      const done = n === prev;
      prev = n;
      return {done, frames: n};
    }, 10_000, 1000);
    await decoding(mainPage, main.id, 'the main player decodes while the co-host is muted');
    r = await mute(false);
    assert.equal(r.status, 200, r.text);
    const back = await decoding(sidePage, side.id, 'the co-host player decodes again after the unmute');
    t.diagnostic(`muted at ${still.frames} frames, ${back.frames} after the unmute`);

    r = await api(server.base, 'DELETE', `/api/v1/streams/${s.id}/cohosts/${guestId}`, {token: owner});
    assert.equal(r.status, 200, r.text);
    const removedAt = Date.now();
    await waitFor('the relay closes the co-host player', async () => {
      const x = await stats(sidePage, side.id);
      return {done: x.ended || x.dtlsState === 'closed' || x.connectionState !== 'connected',
              dtls: x.dtlsState, connection: x.connectionState};
    }, 10_000, 100);
    t.diagnostic(`co-host player closed ${Date.now() - removedAt} ms after the removal`);
    const m2 = await decoding(mainPage, main.id, 'the main player keeps decoding', (x) => width(x) > 320);
    assert.equal(m2.connection, 'connected');
    await decoding(sidePage, both.id, 'the page\'s main-host session keeps decoding', (x) => width(x) > 320);
    const again = await tryPublish(guestPage, cohostWhip, guest.token, {width: 320, height: 180});
    assert.equal(again.status, 403, JSON.stringify(again).slice(0, 300));
    assert.match(again.body, /not_cohost/);
    r = await api(server.base, 'GET', `/api/v1/streams/${s.id}`);
    assert.equal(r.json.stream.status, 'live');
  } finally {
    for (const p of [hostPage, guestPage, mainPage, sidePage]) await closeAll(p);
  }
});
