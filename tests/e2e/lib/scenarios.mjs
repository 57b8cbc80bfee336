// onair e2e: the WHIP/WHEP scenarios, written against a "target":
//   {whipUrl(id), whepUrl(id), newStream({visibility}) -> {id, key, viewerToken}}
// lib/onaird.mjs makes one for a real onaird; lib/mock_relay.mjs one for the selftest.
// Every scenario opens its own pages and closes them (and their pcs) on every path.
import assert from 'node:assert/strict';
import {publish, play, tryPlay, stop, stats, request, waitFor, sleep, frames, samples,
        audioPackets, closeAll} from './browser.mjs';

const SDP = /^application\/sdp/i;
const PROBLEM = /^application\/problem\+json/i;

async function withPages(browser, names, fn) {
  const pages = [];
  try {
    for (const n of names) pages.push(await browser.newPage(n));
    return await fn(...pages);
  } finally {
    for (const p of pages) {
      await closeAll(p);
      await p.close().catch(() => {});
    }
  }
}

function checkCreated(r, what) {
  assert.equal(r.status, 201, `${what}: status`);
  assert.match(r.contentType, SDP, `${what}: the answer's Content-Type`);
  assert.ok(r.location, `${what}: Location`);
}

// Media flows to a player: first a decoded frame (and audio samples) within `firstMs`.
async function firstMedia(page, id, firstMs, {audio = true} = {}) {
  return waitFor(`${page.e2eName}: first decoded frame${audio ? ' and audio' : ''}`, async () => {
    const s = await stats(page, id);
    return {done: frames(s) > 0 && (!audio || samples(s) > 0), ...s};
  }, firstMs);
}

// Video framesDecoded, audio totalSamplesReceived and audio packetsReceived all grow over `ms`.
// (totalSamplesReceived alone would also grow on concealment: packets must arrive too.)
async function grows(pages, ids, ms) {
  const before = await Promise.all(pages.map((p, i) => stats(p, ids[i])));
  await sleep(ms);
  const after = await Promise.all(pages.map((p, i) => stats(p, ids[i])));
  for (let i = 0; i < pages.length; i++) {
    const [b, a, n] = [before[i], after[i], pages[i].e2eName];
    assert.ok(frames(a) > frames(b), `${n}: framesDecoded ${frames(b)} -> ${frames(a)} over ${ms} ms; ${JSON.stringify(a)}`);
    assert.ok(samples(a) > samples(b), `${n}: audio totalSamplesReceived ${samples(b)} -> ${samples(a)}`);
    assert.ok(audioPackets(a) > audioPackets(b), `${n}: audio packetsReceived ${audioPackets(b)} -> ${audioPackets(a)}`);
  }
  return after;
}

async function waitEnded(page, id, ms) {
  return waitFor(`${page.e2eName}: tracks ended / connection closed`, async () => {
    const s = await stats(page, id);
    return {done: !!s?.ended, ...s};
  }, ms);
}

// (1) one publisher (fake camera + mic), two WHEP players; media flows to both; the publisher
// DELETEs its resource and both players see their tracks end / connection close within 10 s.
export async function publishTwoPlayers(browser, target, log = () => {}) {
  const s = await target.newStream();
  await withPages(browser, ['publisher', 'player1', 'player2'], async (pub, p1, p2) => {
    const w = await publish(pub, target.whipUrl(s.id), s.key);
    checkCreated(w, 'WHIP');
    const players = [p1, p2];
    const ids = [];
    for (const p of players) {
      const r = await play(p, target.whepUrl(s.id), null);
      checkCreated(r, 'WHEP');
      ids.push(r.id);
    }
    await Promise.all(players.map((p, i) => firstMedia(p, ids[i], 10_000)));
    const after = await grows(players, ids, 3000);
    log(`players after 3 s: ${after.map((a) => `${frames(a)} frames ${a.inbound.video.frameWidth}x${a.inbound.video.frameHeight}, ${samples(a)} samples`).join('; ')}`);

    const del = await stop(pub, w.id);
    assert.ok([200, 204].includes(del.status), `DELETE of the WHIP resource: ${JSON.stringify(del)}`);
    const t0 = Date.now();
    const ended = await Promise.all(players.map((p, i) => waitEnded(p, ids[i], 10_000)));
    log(`players saw the end after ${Date.now() - t0} ms: ${ended.map((e) => `${e.connectionState}/${e.iceConnectionState}/${e.dtlsState} tracks ${JSON.stringify(e.tracks.map((t) => [t.kind, t.readyState, t.mutedAfterFlow]))}`).join('; ')}`);
  });
}

// (2) a player joining a publisher that has run for 5 s decodes a frame within 2 s of its
// answer: the relay must ask the publisher for a keyframe (PLI/FIR) or have one cached.
export async function lateJoiner(browser, target, log = () => {}) {
  const s = await target.newStream();
  await withPages(browser, ['publisher', 'late-player'], async (pub, p) => {
    const t0 = Date.now();
    const w = await publish(pub, target.whipUrl(s.id), s.key);
    await waitFor('publisher connected and sending video', async () => {
      const st = await stats(pub, w.id);
      return {done: st.connectionState === 'connected' &&
                    st.outbound.some((o) => o.kind === 'video' && o.framesEncoded > 0), ...st};
    }, 10_000);
    await sleep(Math.max(0, 5000 - (Date.now() - t0)));
    const r = await play(p, target.whepUrl(s.id), null);
    const t1 = Date.now();
    const st = await firstMedia(p, r.id, 2000, {audio: false});
    log(`late player: first frame within ${Date.now() - t1} ms of the answer (keyFramesDecoded ${st.inbound.video.keyFramesDecoded})`);
    await stop(p, r.id);
    await stop(pub, w.id);
  });
}

// How a player asks for the low simulcast layer. Chromium has no API to cap what it
// receives (b=AS in the answer it is given only caps what it would send), so the player tells
// the server, both ways by default:
//   query : ?max_layer=0 on the WHEP POST URL (0 = lowest layer; 0, 1 or 2).
//           ONAIR_E2E_LOW_LAYER_QUERY replaces the query.
//   sdp   : b=AS:<kbps> and b=TIAS:<bps> on the video m-line of the WHEP *offer* (the
//           receiver saying how much it wants, RFC 3556/3890); the relay caps its choice by it.
//   ONAIR_E2E_LOW_LAYER = query | sdp | both (default)
export function lowLayerOptions(kbps = 300) {
  const mode = process.env.ONAIR_E2E_LOW_LAYER || 'both';
  const q = process.env.ONAIR_E2E_LOW_LAYER_QUERY || 'max_layer=0';
  const o = {};
  if (mode === 'sdp' || mode === 'both') o.maxVideoKbps = kbps;
  if (mode === 'query' || mode === 'both') o.query = Object.fromEntries(new URLSearchParams(q));
  return o;
}

// (3) simulcast: the publisher sends q/h/f (320x180, 640x360, 1280x720); a bandwidth-limited
// player gets the low layer (frameWidth <= 320), an unconstrained one the full layer (1280).
// RELIES ON (server): simulcast receive (a=simulcast recv q;h;f, rid header extension);
// bandwidth feedback to the publisher (transport-cc or REMB) so Chromium ramps up to sending
// "f"; per-subscriber layer selection honouring lowLayerOptions() above (?max_layer=0); and
// the full layer for an unconstrained subscriber once the relay's estimate of its bandwidth
// allows it (loopback: it does, within 20 s).
export async function simulcast(browser, target, log = () => {}) {
  const s = await target.newStream();
  await withPages(browser, ['publisher', 'player-low', 'player-high'], async (pub, lo, hi) => {
    const w = await publish(pub, target.whipUrl(s.id), s.key, {simulcast: true});
    assert.equal(w.camera?.width, 1280, `fake camera width: ${JSON.stringify(w.camera)}`);
    assert.match(w.offer, /a=simulcast:send q;h;f/, 'the offer sends three layers');
    // the browser's own send-side estimate has to ramp up before it sends "f"
    await waitFor('publisher sending all three layers (f at 1280 wide)', async () => {
      const st = await stats(pub, w.id);
      const v = Object.fromEntries(st.outbound.filter((o) => o.kind === 'video').map((o) => [o.rid, o]));
      return {done: ['q', 'h', 'f'].every((r) => v[r]?.framesEncoded > 0) && v.f.frameWidth === 1280,
              outbound: st.outbound};
    }, 20_000, 500);
    const rl = await play(lo, target.whepUrl(s.id), null, lowLayerOptions());
    const rh = await play(hi, target.whepUrl(s.id), null);
    const h = await waitFor('the unconstrained player decoding the 1280 layer', async () => {
      const st = await stats(hi, rh.id);
      return {done: st.inbound.video?.frameWidth === 1280 && frames(st) > 0, ...st};
    }, 20_000, 500);
    const l1 = await waitFor('the constrained player decoding a layer <= 320 wide', async () => {
      const st = await stats(lo, rl.id);
      return {done: frames(st) > 0 && st.inbound.video.frameWidth <= 320, ...st};
    }, 10_000, 500);
    await sleep(2000); // and it stays there while frames keep coming
    const l2 = await stats(lo, rl.id);
    assert.ok(frames(l2) > frames(l1), 'the constrained player keeps decoding');
    assert.ok(l2.inbound.video.frameWidth <= 320, `the constrained player stays low: ${JSON.stringify(l2.inbound.video)}`);
    log(`low ${l2.inbound.video.frameWidth}x${l2.inbound.video.frameHeight}, high ${h.inbound.video.frameWidth}x${h.inbound.video.frameHeight}`);
    await stop(lo, rl.id);
    await stop(hi, rh.id);
    await stop(pub, w.id);
  });
}

// (4) a private stream: WHEP without a token -> 401 or 403 application/problem+json; the
// owner's access token plays it (so the refusal is about the token, not a broken route).
export async function privateStream(browser, target, log = () => {}) {
  const s = await target.newStream({visibility: 'private'});
  await withPages(browser, ['publisher', 'anonymous', 'owner'], async (pub, anon, owner) => {
    const w = await publish(pub, target.whipUrl(s.id), s.key);
    const r = await tryPlay(anon, target.whepUrl(s.id), null);
    assert.ok(!r.ok && [401, 403].includes(r.status), `anonymous WHEP of a private stream: ${JSON.stringify(r)}`);
    assert.match(r.contentType, PROBLEM, 'the refusal is application/problem+json');
    assert.doesNotThrow(() => JSON.parse(r.body), 'a JSON problem body');
    log(`anonymous: ${r.status} ${r.body}`);
    const ok = await play(owner, target.whepUrl(s.id), s.viewerToken);
    await firstMedia(owner, ok.id, 10_000);
    await stop(owner, ok.id);
    await stop(pub, w.id);
  });
}

// (5) an offer that is not SDP -> 400 application/problem+json, on WHIP and on WHEP.
export async function badSdp(browser, target, log = () => {}) {
  const s = await target.newStream();
  const junk = 'v=0\r\nthis is not an SDP offer\r\n';
  await withPages(browser, ['publisher', 'client'], async (pub, page) => {
    const r1 = await request(page, target.whipUrl(s.id), {token: s.key, body: junk});
    assert.equal(r1.status, 400, `WHIP with a bad offer: ${JSON.stringify(r1)}`);
    assert.match(r1.contentType, PROBLEM);
    JSON.parse(r1.body);
    const w = await publish(pub, target.whipUrl(s.id), s.key); // the key still works after that
    const r2 = await request(page, target.whepUrl(s.id), {body: junk});
    assert.equal(r2.status, 400, `WHEP with a bad offer: ${JSON.stringify(r2)}`);
    assert.match(r2.contentType, PROBLEM);
    JSON.parse(r2.body);
    log(`WHIP ${r1.status} ${r1.body}; WHEP ${r2.status} ${r2.body}`);
    await stop(pub, w.id);
  });
}
