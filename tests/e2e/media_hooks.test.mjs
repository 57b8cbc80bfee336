// onair e2e: the SDK's media hooks (ABI 1.4) with real media. The test plugin `mediatap`
// (tests/plugins/mediatap.c) hears tracks published / unpublished, taps the video of each
// stream and counts valid RTP and VP8 keyframes, and asks for keyframes on request.
// Chromium publishes over WHIP; a second onaird runs mediatap with a tap callback that
// sleeps, to show a slow plugin drops tap packets but never slows the viewers.
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_TEST_PLUGIN_DIR (build/tests/plugins)
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {join} from 'node:path';
import {existsSync} from 'node:fs';
import {launch, publish, play, stop, stats, waitFor, sleep, frames} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird, PLUGIN_DIR, REPO} from './lib/onaird.mjs';

const TEST_PLUGIN_DIR = process.env.ONAIR_TEST_PLUGIN_DIR || join(REPO, 'build/tests/plugins');
const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const have = haveOnaird() && existsSync(join(TEST_PLUGIN_DIR, 'mediatap.so'));
const skip = have ? false : `no onaird or no ${TEST_PLUGIN_DIR}/mediatap.so`;
if (skip && REQUIRE)
  test('onaird and the mediatap plugin are built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));

const T = {timeout: 90_000, skip: skip || false};
let browser = null;
const servers = [];

async function startServer(slowMs = 0) {
  const s = new Onaird({plugins: {
    streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
    mediatap: {path: join(TEST_PLUGIN_DIR, 'mediatap.so'), config: {slow_ms: slowMs}},
  }});
  await s.start();
  servers.push(s);
  return {server: s, target: await onairTarget(s.base)};
}

async function tapOf(base, stream) {
  const r = await api(base, 'GET', `/api/v1/mediatap/${stream}`);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

before(async () => {
  if (!skip) browser = await launch();
});

after(async () => {
  try {
    await browser?.close();
  } finally {
    for (const s of servers) {
      const st = await s.stop();
      assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${s.log().slice(-4000)}`);
      assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(s.log()), s.log().slice(-6000));
    }
  }
});

test('track events, an RTP tap and keyframe requests reach a plugin', T, async (t) => {
  const {server, target} = await startServer();
  const s = await target.newStream();
  const page = await browser.newPage('publisher');
  try {
    const none = await api(server.base, 'POST', `/api/v1/mediatap/${s.id}/keyframe`);
    assert.equal(none.status, 404, `keyframe without a publisher: ${none.text}`);
    const w = await publish(page, target.whipUrl(s.id), s.key);
    // both tracks announced with what the publisher negotiated
    const st = await waitFor('tracks published and video tapped', async () => {
      const m = await tapOf(server.base, s.id);
      // mediatap asks for a keyframe when it opens its tap (packets before it are not seen)
      return {done: m.events.length >= 2 && m.valid > 50 && m.keyframes >= 1, ...m};
    }, 15_000);
    const kinds = st.events.map((e) => `${e.kind}:${e.codec}:${e.published}`).sort();
    assert.deepEqual(kinds, ['audio:opus:true', 'video:VP8:true']);
    assert.equal(st.valid, st.packets, 'every tapped packet is RTP of the announced payload type');
    assert.equal(st.dropped, 0);
    // a plugin built with an older, smaller onair_tap_stats_t gets its prefix filled
    assert.equal(st.older_struct_filled, true, 'media_tap_stats fills an older struct\'s prefix');
    assert.ok(st.keyframes >= 1, `the requested keyframe was tapped: ${JSON.stringify(st)}`);
    // ABI 1.6: the tap carries Chromium's RTCP sender reports, paired with the tapped source
    const sr = await waitFor('a sender report on the tap', async () => {
      const m = await tapOf(server.base, s.id);
      return {done: m.sr_seen, ...m};
    }, 10_000);
    assert.equal(sr.sr_near, true, `the report's RTP time is the tapped packets': ${JSON.stringify(sr)}`);
    // Chromium's own keyframe interval is long: a new keyframe within 3 s is ours
    const before = (await tapOf(server.base, s.id)).keyframes;
    await sleep(500);
    const r = await api(server.base, 'POST', `/api/v1/mediatap/${s.id}/keyframe`);
    assert.equal(r.status, 200, r.text);
    const k = await waitFor('a keyframe after the request', async () => {
      const m = await tapOf(server.base, s.id);
      return {done: m.keyframes > before, ...m};
    }, 3000, 100);
    t.diagnostic(`tap: ${k.packets} packets, keyframes ${before} -> ${k.keyframes}`);
    await stop(page, w.id);
    const end = await waitFor('tracks unpublished', async () => {
      const m = await tapOf(server.base, s.id);
      return {done: m.events.filter((e) => !e.published).length === 2, ...m};
    }, 10_000);
    assert.deepEqual(end.events.filter((e) => !e.published).map((e) => e.kind).sort(), ['audio', 'video']);
  } finally {
    await page.close();
  }
});

test('a slow tap drops its own packets, viewers keep decoding', T, async (t) => {
  // 100 ms per packet: a tap that takes at most 10 packets/s. Chromium's fake camera sends at
  // least ~20 video packets/s even on a loaded machine (at 20 ms per packet a slow machine's
  // low-bitrate video fitted through and nothing dropped).
  const {server, target} = await startServer(100);
  const s = await target.newStream();
  const pub = await browser.newPage('publisher');
  const player = await browser.newPage('player');
  try {
    await publish(pub, target.whipUrl(s.id), s.key);
    const p = await play(player, target.whepUrl(s.id), null);
    const a = await waitFor('player decodes', async () => {
      const x = await stats(player, p.id);
      return {done: frames(x) > 30, ...x};
    }, 15_000);
    await sleep(5000);
    const b = await stats(player, p.id);
    const fps = (frames(b) - frames(a)) / 5;
    const m = await tapOf(server.base, s.id);
    t.diagnostic(`player ${fps.toFixed(1)} fps while the tap delivered ${m.delivered} and dropped ${m.dropped}`);
    assert.ok(fps > 10, `the player kept decoding (${fps} fps)`);
    assert.ok(m.dropped > 0, `the slow tap dropped packets: ${JSON.stringify(m)}`);
  } finally {
    await pub.close();
    await player.close();
  }
});
