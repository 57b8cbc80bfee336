// onair e2e: simulcast layer choice for Chromium players (issue 13 D4). A Chromium player's REMB
// starts at the rate it gets and then climbs by ~8 % a second: read as an available bandwidth, it
// moved every unconstrained player from 1280 to 640 within 5 s, for good. The relay must keep a
// player on its layer while its REMB only mirrors that rate, and probe (RTX copies up to the next
// layer's rate) before moving it up. The player also changes its layer cap mid-session (PATCH of
// its WHEP resource with {"max_layer": 0|1|2|null}).
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

let server = null;
after(async () => {
  if (!server) return;
  const st = await server.stop();
  const log = server.log();
  for (const m of SANITIZER) assert.ok(!log.includes(m), `sanitizer report:\n${log.slice(-6000)}`);
  assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
});

test('an unconstrained player stays on the top layer; capped and uncapped, it climbs back', {timeout: 150_000, skip}, async (t) => {
  server = new Onaird();
  await server.start();
  const target = await onairTarget(server.base);
  const browser = await launch();
  const [pubPage, playPage] = [await browser.newPage('publisher'), await browser.newPage('player')];
  try {
    const s = await target.newStream({title: 'layers'});
    await publish(pubPage, target.whipUrl(s.id), s.key, {simulcast: true, audio: false});
    const media = async () => (await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken})).json;
    await waitFor('the relay receives all three layers', async () => {
      const m = await media();
      const layers = m?.publisher?.tracks?.find((x) => x.kind === 'video')?.layers || [];
      return {done: layers.length === 3 && layers.every((l) => l.active && l.packets > 0), layers};
    }, 30_000);
    const ply = await play(playPage, target.whepUrl(s.id), null, {audio: false});
    const width = async () => (await stats(playPage, ply.id))?.inbound?.video?.frameWidth ?? 0;
    await waitFor('the player gets the 1280-wide layer', async () => ({done: (await width()) === 1280}), 20_000);

    // (1) its REMB arrives (~5 s) and mirrors the rate it gets: it stays on the top layer
    const seen = [];
    for (let i = 0; i < 15; i++) {
      await sleep(1000);
      const v = (await media())?.viewers?.[0];
      seen.push({width: await width(), layer: v?.video_layer, remb: v?.estimate_bps, sent: v?.sent_bps});
    }
    t.diagnostic(`15 s on its own: ${JSON.stringify(seen.map((x) => [x.width, x.layer, Math.round((x.remb || 0) / 1000)]))} ([width, layer, REMB kbit/s])`);
    assert.ok(seen.some((x) => x.remb > 0), 'the player sent REMB');
    assert.ok(seen.slice(-5).every((x) => x.layer === 2 && x.width === 1280),
              `the unconstrained player left the top layer: ${JSON.stringify(seen)}`);

    // (2) capped to the lowest layer mid-session, then the cap lifted: probes move it up again
    const cap = async (maxLayer) => {
      const r = await request(playPage, ply.location, {method: 'PATCH', contentType: 'application/json',
                                                       body: JSON.stringify({max_layer: maxLayer})});
      assert.equal(r.status, 200, `PATCH max_layer ${maxLayer}: ${r.status} ${r.body}`);
      return JSON.parse(r.body);
    };
    assert.deepEqual((await cap(0)).max_layer, 0);
    await waitFor('capped: the 320-wide layer', async () => {
      const w = await width();
      return {done: w > 0 && w <= 320, width: w};
    }, 20_000);
    await sleep(8000); // its REMB now mirrors ~200 kbit/s
    const low = (await media())?.viewers?.[0];
    t.diagnostic(`capped: ${JSON.stringify(low)}`);
    const t0 = Date.now();
    assert.equal((await cap(null)).max_layer, null);
    const steps = [];
    await waitFor('uncapped: back on the 1280-wide layer', async () => {
      const v = (await media())?.viewers?.[0];
      const w = await width();
      if (!steps.length || steps.at(-1).width !== w) steps.push({s: (Date.now() - t0) / 1000, width: w, probes: v?.probes});
      return {done: w === 1280 && v?.video_layer === 2, width: w, viewer: v};
    }, 60_000, 500);
    const up = (await media())?.viewers?.[0];
    t.diagnostic(`climbed back in ${(Date.now() - t0) / 1000} s: ${JSON.stringify(steps)}; ${up.probes} probes ` +
                 `(${up.probe_failures} failed), ${up.probe_packets} probe packets`);
    assert.ok(up.probes >= 1, `it went up through probes: ${JSON.stringify(up)}`);
    const f = frames(await stats(playPage, ply.id));
    await sleep(2000);
    assert.ok(frames(await stats(playPage, ply.id)) > f + 10, 'the player decodes on the top layer');
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-2000)}`;
    throw e;
  } finally {
    for (const pg of [pubPage, playPage]) {
      await closeAll(pg);
      await pg.close().catch(() => {});
    }
    await browser.close();
  }
});
