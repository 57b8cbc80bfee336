// 1:1 calls with media: the real livekit-client in headless Chromium (two pages per call, the
// fake camera at 320x240 and the fake microphone), against one onaird with the calls plugin.
// Per run: C calls start at once; each page connects, publishes camera and microphone and
// waits for the other's first decoded video frame. Prints one RESULT line per run: set-up time
// (room.connect() called -> the other's video decoded) p50 / p99 over the 2C pages, then
// onaird's CPU over a 10 s window with every call up, per call, and the calls one core would
// carry at that rate (the relay's own cost: Chromium's encoding and decoding is not in it),
// and what the relay delivered to the pages over the window (RTP, all calls).
//
//   node bench/calls/mediacalls.mjs [calls=4] [runs=3]
//   env ONAIRD, ONAIR_PLUGIN_DIR (or BUILD: build/core/onaird, build/plugins); tests/e2e and
//   tests/livekit installed (npm ci)
import {readFile} from 'node:fs/promises';
import {join, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';

const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..');
const BUILD = resolve(ROOT, process.env.BUILD || 'build');
process.env.ONAIRD ||= join(BUILD, 'core', 'onaird');
process.env.ONAIR_PLUGIN_DIR ||= join(BUILD, 'plugins');
const {launch} = await import(join(ROOT, 'tests', 'e2e', 'lib', 'browser.mjs'));
const {Onaird, PLUGIN_DIR} = await import(join(ROOT, 'tests', 'e2e', 'lib', 'onaird.mjs'));
const LK = join(ROOT, 'tests', 'livekit', 'node_modules');
const {AccessToken} = await import(join(LK, 'livekit-server-sdk', 'dist', 'index.js'));

const CALLS = Number(process.argv[2] || 4);
const RUNS = Number(process.argv[3] || 3);
const KEY = 'APIbenchMedia';
const SECRET = 'bench-media-secret-0123456789abcdefghij';
const WINDOW_MS = 10_000;

const cpuSeconds = async (pid) => {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (100/s)
};
// What the pages received from the relay so far (RTP bytes, packets) .
const received = async (pages) => (await Promise.all(pages.map((p) => p.evaluate(async () => {
  let bytes = 0, packets = 0;
  (await window.lkRoom.engine.pcManager.publisher.pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp') bytes += r.bytesReceived || 0, packets += r.packetsReceived || 0;
  });
  return [bytes, packets];
})))).reduce((a, [b, n]) => [a[0] + b, a[1] + n], [0, 0]);
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function token(identity, room) {
  const at = new AccessToken(KEY, SECRET, {identity, ttl: '1h'});
  at.addGrant({room, roomJoin: true});
  return at.toJwt();
}

// One page's side of a call: connect, publish, wait for the other's video; -> set-up ms.
function callSide(page, url, tok, other) {
  return page.evaluate(async ([url, tok, other]) => {
    const {Room, RoomEvent, createLocalTracks} = window.LivekitClient;
    const room = window.lkRoom = new Room();
    const t0 = performance.now();
    const decoded = new Promise((resolve) => room.on(RoomEvent.TrackSubscribed, (track, pub, p) => {
      if (track.kind !== 'video' || p.identity !== other) return;
      const el = track.attach();
      el.muted = true;
      document.body.appendChild(el);
      el.requestVideoFrameCallback(() => resolve(performance.now() - t0));
    }));
    await room.connect(url, tok);
    const tracks = await createLocalTracks({audio: true, video: {resolution: {width: 320, height: 240}}});
    for (const t of tracks) await room.localParticipant.publishTrack(t);
    return decoded;
  }, [url, tok, other]);
}

const server = new Onaird({core: {server: {max_header_bytes: 32768}}, plugins: {
  calls: {path: join(PLUGIN_DIR, 'calls.so'), config: {api_key: KEY, api_secret: SECRET}},
}});
await server.start();
const browser = await launch();
const umd = await readFile(join(LK, 'livekit-client', 'dist', 'livekit-client.umd.js'), 'utf8');
const url = server.base.replace('http', 'ws');
try {
  for (let run = 0; run < RUNS; run++) {
    const pages = [];
    for (let i = 0; i < 2 * CALLS; i++) {
      const p = await browser.newPage(`p${i}`);
      await p.addScriptTag({content: umd});
      pages.push(p);
    }
    const setups = await Promise.all(pages.map(async (p, i) => {
      const call = Math.floor(i / 2), me = `u${i}`, other = `u${i ^ 1}`;
      return callSide(p, url, await token(me, `bench-${run}-${call}`), other);
    }));
    const r0 = await received(pages);
    const c0 = await cpuSeconds(server.proc.pid);
    const w0 = Date.now();
    await new Promise((r) => setTimeout(r, WINDOW_MS));
    const secs = (Date.now() - w0) / 1000;
    const cores = (await cpuSeconds(server.proc.pid) - c0) / secs;
    const r1 = await received(pages);
    const mbps = ((r1[0] - r0[0]) * 8) / secs / 1e6, pps = (r1[1] - r0[1]) / secs;
    setups.sort((a, b) => a - b);
    console.log(`RESULT run=${run + 1} calls=${CALLS} setup_p50_ms=${pct(setups, 50).toFixed(0)} ` +
      `setup_p99_ms=${pct(setups, 99).toFixed(0)} onaird_cores=${cores.toFixed(3)} ` +
      `cores_per_call=${(cores / CALLS).toFixed(4)} calls_per_core=${(CALLS / cores).toFixed(0)} ` +
      `relayed_mbit_s=${mbps.toFixed(2)} relayed_pkt_s=${pps.toFixed(0)}`);
    for (const p of pages) {
      await p.evaluate(() => window.lkRoom.disconnect()).catch(() => {});
      await p.close();
    }
  }
} finally {
  await browser.close();
  await server.stop();
}
