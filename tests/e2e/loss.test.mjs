// onair e2e: loss on the publisher's link (issue 13 D2). The publisher reaches the relay through a
// user-space UDP proxy (lib/udp_proxy.mjs) that drops 5 % of its RTP packets; the relay NACKs
// them and the publisher repairs them with RTX, and Chromium also sends bandwidth probes as RTX
// copies of packets the relay already has. A repaired packet must reach a player once (only when
// its original was missing), probes and duplicates never; and the receiver reports the publisher
// gets must show the loss (not the negative loss duplicates make).
//
// Counted at the player: it reaches the relay through a second proxy (no loss) that counts the
// RTP packets whose SSRC and sequence number it already forwarded to the player (SRTP leaves both
// in the clear; the player's SRTP replay check drops such duplicates before getStats() can count
// them, so they only cost bandwidth: that is what the issue measured, 4.6x the clean rate). With
// getStats: the player's video packetsLost (expected - received) must not be negative beyond a
// handful, and the publisher's remote-inbound-rtp packetsLost (the relay's receiver report) must
// show the loss.
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch, publish, play, stats, waitFor, sleep, frames, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird} from './lib/onaird.mjs';
import {startProxy} from './lib/udp_proxy.mjs';

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

test('5 % loss on the publisher\'s link: the player gets no duplicates, the publisher hears of the loss',
     {timeout: 90_000, skip}, async (t) => {
  server = new Onaird();
  await server.start();
  assert.ok(server.mediaPort, 'the media port from the log');
  const target = await onairTarget(server.base);
  const proxy = await startProxy({relayPort: server.mediaPort, lossUp: 0.05});
  const viewerProxy = await startProxy({relayPort: server.mediaPort});
  const browser = await launch();
  const [pubPage, playPage] = [await browser.newPage('publisher'), await browser.newPage('player')];
  try {
    const s = await target.newStream({title: 'loss'});
    const pub = await publish(pubPage, target.whipUrl(s.id), s.key, {answerReplace: proxy.answerReplace});
    const ply = await play(playPage, target.whepUrl(s.id), null, {answerReplace: viewerProxy.answerReplace});
    await waitFor('the player decodes', async () => {
      const st = await stats(playPage, ply.id);
      return {done: frames(st) > 10, ...st};
    }, 20_000);
    const f0 = frames(await stats(playPage, ply.id));
    await sleep(15_000);
    const v = await stats(playPage, ply.id);
    const p = await stats(pubPage, pub.id);
    const vin = v.inbound.video;
    const rr = p.remoteInbound.video;
    const m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
    const layer = m.json?.publisher?.tracks?.find((x) => x.kind === 'video')?.layers?.[0];
    t.diagnostic(`publisher's proxy ${JSON.stringify(proxy.stats)}; player's proxy ${JSON.stringify(viewerProxy.stats)}; ` +
                 `player: ${vin.packetsReceived} video packets, ` +
                 `packetsLost ${vin.packetsLost}, ${vin.retransmittedPacketsReceived} retransmitted, ` +
                 `${frames(v) - f0} frames in 15 s; publisher's receiver report: ${JSON.stringify(rr)}; ` +
                 `relay: ${JSON.stringify(layer)}`);
    assert.ok(proxy.stats.droppedUp > 20, `the proxy dropped ${proxy.stats.droppedUp} packets`);
    assert.ok(frames(v) > f0 + 50, `the player decodes under loss: ${frames(v) - f0} frames in 15 s`);
    // each packet once: a repair only for a packet the player never got, no probes
    const {rtpDown, dupDown} = viewerProxy.stats;
    assert.ok(rtpDown > 500, `the player's proxy saw ${rtpDown} RTP packets`);
    assert.ok(dupDown <= Math.max(5, rtpDown * 0.005), `the player got ${dupDown} duplicate RTP packets of ${rtpDown}`);
    assert.ok(vin.packetsLost >= -5, `the player's packetsLost ${vin.packetsLost} (negative: duplicates)`);
    // the relay's receiver reports: the loss is there, not hidden under duplicates
    assert.ok(rr && rr.packetsLost > 0, `the publisher's remote-inbound-rtp: ${JSON.stringify(rr)}`);
    if (layer) assert.ok(layer.lost >= 0, `the owner's view of the loss: ${JSON.stringify(layer)}`);
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-2000)}`;
    throw e;
  } finally {
    for (const pg of [pubPage, playPage]) {
      await closeAll(pg);
      await pg.close().catch(() => {});
    }
    await browser.close();
    await proxy.close();
    await viewerProxy.close();
  }
});
