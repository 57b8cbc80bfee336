// onair e2e: RTMP ingest (plugins/rtmp, issue 18). Debian's ffmpeg publishes a test pattern the
// classic way (libx264 + AAC in FLV to rtmp://127.0.0.1:<port>/live/<stream key>); a Chromium
// WHEP player gets H.264 and Opus (transcoded from the AAC) and decodes frames and audio samples.
// The H.264 profile is Main: the relay passes H.264 through, and Debian's Chromium receives
// Constrained Baseline, Baseline, Main and High 4:4:4 but not High (its offer; x264's default),
// so a High stream is refused to it with 422 codec_mismatch (plugins/rtmp/README.md).
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
after(async () => {
  if (!server) return;
  const st = await server.stop();
  const log = server.log();
  for (const m of SANITIZER) assert.ok(!log.includes(m), `sanitizer report:\n${log.slice(-6000)}`);
  assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
});

test('ffmpeg publishes H.264 + AAC over RTMP and a Chromium WHEP player decodes video and audio', {timeout: 90_000, skip}, async (t) => {
  const port = await freeTcpPort();
  server = new Onaird({plugins: {
    streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
    rtmp: {path: join(PLUGIN_DIR, 'rtmp.so'), config: {port, bind_address: '127.0.0.1'}},
  }});
  await server.start();
  const target = await onairTarget(server.base);
  const s = await target.newStream({title: 'rtmp'});
  const ff = spawn(ffmpegPath, ['-hide_banner', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '60', '-pix_fmt', 'yuv420p', '-profile:v', 'main',
    '-c:a', 'aac', '-b:a', '128k', '-f', 'flv', `rtmp://127.0.0.1:${port}/live/${s.key}`],
  {stdio: ['ignore', 'ignore', 'pipe']});
  let fferr = '';
  ff.stderr.on('data', (d) => { fferr += d; });
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
    e.message += `\n--- ffmpeg ---\n${fferr.slice(-1500)}\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    ff.kill('SIGTERM');
    await closeAll(page);
    await page.close().catch(() => {});
    await browser.close();
  }
});
