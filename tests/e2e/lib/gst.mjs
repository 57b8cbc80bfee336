// onair e2e: third-party GStreamer clients (Debian's simple-whip-client, webrtcbin + libnice)
// and the private network namespace they need (handbook section 6).
//
// libnice never gathers candidates on a loopback *interface*, so a libnice client on this
// machine's lo has no candidate at all. Inside `unshare -n` we bring lo up (the kernel routes
// every local address through it) and give 127.0.0.1/32 to an ifb device (not IFF_LOOPBACK):
// libnice then gathers 127.0.0.1 "on jlo0", and its packets to 127.0.0.1 still travel over lo,
// to onaird and Chromium in the same namespace. Nothing can leave that namespace.
//
// A test file re-executes itself inside the namespace (runInNetns); the copy inside sees
// ONAIR_E2E_IN_NETNS=1 and runs the real test. The outer copy only reports its output.
import {spawn, spawnSync} from 'node:child_process';
import {existsSync, fstatSync, readdirSync, rmSync} from 'node:fs';
import {mkdtemp, writeFile, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';

export const WHIP_CLIENT = process.env.ONAIR_E2E_WHIP_CLIENT || '/usr/bin/whip-client';
export const NETNS_ENV = 'ONAIR_E2E_IN_NETNS';
export const inNetns = () => process.env[NETNS_ENV] === '1';

// The namespace set-up (run as root inside `unshare -n`).
export const NETNS_SETUP = [
  'ip link set lo up',
  'ip link add jlo0 type ifb',
  'ip addr add 127.0.0.1/32 dev jlo0',
  'ip link set jlo0 up',
].join(' && ');

// Can we make such a namespace? null when yes, else why not (no CAP_SYS_ADMIN, no ifb, ...).
export function netnsProbe(setup = NETNS_SETUP) {
  const r = spawnSync('unshare', ['-n', '--', 'sh', '-c', setup], {encoding: 'utf8', timeout: 10_000});
  if (r.error) return `cannot run unshare: ${r.error.message}`;
  if (r.status !== 0)
    return `cannot set up a private network namespace (unshare -n + ${setup}; needs root / ` +
           `CAP_SYS_ADMIN + CAP_NET_ADMIN and the ifb module): exit ${r.status}: ${(r.stderr || '').trim()}`;
  return null;
}

// Children started here: signalled whenever this process exits. whip-client gets SIGKILL; the
// namespaced node gets SIGTERM, so that it can kill its own onaird, Chromium and whip-client
// (lib/browser.mjs turns SIGTERM into exit(), whose handlers do that).
const live = new Map();
process.once('exit', () => { for (const [p, sig] of live) try { p.kill(sig); } catch {} });

function track(proc, sig = 'SIGKILL') {
  live.set(proc, sig);
  const exited = new Promise((r) => proc.once('exit', (code, s) => { live.delete(proc); r({code, sig: s}); }));
  return exited;
}

// Run `file` (a node:test file) with node inside a fresh network namespace, NETNS_ENV=1.
// Resolves {code, sig, out, timedOut}; the child is killed after timeoutMs (SIGTERM, then
// SIGKILL 5 s later) and whenever this process exits. The child exits when its stdin closes,
// i.e. if this process dies without a chance to kill it (see exitWithParent).
// `setup`: the shell commands that set the namespace up (default NETNS_SETUP).
export async function runInNetns(file, {timeoutMs = 60_000, env = {}, onLine = null, setup = NETNS_SETUP} = {}) {
  const childEnv = {...process.env, ...env, [NETNS_ENV]: '1'};
  delete childEnv.NODE_TEST_CONTEXT; // else the child speaks node --test's binary protocol, not spec
  const proc = spawn('unshare', ['-n', '--', 'sh', '-c', `${setup} && exec "$0" --test-reporter=spec "$1"`,
                                 process.execPath, file],
                     {stdio: ['pipe', 'pipe', 'pipe'], env: childEnv});
  const exited = track(proc, 'SIGTERM');
  let out = '';
  let part = '';
  const onData = (d) => {
    out += d;
    if (!onLine) return;
    part += d;
    let i;
    while ((i = part.indexOf('\n')) >= 0) {
      onLine(part.slice(0, i));
      part = part.slice(i + 1);
    }
  };
  proc.stdout.setEncoding('utf8').on('data', onData);
  proc.stderr.setEncoding('utf8').on('data', onData);
  let timedOut = false;
  let kill9 = null;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill('SIGTERM');
    kill9 = setTimeout(() => proc.kill('SIGKILL'), 5000);
  }, timeoutMs);
  const st = await exited;
  clearTimeout(timer);
  clearTimeout(kill9);
  proc.stdin.destroy();
  return {...st, out, timedOut};
}

// In the namespaced child: exit (running the 'exit' handlers that kill onaird, Chromium and
// whip-client) when the parent goes away, i.e. when stdin reaches EOF.
export function exitWithParent() {
  try {
    if (!fstatSync(0).isFIFO()) return; // run by hand (a tty, /dev/null): nothing to watch
  } catch {
    return;
  }
  process.stdin.on('end', () => process.exit(129));
  process.stdin.on('error', () => process.exit(129));
  process.stdin.resume();
  process.stdin.unref?.(); // must not keep the test process alive
}

// ---- GStreamer ---------------------------------------------------------------------------------
// The plugins simple-whip-client's pipelines below need, and the Debian package of each.
export const GST_PLUGINS = {
  webrtc: 'gstreamer1.0-plugins-bad', // webrtcbin
  dtls: 'gstreamer1.0-plugins-bad',
  srtp: 'gstreamer1.0-plugins-bad',
  nice: 'gstreamer1.0-nice', // nicesrc/nicesink (libnice)
  vpx: 'gstreamer1.0-plugins-good', // vp8enc
  rtp: 'gstreamer1.0-plugins-good', // rtpvp8pay, rtpopuspay
  rtpmanager: 'gstreamer1.0-plugins-good', // rtpbin (inside webrtcbin)
  opus: 'gstreamer1.0-plugins-base', // opusenc
  videotestsrc: 'gstreamer1.0-plugins-base',
  audiotestsrc: 'gstreamer1.0-plugins-base',
  audioconvert: 'gstreamer1.0-plugins-base',
  audioresample: 'gstreamer1.0-plugins-base',
  'videoconvertscale|videoconvert': 'gstreamer1.0-plugins-base', // 1.22 merged the two
};

function gstPluginDirs() {
  const dirs = (process.env.GST_PLUGIN_SYSTEM_PATH_1_0 || process.env.GST_PLUGIN_SYSTEM_PATH || '')
    .split(':').filter(Boolean);
  for (const base of ['/usr/lib', '/usr/lib64']) {
    if (existsSync(join(base, 'gstreamer-1.0'))) dirs.push(join(base, 'gstreamer-1.0'));
    try {
      for (const d of readdirSync(base))
        if (existsSync(join(base, d, 'gstreamer-1.0'))) dirs.push(join(base, d, 'gstreamer-1.0'));
    } catch {}
  }
  return dirs;
}

// Why we cannot publish with GStreamer here (null when we can): no whip-client, or a
// plugin missing (with the Debian package to install).
export function gstMissing() {
  if (!existsSync(WHIP_CLIENT)) return `no ${WHIP_CLIENT} (Debian package simple-whip-client)`;
  const dirs = gstPluginDirs();
  const missing = [];
  for (const [names, pkg] of Object.entries(GST_PLUGINS))
    if (!names.split('|').some((n) => dirs.some((d) => existsSync(join(d, `libgst${n}.so`)))))
      missing.push(`${names} (${pkg})`);
  return missing.length ? `GStreamer plugins missing in ${dirs.join(', ') || '(no plugin dir)'}: ${missing.join(', ')}` : null;
}

// Debian 12's simple-whip-client links libsoup-2.4, while libnice (gstreamer1.0-nice and
// webrtcbin link it) pulls libsoup-3.0 in through libgupnp-igd -> libgupnp-1.6/libgssdp-1.6:
// as soon as webrtcbin loads, libsoup3 aborts the process ("libsoup2 symbols detected. Using
// libsoup2 and libsoup3 in the same process is not supported."). We then give whip-client
// (only it, through LD_LIBRARY_PATH) a stub libgupnp-igd-1.0.so.4 whose
// gupnp_simple_igd_thread_new() returns NULL: libnice then runs without UPnP port mapping
// (which nothing here needs) and libsoup3 is never loaded. Returns {dir, why} or null.
const SHIM_C = `/* onair e2e: stub libgupnp-igd for simple-whip-client (see tests/e2e/lib/gst.mjs) */
#include <stddef.h>
void *gupnp_simple_igd_thread_new(void) { return NULL; } /* libnice: UPnP off */
void *gupnp_simple_igd_new(void) { return NULL; }
unsigned long gupnp_simple_igd_get_type(void) { return 80; /* G_TYPE_OBJECT */ }
unsigned long gupnp_simple_igd_thread_get_type(void) { return 80; }
void gupnp_simple_igd_add_port(void) {}
void gupnp_simple_igd_remove_port(void) {}
void gupnp_simple_igd_remove_port_local(void) {}
void gupnp_simple_igd_delete_all_mappings(void) {}
`;

function ldd(file) {
  const r = spawnSync('ldd', [file], {encoding: 'utf8', timeout: 10_000});
  return r.status === 0 ? r.stdout : '';
}

export function soupConflict() {
  if (!/libsoup-2\.4/.test(ldd(WHIP_CLIENT))) return null;
  for (const d of gstPluginDirs()) {
    const f = join(d, 'libgstnice.so');
    if (existsSync(f) && /libsoup-3/.test(ldd(f)))
      return `${WHIP_CLIENT} links libsoup-2.4 and ${f} pulls libsoup-3.0 (via libgupnp-igd)`;
  }
  return null;
}

const shimDirs = new Set(); // removed on exit if remove() did not run (a signal)
process.once('exit', () => { for (const d of shimDirs) try { rmSync(d, {recursive: true, force: true}); } catch {} });

export async function soupShim() {
  if (process.env.ONAIR_E2E_NO_SOUP_SHIM === '1') return null;
  const why = soupConflict();
  if (!why) return null;
  const dir = await mkdtemp(join(tmpdir(), 'onair-e2e-gupnp-stub-'));
  shimDirs.add(dir);
  await writeFile(join(dir, 'igd.c'), SHIM_C);
  const cc = process.env.CC || 'cc';
  const r = spawnSync(cc, ['-shared', '-fPIC', '-O1', '-o', join(dir, 'libgupnp-igd-1.0.so.4'),
                           '-Wl,-soname,libgupnp-igd-1.0.so.4', join(dir, 'igd.c')],
                      {encoding: 'utf8', timeout: 60_000});
  if (r.status !== 0) {
    await rm(dir, {recursive: true, force: true});
    throw new Error(`${why}; building the libgupnp-igd stub with ${cc} failed: ${r.error?.message || r.stderr}`);
  }
  return {dir, why, remove: async () => { await rm(dir, {recursive: true, force: true}); shimDirs.delete(dir); }};
}

// VP8 + Opus from test sources: what Chromium decodes. Caps as simple-whip-client's README.
export const VIDEO_PIPELINE =
  'videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! ' +
  'videoconvert ! queue ! vp8enc deadline=1 keyframe-max-dist=60 ! rtpvp8pay pt=96 ssrc=2 ! ' +
  'queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96';
export const AUDIO_PIPELINE =
  'audiotestsrc is-live=true wave=red-noise ! audioconvert ! audioresample ! queue ! opusenc ! ' +
  'rtpopuspay pt=100 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100';

// Start simple-whip-client. Returns {proc, lines, log(), waitFor(re, ms), stop()}; stop()
// sends SIGINT (whip-client then DELETEs its resource), SIGKILL after 5 s. The process is
// also killed when this process exits.
export function startWhipClient({url, token, shim = null, trickle = true, extraArgs = [],
                                 video = VIDEO_PIPELINE, audio = AUDIO_PIPELINE, echo = false}) {
  const args = ['-u', url, '-l', '5', '-o', ...(token ? ['-t', token] : []), ...(trickle ? [] : ['-n']),
                '-V', video, '-A', audio, ...extraArgs];
  const env = {...process.env};
  if (shim) env.LD_LIBRARY_PATH = shim.dir + (env.LD_LIBRARY_PATH ? ':' + env.LD_LIBRARY_PATH : '');
  const proc = spawn(WHIP_CLIENT, args, {stdio: ['ignore', 'pipe', 'pipe'], env});
  const exited = track(proc);
  const lines = [];
  let part = '';
  const onData = (d) => {
    part += d;
    let i;
    while ((i = part.indexOf('\n')) >= 0) {
      const l = part.slice(0, i);
      lines.push(l);
      if (echo) process.stderr.write(`[whip-client] ${l}\n`);
      part = part.slice(i + 1);
    }
  };
  proc.stdout.setEncoding('utf8').on('data', onData);
  proc.stderr.setEncoding('utf8').on('data', onData);
  const c = {
    proc, lines, exited,
    log: () => lines.join('\n') + (part ? '\n' + part : ''),
    running: () => proc.exitCode === null && proc.signalCode === null,
    async waitFor(re, ms) {
      const deadline = Date.now() + ms;
      for (;;) {
        if (lines.some((l) => re.test(l))) return;
        if (!c.running())
          throw new Error(`whip-client exited (${proc.exitCode ?? proc.signalCode}) before ${re}:\n${c.log().slice(-4000)}`);
        if (Date.now() > deadline) throw new Error(`whip-client: no ${re} within ${ms} ms:\n${c.log().slice(-4000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      if (!c.running()) return exited;
      proc.kill('SIGINT');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      const st = await exited;
      clearTimeout(t);
      return st;
    },
  };
  return c;
}
