// onair e2e: RTMP ingest (plugins/rtmp, issue 18). Debian's ffmpeg publishes a test pattern the
// classic way (libx264 + AAC in FLV to rtmp://127.0.0.1:<port>/live/<stream key>); a Chromium
// WHEP player gets H.264 and Opus (transcoded from the AAC) and decodes frames and audio samples.
// The H.264 profile is Main: the relay passes H.264 through, and Debian's Chromium receives
// Constrained Baseline, Baseline, Main and High 4:4:4 but not High (its offer; x264's default),
// so a High stream is refused to it with 422 codec_mismatch (plugins/rtmp/README.md), unless the
// rtmp plugin announces High as Main (high_as_main): Chromium's software decoder (FFmpeg's) then
// decodes the High bitstream, which the second test checks.
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {spawn, execFileSync} from 'node:child_process';
import {createServer} from 'node:net';
import {join} from 'node:path';
import {launch, tryPlay, stats, waitFor, sleep, frames, samples, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, haveOnaird, PLUGIN_DIR} from './lib/onaird.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
let ffmpegPath = null;
try {
  ffmpegPath = execFileSync('sh', ['-c', 'command -v ffmpeg']).toString().trim() || null;
} catch { /* none */ }
const skip = !haveOnaird() ? 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)' : !ffmpegPath ? 'no ffmpeg' : false;
if (skip && REQUIRE) test('onaird and ffmpeg are there (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const {port} = s.address();
      s.close(() => resolve(port));
    });
  });
}

let server = null;
let serverHigh = null;
after(async () => {
  for (const srv of [server, serverHigh]) {
    if (!srv) continue;
    const st = await srv.stop();
    const log = srv.log();
    for (const m of SANITIZER) assert.ok(!log.includes(m), `sanitizer report:\n${log.slice(-6000)}`);
    assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
  }
});

// ffmpeg publishing a 640x360 test pattern (H.264 of profile, no B-frames) + AAC over RTMP.
function publishRtmp(port, key, profile) {
  const ff = spawn(ffmpegPath, ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-bf', '0', '-g', '60', '-pix_fmt', 'yuv420p',
    '-profile:v', profile, '-c:a', 'aac', '-b:a', '128k', '-f', 'flv', `rtmp://127.0.0.1:${port}/live/${key}`],
  {stdio: ['ignore', 'ignore', 'pipe']});
  ff.errText = '';
  ff.stderr.on('data', (d) => { ff.errText += d; });
  return ff;
}

test('ffmpeg publishes H.264 + AAC over RTMP and a Chromium WHEP player decodes video and audio', {timeout: 90_000, skip}, async (t) => {
  const port = await freeTcpPort();
  server = new Onaird({plugins: {
    streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
    rtmp: {path: join(PLUGIN_DIR, 'rtmp.so'), config: {port, bind_address: '127.0.0.1'}},
  }});
  await server.start();
  const target = await onairTarget(server.base);
  const s = await target.newStream({title: 'rtmp'});
  const ff = publishRtmp(port, s.key, 'main');
  const browser = await launch();
  const page = await browser.newPage('player');
  try {
    // the stream is live once the first keyframe reached the relay
    const ply = await waitFor('a WHEP answer (the stream goes live)', async () => {
      const r = await tryPlay(page, target.whepUrl(s.id), null);
      return {done: r.status === 201, ...r};
    }, 20_000, 500);
    assert.match(ply.answer, /a=rtpmap:\d+ H264\/90000/, 'the player gets H.264');
    assert.match(ply.answer, /a=rtpmap:\d+ opus\/48000\/2/, 'the player gets Opus');
    const first = await waitFor('video frames and audio samples decoded', async () => {
      const st = await stats(page, ply.id);
      return {done: frames(st) > 10 && samples(st) > 48000, ...st};
    }, 30_000);
    await sleep(3000);
    const last = await stats(page, ply.id);
    t.diagnostic(`framesDecoded ${frames(first)} -> ${frames(last)}, audio samples ${samples(first)} -> ${samples(last)}`);
    assert.ok(frames(last) > frames(first) + 30, `framesDecoded ${frames(first)} -> ${frames(last)}`);
    assert.ok(samples(last) > samples(first) + 48000, `audio samples ${samples(first)} -> ${samples(last)}`);
    const w = last.inbound.video.frameWidth;
    assert.equal(w, 640, `the picture is ffmpeg's 640x360: ${w}`);
    // the relay's sender reports for both tracks reach the player (Chromium syncs audio and
    // video only with a report of each)
    const sr = await waitFor('sender reports of both tracks', async () => {
      const st = await stats(page, ply.id);
      const r = st?.remoteOutbound ?? {};
      return {done: r.audio?.reportsSent > 0 && r.video?.reportsSent > 0, ...r};
    }, 15_000);
    t.diagnostic(`sender reports: ${JSON.stringify(sr)}`);
  } catch (e) {
    e.message += `\n--- ffmpeg ---\n${ff.errText.slice(-1500)}\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    ff.kill('SIGTERM');
    await closeAll(page);
    await page.close().catch(() => {});
    await browser.close();
  }
});

test('H.264 High: refused to Chromium (422 codec_mismatch) unless high_as_main, then decoded', {timeout: 120_000, skip}, async (t) => {
  assert.ok(server, 'the first test started onaird (high_as_main off)');
  const port = await freeTcpPort();
  serverHigh = new Onaird({plugins: {
    streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
    rtmp: {path: join(PLUGIN_DIR, 'rtmp.so'), config: {port, bind_address: '127.0.0.1', high_as_main: true}},
  }});
  await serverHigh.start();
  const browser = await launch();
  const page = await browser.newPage('player-high');
  const ffs = [];
  try {
    // high_as_main off (the first test's server): Chromium's offer has no High
    const plainTarget = await onairTarget(server.base);
    const plain = await plainTarget.newStream({title: 'rtmp high, refused'});
    const info = await (await fetch(`${server.base}/api/v1/rtmp`)).json();
    ffs.push(publishRtmp(info.port, plain.key, 'high'));
    const refused = await waitFor('the High stream in the relay (not 409 not_live)', async () => {
      const r = await tryPlay(page, plainTarget.whepUrl(plain.id), null);
      return {done: r.status === 422 || r.status === 201, ...r};
    }, 20_000, 500);
    assert.equal(refused.status, 422, JSON.stringify(refused));
    assert.match(JSON.stringify(refused), /codec_mismatch/);
    await closeAll(page);

    // high_as_main: announced as Main (4d00..), the High bitstream decodes
    const target = await onairTarget(serverHigh.base);
    const s = await target.newStream({title: 'rtmp high as main'});
    ffs.push(publishRtmp(port, s.key, 'high'));
    const ply = await waitFor('a WHEP answer (the stream goes live)', async () => {
      const r = await tryPlay(page, target.whepUrl(s.id), null);
      return {done: r.status === 201, ...r};
    }, 20_000, 500);
    assert.match(ply.answer, /profile-level-id=4d00/, 'announced as Main');
    const first = await waitFor('video frames decoded', async () => {
      const st = await stats(page, ply.id);
      return {done: frames(st) > 10, ...st};
    }, 30_000);
    await sleep(3000);
    const last = await stats(page, ply.id);
    t.diagnostic(`High as Main: framesDecoded ${frames(first)} -> ${frames(last)}, ${last.inbound.video.frameWidth}x${last.inbound.video.frameHeight}`);
    assert.ok(frames(last) > frames(first) + 30, `framesDecoded ${frames(first)} -> ${frames(last)}`);
    assert.equal(last.inbound.video.frameWidth, 640);
    assert.match(serverHigh.log(), /H\.264 High announced to players as Main/);
  } catch (e) {
    e.message += `\n--- ffmpeg ---\n${ffs.map((f) => f.errText).join('\n').slice(-1500)}\n--- onaird log (tail) ---\n${(serverHigh ?? server).log().slice(-3000)}`;
    throw e;
  } finally {
    for (const f of ffs) f.kill('SIGTERM');
    await closeAll(page);
    await page.close().catch(() => {});
    await browser.close();
  }
});
