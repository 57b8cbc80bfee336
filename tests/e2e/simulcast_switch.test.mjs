// onair e2e: simulcast layer switches with temporal layers (issue 13 D3). A Chromium publisher
// sends three VP8 simulcast layers with three temporal layers each (L1T3, Chromium's default);
// one player watches while the stream is handed over to a new publisher (a new peer connection)
// again and again (the relay moves it up through each new publisher's layers as they come up),
// then it is switched down and up by its layer cap (PATCH of its WHEP resource with
// {"max_layer": ...}, issue 13 D4). Each layer has its own VP8 PictureID
// and TL0PICIDX sequence: unless the relay keeps them continuous per viewer, the player's decoder
// takes the new layer's frames for old or missing ones and freezes (2.6-3.1 s after most switches
// in the runs).
//
// Freezes are counted from the player's framesDecoded, sampled every 200 ms: a stall is a run of
// samples without a new frame; none may reach 1.5 s (a hand-over costs under 1 s: the new
// publisher connects and sends its first keyframe; a layer switch costs ~0). getStats'
// freezeCount / totalFreezesDuration are reported too. Which jumps freeze a player depends on
// the random numbering of each publisher's layers: without the rewriting, most runs of this
// test see one or more 1.6-3 s freezes.
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch, publish, play, stats, request, waitFor, sleep, frames, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird} from './lib/onaird.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const skip = haveOnaird() ? false : 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)';
if (skip && REQUIRE) test('onaird is built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];
const ROUNDS = 8; // hand-overs to a new publisher, then two layer switches (down, up)
const WATCH_MS = 5000; // a freeze follows a switch within seconds and lasts up to 3 s

let server = null;
after(async () => {
  if (!server) return;
  const st = await server.stop();
  const log = server.log();
  for (const m of SANITIZER) assert.ok(!log.includes(m), `sanitizer report:\n${log.slice(-6000)}`);
  assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
});

// framesDecoded every `every` ms until stop(); -> {stop() -> samples [{t, frames, width}]}
function sampler(page, id, every = 200) {
  const samples = [];
  let on = true;
  const done = (async () => {
    while (on) {
      const st = await stats(page, id);
      samples.push({t: Date.now(), frames: frames(st), width: st?.inbound?.video?.frameWidth ?? 0});
      await sleep(every);
    }
  })();
  return {samples, async stop() { on = false; await done; return samples; }};
}

// Runs of samples without a new frame longer than `min` ms -> [{at, ms}].
function stallsOver(samples, min) {
  const out = [];
  let since = samples[0];
  for (const x of samples) {
    if (x.frames > since.frames) {
      since = x;
      continue;
    }
    const ms = x.t - since.t;
    if (ms > min) {
      if (out.length && out.at(-1).at === since.t) out.at(-1).ms = ms;
      else out.push({at: since.t, ms});
    }
  }
  return out;
}

test(`hand-overs and layer switches of an L1T3 simulcast player (${ROUNDS} rounds): no freeze`, {timeout: 240_000, skip}, async (t) => {
  server = new Onaird();
  await server.start();
  const target = await onairTarget(server.base);
  const browser = await launch();
  const pubPages = [];
  const playPage = await browser.newPage('player');
  try {
    const s = await target.newStream({title: 'simulcast switches'});
    const media = async () => (await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken})).json;
    const allLayers = async (what) => waitFor(what, async () => {
      const m = await media();
      const layers = m?.publisher?.tracks?.find((x) => x.kind === 'video')?.layers || [];
      return {done: layers.length === 3 && layers.every((l) => l.active && l.packets > 0), layers};
    }, 40_000);
    // a publisher of its own (a new peer connection: new random PictureID / TL0PICIDX per layer)
    const newPublisher = async (i) => {
      const pg = await browser.newPage(`publisher-${i}`);
      pubPages.push(pg);
      await publish(pg, target.whipUrl(s.id), s.key, {simulcast: true, scalabilityMode: 'L1T3', audio: false});
      if (pubPages.length > 1) { // the one it replaced: its pc is closed by the relay
        const old = pubPages.shift();
        await closeAll(old);
        await old.close().catch(() => {});
      }
    };
    await newPublisher(1);
    await allLayers('the relay receives all three layers');
    const ply = await play(playPage, target.whepUrl(s.id), null, {audio: false});
    await waitFor('the player decodes', async () => ({done: frames(await stats(playPage, ply.id)) > 10}), 20_000);
    const cap = async (maxLayer) => {
      const r = await request(playPage, ply.location, {method: 'PATCH', contentType: 'application/json',
                                                       body: JSON.stringify({max_layer: maxLayer})});
      assert.equal(r.status, 200, `PATCH max_layer ${maxLayer}: ${r.status} ${r.body}`);
    };
    const width = async () => (await stats(playPage, ply.id))?.inbound?.video?.frameWidth ?? 0;
    const f0 = await stats(playPage, ply.id);
    const smp = sampler(playPage, ply.id);
    const marks = []; // [{what, t}]
    const t0 = Date.now();
    try {
      // hand-overs: each new publisher numbers its layers' pictures afresh; as its layers come
      // up one by one (its bandwidth ramps up), the relay also moves the player up between them
      for (let round = 1; round <= ROUNDS; round++) {
        marks.push({what: `hand-over ${round}`, t: Date.now() - t0});
        await newPublisher(round + 1);
        await waitFor(`hand-over ${round}: the player decodes the new publisher`, async () => {
          const m = await media();
          return {done: m?.viewers?.[0]?.video_layer >= 0 && m?.publisher?.session && pubPages.length === 1, m};
        }, 20_000);
        await sleep(WATCH_MS);
      }
      // layer switches by the player's cap, down and up again
      await allLayers('the last publisher\'s three layers');
      for (const down of [true, false]) {
        marks.push({what: down ? 'down' : 'up', t: Date.now() - t0});
        await cap(down ? 0 : null);
        await waitFor(`the player gets a layer ${down ? '<= 320' : '> 320'} wide`, async () => {
          const w = await width();
          return {done: down ? (w > 0 && w <= 320) : w > 320, width: w, relay: (await media())?.viewers?.[0]};
        }, 30_000);
        await sleep(WATCH_MS);
      }
    } finally {
      await smp.stop();
    }
    const f1 = await stats(playPage, ply.id);
    const stalls = stallsOver(smp.samples, 700).map((x) => ({...x, at: x.at - t0}));
    const v0 = f0.inbound.video, v1 = f1.inbound.video;
    t.diagnostic(`${frames(f1) - frames(f0)} frames; switches ${JSON.stringify(marks)}; stalls over 0.7 s ` +
                 `${JSON.stringify(stalls)}; freezeCount ${v0.freezeCount} -> ${v1.freezeCount}, ` +
                 `totalFreezesDuration ${v0.totalFreezesDuration} -> ${v1.totalFreezesDuration} s`);
    // a hand-over costs the new publisher's connection and first keyframe (under 1 s here); a
    // layer switch nothing (the old layer flows until the new one's keyframe); a freeze after a
    // PictureID / TL0PICIDX jump lasts up to 3 s (1.6-3 s seen here without the rewriting)
    const worst = Math.max(0, ...stalls.map((x) => x.ms));
    assert.ok(worst < 1500, `the player froze for ${worst} ms: stalls ${JSON.stringify(stalls)}, switches ${JSON.stringify(marks)}`);
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-2000)}`;
    throw e;
  } finally {
    for (const pg of [...pubPages, playPage]) {
      await closeAll(pg);
      await pg.close().catch(() => {});
    }
    await browser.close();
  }
});
