// onair e2e: a real onaird for the WHIP/WHEP tests (the JS twin of
// tests/integration/onair_harness.py), and the REST calls that make an account and a stream.
//
// Environment:
//   ONAIR_URL         use this running onaird (media on, server.cors_origins "*") instead of
//                     starting one; accounts are registered through its API
//   ONAIRD            the binary          (default build/core/onaird, from the repo root)
//   ONAIR_PLUGIN_DIR  stock plugins       (default build/plugins; streams.so is needed)
//   ONAIR_E2E_MEDIA_CONFIG  JSON that replaces the whole `media:` section below
import {spawn} from 'node:child_process';
import {createSocket} from 'node:dgram';
import {mkdtemp, mkdir, writeFile, rm} from 'node:fs/promises';
import {existsSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join, resolve, dirname} from 'node:path';
import {fileURLToPath} from 'node:url';
import {randomBytes} from 'node:crypto';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
// ONAIRD / ONAIR_PLUGIN_DIR: relative to the working directory (run.sh makes them absolute);
// the defaults are relative to the repository root.
export const ONAIRD = process.env.ONAIRD ? resolve(process.env.ONAIRD) : resolve(REPO, 'build/core/onaird');
export const PLUGIN_DIR = process.env.ONAIR_PLUGIN_DIR ? resolve(process.env.ONAIR_PLUGIN_DIR)
                                                       : resolve(REPO, 'build/plugins');
const PASSWORD = 'correct horse battery staple';

// =============================================================================================
// The media relay as these tests use it (docs/media.md): the `media:` section of onair.yaml.
export function mediaConfig(udpPort) {
  if (process.env.ONAIR_E2E_MEDIA_CONFIG) // the string "$UDP_PORT" stands for the free port
    return JSON.parse(process.env.ONAIR_E2E_MEDIA_CONFIG, (k, v) => v === '$UDP_PORT' ? udpPort : v);
  return {
    enabled: true, //                     the relay is on
    udp_port: 0, //                       the kernel picks a free port (the answer names it;
    //                                    picking one here races with parallel tests)
    public_addresses: ['127.0.0.1'], //   announced as the host candidate in every answer
  };
}
// The signaling routes (served by the core or the streams plugin, CORS "*", Location exposed).
export const ROUTES = {
  whip: (id) => `/api/v1/whip/${encodeURIComponent(id)}`, // Bearer: the stream key
  whep: (id) => `/api/v1/whep/${encodeURIComponent(id)}`, // Bearer: an access token (optional
  //                                                         for public / unlisted streams)
};
// =============================================================================================

// ---- tiny YAML writer (nested objects of scalars and lists), as onair_harness.to_yaml -------
function scalar(v) {
  if (typeof v === 'boolean' || typeof v === 'number') return String(v);
  if (Array.isArray(v)) return '[' + v.map(scalar).join(', ') + ']';
  return JSON.stringify(String(v)); // a JSON string is a valid YAML scalar
}

export function toYaml(obj, indent = 0) {
  const pad = ' '.repeat(indent);
  return Object.entries(obj).map(([k, v]) => {
    if (v && typeof v === 'object' && !Array.isArray(v))
      return Object.keys(v).length ? `${pad}${k}:\n${toYaml(v, indent + 2)}` : `${pad}${k}: {}`;
    return `${pad}${k}: ${scalar(v)}`;
  }).join('\n');
}

export function freeUdpPort() {
  return new Promise((res, rej) => {
    const s = createSocket('udp4');
    s.once('error', rej);
    s.bind(0, '127.0.0.1', () => {
      const {port} = s.address();
      s.close(() => res(port));
    });
  });
}

// ---- the process -----------------------------------------------------------------------------
const live = new Set(); // every onaird we started: killed on process exit, whatever happens
process.once('exit', () => { for (const p of live) try { p.kill('SIGKILL'); } catch {} });

export class Onaird {
  constructor({core = {}, plugins = null} = {}) {
    this.coreOverrides = core;
    this.plugins = plugins;
    this.lines = [];
    this.proc = null;
    this.base = null;
  }

  async start(timeoutMs = 30_000) {
    this.dir = await mkdtemp(join(tmpdir(), 'onair-e2e-'));
    this.udpPort = await freeUdpPort();
    const core = {
      server: {host: '127.0.0.1', port: 0, shutdown_timeout: 10, cors_origins: '*'},
      auth: {jwt_secret: 'e2e-test-secret-0123456789abcdef', password_hash: 'interactive'},
      storage: {backend: 'sqlite', data_dir: join(this.dir, 'data')},
      logging: {level: 'info'},
      plugins: {dir: PLUGIN_DIR, conf_dir: 'plugins'},
      rate_limits: {'auth.register': '100000/1m', 'auth.login': '100000/1m'},
      media: mediaConfig(this.udpPort),
    };
    for (const [k, v] of Object.entries(this.coreOverrides))
      core[k] = (v && typeof v === 'object' && !Array.isArray(v)) ? {...(core[k] || {}), ...v} : v;
    this.configPath = join(this.dir, 'onair.yaml');
    await writeFile(this.configPath, toYaml(core) + '\n');
    await mkdir(join(this.dir, 'plugins'));
    const plugins = this.plugins || {streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}}};
    for (const [name, spec] of Object.entries(plugins))
      await writeFile(join(this.dir, 'plugins', name + '.yaml'), toYaml({enabled: true, ...spec}) + '\n');

    this.proc = spawn(ONAIRD, ['-c', this.configPath], {stdio: ['ignore', 'pipe', 'pipe'],
      env: {ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', ...process.env}});
    live.add(this.proc);
    this.exited = new Promise((r) => this.proc.once('exit', (code, sig) => {
      live.delete(this.proc);
      r({code, sig});
    }));
    let buf = '';
    const onData = (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, i));
        if (process.env.ONAIR_E2E_DEBUG) process.stderr.write(`[onaird] ${buf.slice(0, i)}\n`);
        buf = buf.slice(i + 1);
      }
    };
    this.proc.stdout.setEncoding('utf8').on('data', onData);
    this.proc.stderr.setEncoding('utf8').on('data', onData);

    const deadline = Date.now() + timeoutMs;
    const rx = /listening on https?:\/\/[^:]+:(\d+)/;
    for (;;) {
      const m = this.lines.map((l) => l.match(rx)).find(Boolean);
      if (m) {
        this.base = `http://127.0.0.1:${m[1]}`;
        // the media port the kernel picked (udp_port 0), from "media relay on UDP port N"
        const mp = this.lines.map((l) => l.match(/media relay on UDP port (\d+)/)).find(Boolean);
        this.mediaPort = mp ? Number(mp[1]) : null;
        return this;
      }
      if (this.proc.exitCode !== null || this.proc.signalCode !== null || Date.now() > deadline) {
        await this.stop();
        const e = new Error(`onaird did not start:\n${this.log().slice(-4000)}`);
        e.onairdLog = this.log();
        throw e;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  log() {
    return this.lines.join('\n');
  }

  // SIGTERM, then SIGKILL after 10 s; removes the temp dir. Returns {code, sig}.
  async stop() {
    let st = null;
    if (this.proc) {
      if (this.proc.exitCode === null && this.proc.signalCode === null) {
        this.proc.kill('SIGTERM');
        const t = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
        st = await this.exited;
        clearTimeout(t);
      } else {
        st = await this.exited;
      }
    }
    if (this.dir) await rm(this.dir, {recursive: true, force: true}).catch(() => {});
    return st;
  }
}

// ---- REST ------------------------------------------------------------------------------------
export async function api(base, method, path, {body, token} = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(base + path, {method, headers,
                                      body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch {}
  return {status: r.status, headers: r.headers, text, json};
}

export async function register(base, name = 'e2e') {
  const username = name + randomBytes(5).toString('hex');
  const r = await api(base, 'POST', '/api/v1/auth/register',
                      {body: {username, email: `${username}@example.org`, password: PASSWORD}});
  if (r.status !== 201) throw new Error(`register: ${r.status} ${r.text}`);
  return {username, token: r.json.access_token};
}

// A target for lib/scenarios.mjs: whipUrl/whepUrl and newStream() -> {id, key, viewerToken}.
// The stream's owner (default roles viewer + streamer) is the one account that may watch its
// private streams: its access token is the stream's viewerToken.
export async function onairTarget(base) {
  let owner = null;
  return {
    base,
    whipUrl: (id) => base + ROUTES.whip(id),
    whepUrl: (id) => base + ROUTES.whep(id),
    async newStream({visibility = 'public', title = 'e2e stream'} = {}) {
      owner ??= await register(base, 'e2eowner');
      const r = await api(base, 'POST', '/api/v1/streams',
                          {token: owner.token, body: {title, visibility}});
      if (r.status !== 201) throw new Error(`create stream: ${r.status} ${r.text}`);
      return {id: r.json.stream.id, key: r.json.stream_key, visibility, viewerToken: owner.token};
    },
  };
}

export const haveOnaird = () => existsSync(ONAIRD) && existsSync(join(PLUGIN_DIR, 'streams.so'));

// The start-up of the media test files: use ONAIR_URL or start an onaird. -> {server, target,
// skip}: `server` is the Onaird we started (null with ONAIR_URL), `skip` the reason there is
// nothing to test (no onaird binary), else null. Under ONAIR_E2E_REQUIRE=1 (ctest) callers
// turn a skip into a failure.
export async function startTarget() {
  if (process.env.ONAIR_URL)
    return {server: null, target: await onairTarget(process.env.ONAIR_URL.replace(/\/+$/, '')), skip: null};
  if (!haveOnaird())
    return {server: null, target: null, skip: `no onaird: ${ONAIRD} or ${PLUGIN_DIR}/streams.so missing (set ONAIRD, ONAIR_PLUGIN_DIR or ONAIR_URL)`};
  const server = new Onaird();
  await server.start();
  return {server, target: await onairTarget(server.base), skip: null};
}

// GET /metrics of `base` -> {name{labels}: value} plus sum(name) over all label sets.
export async function metrics(base) {
  const r = await fetch(base + '/metrics');
  const text = await r.text();
  if (r.status !== 200) throw new Error(`GET /metrics: ${r.status} ${text.slice(0, 300)}`);
  const all = {};
  for (const l of text.split('\n')) {
    const m = l.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m) all[m[1] + (m[2] || '')] = Number(m[3]);
  }
  const sum = (name) => Object.entries(all)
    .filter(([k]) => k === name || k.startsWith(name + '{')).reduce((a, [, v]) => a + v, 0);
  return {all, sum, text};
}
