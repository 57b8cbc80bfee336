// onair e2e: a third-party publisher. Debian's simple-whip-client (GStreamer webrtcbin, libnice)
// publishes VP8 + Opus test sources into onaird over WHIP (trickle ICE through PATCH), inside a
// private network namespace (handbook section 6, lib/gst.mjs), and a Chromium WHEP player in
// the same namespace decodes video frames and audio samples.
//
// This file runs twice: the outer run (node --test) checks that a namespace can be made and
// re-executes this file inside `unshare -n` (ONAIR_E2E_IN_NETNS=1), where onaird, whip-client
// and Chromium are started; the outer test fails with the inner output when the inner fails.
//
//   ONAIRD, ONAIR_PLUGIN_DIR   as for whip_whep.test.mjs (ONAIR_URL cannot be used: the server
//                              must run inside the namespace)
//   ONAIR_E2E_REQUIRE=1        fail instead of skipping (no onaird / relay, no namespaces, no
//                              whip-client or GStreamer plugin)
//   ONAIR_E2E_WHIP_CLIENT      another whip-client binary (default /usr/bin/whip-client)
//   ONAIR_E2E_NO_SOUP_SHIM=1   do not work around the libsoup2/3 clash (lib/gst.mjs)
//   ONAIR_E2E_DEBUG=1          echo whip-client, onaird and page output
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {fileURLToPath} from 'node:url';
import {launch, play, stats, waitFor, sleep, frames, samples, audioPackets, closeAll} from './lib/browser.mjs';
import {startTarget, haveOnaird, ONAIRD, PLUGIN_DIR} from './lib/onaird.mjs';
import {inNetns, netnsProbe, runInNetns, exitWithParent, gstMissing, soupShim, startWhipClient,
        WHIP_CLIENT} from './lib/gst.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const DEBUG = !!process.env.ONAIR_E2E_DEBUG;
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];
const NAME = 'simple-whip-client (GStreamer) publishes VP8+Opus in a netns; a Chromium WHEP player decodes it';

function skipOrFail(reason) {
  if (!reason) return false;
  if (REQUIRE) {
    test('GStreamer WHIP prerequisites (ONAIR_E2E_REQUIRE=1)', () => assert.fail(reason));
    return 'see the failure above';
  }
  return reason;
}

if (!inNetns()) {
  // ---- outer: check the prerequisites, then run the inner copy in a fresh namespace --------
  let reason = null;
  if (process.env.ONAIR_URL)
    reason = 'ONAIR_URL is set, but this test must start its own onaird inside a private network namespace';
  else if (!haveOnaird())
    reason = `no onaird: ${ONAIRD} or ${PLUGIN_DIR}/streams.so missing (set ONAIRD, ONAIR_PLUGIN_DIR)`;
  reason ||= gstMissing() || netnsProbe();
  const skip = skipOrFail(reason);
  test(NAME, {timeout: 90_000, skip}, async (t) => {
    const r = await runInNetns(fileURLToPath(import.meta.url), {
      timeoutMs: 80_000,
      onLine: DEBUG ? (l) => process.stderr.write(`[netns] ${l}\n`) : null,
    });
    const tail = r.out.slice(-12_000);
    assert.ok(!r.timedOut, `the namespaced run timed out after 80 s:\n${tail}`);
    assert.equal(r.code, 0, `the namespaced run failed (exit ${r.code ?? r.sig}):\n${tail}`);
    const lines = r.out.split('\n');
    const skipped = r.out.match(/^\W*skipped (\d+)/m);
    if (skipped && Number(skipped[1]) > 0) {
      assert.ok(!REQUIRE, `the namespaced run skipped: ${r.out.slice(-500)}`);
      t.skip(`inside the namespace: ${lines.find((l) => / # /.test(l)) || r.out.slice(-500)}`);
      return;
    }
    // the inner run's diagnostics (spec reporter: "ℹ ...", then its summary)
    for (const l of lines.filter((x) => /^\s*ℹ /.test(x) &&
                                 !/ℹ (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) /.test(x)))
      t.diagnostic(l.trim().slice(2));
  });
} else {
  // ---- inner: inside the namespace ------------------------------------------------------------
  exitWithParent();
  const {server, target, skip: noRelay} = await startTarget();
  const skip = skipOrFail(noRelay);

  after(async () => {
    if (!server) return;
    const st = await server.stop();
    const log = server.log();
    for (const m of SANITIZER)
      assert.ok(!log.includes(m), `sanitizer report in onaird output:\n${log.slice(-6000)}`);
    assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
  });

  test(NAME, {timeout: 60_000, skip}, async (t) => {
    const shim = await soupShim();
    if (shim) t.diagnostic(`libsoup clash (${shim.why}): whip-client runs with a stub libgupnp-igd (UPnP off)`);
    let wc = null;
    let browser = null;
    try {
      const s = await target.newStream({title: 'gstreamer e2e'});
      wc = startWhipClient({url: target.whipUrl(s.id), token: s.key, shim, echo: DEBUG});
      await wc.waitFor(/PeerConnection connected/, 15_000);
      // libnice gathered 127.0.0.1 on jlo0 (trickled through PATCH, often after connecting)
      await wc.waitFor(/Sending candidates: end-of-candidates/, 10_000);
      const cands = wc.lines.filter((l) => /Sending candidates: candidate/.test(l));
      t.diagnostic(`whip-client connected; its candidates: ${cands.map((l) => l.replace(/.*candidate:/, '')).join(' | ')}`);
      assert.ok(cands.some((l) => / 127\.0\.0\.1 \d+ typ host/.test(l) && /UDP/i.test(l)),
                `whip-client trickled a UDP 127.0.0.1 host candidate:\n${wc.log().slice(-3000)}`);

      browser = await launch();
      const page = await browser.newPage('player');
      try {
        const r = await play(page, target.whepUrl(s.id), null);
        assert.equal(r.status, 201);
        assert.match(r.answer, /a=rtpmap:\d+ VP8\/90000/i, 'the WHEP answer offers VP8');
        assert.match(r.answer, /a=rtpmap:\d+ opus\/48000/i, 'the WHEP answer offers Opus');
        const first = await waitFor('player: first decoded frame and audio samples', async () => {
          const st = await stats(page, r.id);
          return {done: frames(st) > 0 && samples(st) > 0 && audioPackets(st) > 0, ...st};
        }, 10_000);
        await sleep(3000);
        const last = await stats(page, r.id);
        assert.ok(frames(last) > frames(first) + 30,
                  `framesDecoded ${frames(first)} -> ${frames(last)} over 3 s: ${JSON.stringify(last.inbound)}`);
        assert.ok(samples(last) > samples(first), `audio totalSamplesReceived ${samples(first)} -> ${samples(last)}`);
        assert.ok(audioPackets(last) > audioPackets(first),
                  `audio packetsReceived ${audioPackets(first)} -> ${audioPackets(last)}`);
        const v = last.inbound.video;
        t.diagnostic(`player: ${frames(last)} frames ${v.frameWidth}x${v.frameHeight} ` +
                     `(${v.framesPerSecond} fps), ${samples(last)} audio samples, ${audioPackets(last)} audio packets`);
        assert.equal(v.frameWidth, 320, 'the videotestsrc size (320x240) reaches the player');

        // whip-client on SIGINT DELETEs its resource: the player sees the end
        const st = await wc.stop();
        assert.ok(wc.lines.some((l) => /Disconnecting from server/.test(l)), `whip-client's shutdown:\n${wc.log().slice(-2000)}`);
        t.diagnostic(`whip-client stopped: ${JSON.stringify(st)}`);
        await waitFor('player: the end of the stream after whip-client left', async () => {
          const x = await stats(page, r.id);
          return {done: !!x?.ended, connectionState: x?.connectionState, dtls: x?.dtlsState, tracks: x?.tracks};
        }, 10_000);
      } finally {
        await closeAll(page);
        await page.close().catch(() => {});
      }
    } catch (e) {
      if (wc) e.message += `\n--- whip-client output (tail) ---\n${wc.log().slice(-4000)}`;
      if (server) e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
      throw e;
    } finally {
      await wc?.stop();
      await browser?.close();
      await shim?.remove();
    }
  });
}
