// onair e2e selftest: needs no onaird. Proves that headless Chromium starts with the flags of
// handbook section 6, that the fake camera/mic and loopback ICE work on this machine, and that
// the in-page WHIP/WHEP client (pages/client.js) and the scenarios of whip_whep.test.mjs run
// end to end against a mock relay (lib/mock_relay.mjs: Chromium peer connections behind a
// node:http WHIP/WHEP endpoint).
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch, stats, stop, waitFor, sleep, frames, samples, audioPackets, closeAll} from './lib/browser.mjs';
import {startMockRelay} from './lib/mock_relay.mjs';
import * as sc from './lib/scenarios.mjs';

const T = {timeout: 60_000};
let browser, relay;

before(async () => {
  browser = await launch();
  relay = await startMockRelay(browser);
});

after(async () => {
  try {
    await relay?.close();
  } finally {
    await browser?.close();
  }
});

test('loopback: a fake-camera track decodes between two peer connections in one page', T, async (t) => {
  const page = await browser.newPage('loopback');
  try {
    const lb = await page.evaluate(() => window.e2e.loopback());
    t.diagnostic(`fake camera ${JSON.stringify(lb.camera)}`);
    await waitFor('first decoded frame and audio', async () => {
      const s = await stats(page, lb.player);
      return {done: frames(s) > 0 && samples(s) > 0, ...s};
    }, 10_000);
    const a = await stats(page, lb.player);
    await sleep(2000);
    const b = await stats(page, lb.player);
    assert.ok(frames(b) > frames(a), `framesDecoded grows: ${frames(a)} -> ${frames(b)}`);
    assert.ok(samples(b) > samples(a), `totalSamplesReceived grows: ${samples(a)} -> ${samples(b)}`);
    assert.ok(audioPackets(b) > audioPackets(a), 'audio packets arrive');
    assert.equal(b.ended, false, `not ended while flowing: ${JSON.stringify(b)}`);
    assert.equal(b.connectionState, 'connected');
    assert.ok(b.inbound.video.frameWidth > 0 && b.inbound.video.bytesReceived > 0);
    t.diagnostic(`player: ${frames(b)} frames ${b.inbound.video.frameWidth}x${b.inbound.video.frameHeight}, ${samples(b)} samples, lost ${b.inbound.video.packetsLost}`);
    // the publisher goes away: the player must notice (the "ended" helper)
    await stop(page, lb.publisher);
    const t0 = Date.now();
    const e = await waitFor('player sees the end', async () => {
      const s = await stats(page, lb.player);
      return {done: s.ended, ...s};
    }, 10_000);
    t.diagnostic(`ended after ${Date.now() - t0} ms: ${e.connectionState}/${e.iceConnectionState}/${e.dtlsState} ${JSON.stringify(e.tracks)}`);
  } finally {
    await closeAll(page);
    await page.close();
  }
});

test('publisher offer: simulcast q/h/f on a 1280x720 fake camera', T, async () => {
  const page = await browser.newPage('offer');
  try {
    const o = await page.evaluate(() => window.e2e.publisherOffer({simulcast: true}));
    assert.deepEqual(o.camera, {width: 1280, height: 720});
    assert.match(o.sdp, /a=simulcast:send q;h;f/);
    for (const rid of ['q', 'h', 'f']) assert.match(o.sdp, new RegExp(`a=rid:${rid} send`));
    assert.match(o.sdp, /a=sendonly/);
    assert.doesNotMatch(o.sdp, /a=sendrecv/);
  } finally {
    await page.close();
  }
});

test('setBandwidth puts b=AS/b=TIAS on the video m-line only', T, async () => {
  const page = await browser.newPage('sdp');
  try {
    const sdp = 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n' +
        'm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n' +
        'm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:5000\r\na=mid:1\r\n';
    const out = await page.evaluate((s) => window.e2e.setBandwidth(s, 'video', 300), sdp);
    assert.equal(out, sdp.replace('b=AS:5000\r\n', 'b=AS:300\r\nb=TIAS:300000\r\n'));
  } finally {
    await page.close();
  }
});

// The scenarios of whip_whep.test.mjs, against the mock relay (simulcast needs a real SFU).
test('mock relay: (1) publish, two players, DELETE ends them', T, (t) => sc.publishTwoPlayers(browser, relay, (m) => t.diagnostic(m)));
test('mock relay: (2) late joiner decodes within 2 s', T, (t) => sc.lateJoiner(browser, relay, (m) => t.diagnostic(m)));
test('mock relay: (4) private stream needs a token', T, (t) => sc.privateStream(browser, relay, (m) => t.diagnostic(m)));
test('mock relay: (5) bad SDP is a 400 problem', T, (t) => sc.badSdp(browser, relay, (m) => t.diagnostic(m)));
