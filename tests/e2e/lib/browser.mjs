// onair e2e: headless Chromium (Debian's /usr/bin/chromium via playwright-core), the static
// page server for tests/e2e/pages/, and Node wrappers around the in-page client (pages/client.js).
import {createServer} from 'node:http';
import {mkdtemp, readFile, rm} from 'node:fs/promises';
import {rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {extname, join, normalize, dirname, sep} from 'node:path';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

export const PAGES_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'pages');
export const CHROMIUM = process.env.ONAIR_E2E_CHROMIUM || '/usr/bin/chromium';
const DEBUG = !!process.env.ONAIR_E2E_DEBUG;

// handbook section 6; --allow-loopback-in-peer-connection is required (without it Chromium
// gathers no 127.0.0.1 candidates). The autoplay flag lets the players' <audio>/<video>
// elements play without a gesture (remote audio is only decoded while something plays it).
export const CHROMIUM_ARGS = [
  '--no-sandbox', // the machine runs as root
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];

// ---- static page server ----------------------------------------------------------------------
const TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
               '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css'};

export async function startPageServer(dir = PAGES_DIR) {
  const root = normalize(dir + sep);
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = normalize(join(root, path === '/' ? 'index.html' : path));
    if (!file.startsWith(root) || req.method !== 'GET') {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, {'Content-Type': TYPES[extname(file)] || 'application/octet-stream',
                          'Cache-Control': 'no-store'});
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const url = `http://127.0.0.1:${server.address().port}`;
  return {url, close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); })};
}

// Chromium profiles still on disk: removed on exit if close() did not run (a signal).
const profiles = new Set();
const dropProfiles = () => { for (const p of profiles) try { rmSync(p, {recursive: true, force: true}); } catch {} };
process.once('exit', dropProfiles);
// On a signal: exit, which runs the 'exit' handlers (playwright's kills Chromium; lib/onaird.mjs
// kills onaird; dropProfiles above). 128 + signal number, as a shell reports it.
for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]])
  process.once(sig, () => process.exit(128 + n));

// ---- browser ---------------------------------------------------------------------------------
// launch() -> {context, pageServer, newPage(name), close()}. close() is idempotent and must be
// called on every path (tests do it in after()/finally); playwright also kills the browser if
// this process exits on SIGINT/SIGTERM/SIGHUP.
// args: the Chromium command line (default CHROMIUM_ARGS).
export async function launch({signal = process.env.ONAIR_E2E_SIGNAL || 'page', args = CHROMIUM_ARGS} = {}) {
  const profile = await mkdtemp(join(tmpdir(), 'onair-e2e-chromium-'));
  profiles.add(profile);
  const pageServer = await startPageServer();
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args,
      permissions: ['camera', 'microphone'],
      timeout: 30_000,
    });
  } catch (e) {
    await pageServer.close();
    await rm(profile, {recursive: true, force: true});
    throw e;
  }
  let closed = false;
  const b = {
    context,
    pageServer,
    signal,
    async newPage(name = 'page', file = 'index.html', ready = 'e2eReady') {
      const page = await context.newPage();
      page.e2eName = name;
      page.on('pageerror', (e) => process.stderr.write(`[${name}] page error: ${e.message}\n`));
      if (DEBUG) page.on('console', (m) => process.stderr.write(`[${name}] ${m.type()}: ${m.text()}\n`));
      if (signal === 'node') await page.exposeFunction('__e2eNodeFetch', nodeFetch);
      await page.goto(`${pageServer.url}/${file}`);
      await page.waitForFunction((k) => window[k] === true, ready, {timeout: 10_000});
      return page;
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await context.close();
      } finally {
        await pageServer.close();
        await rm(profile, {recursive: true, force: true});
        profiles.delete(profile);
      }
    },
  };
  // the persistent context opens one blank page: not used
  for (const p of context.pages()) await p.close().catch(() => {});
  return b;
}

async function nodeFetch(url, {method, headers, body}) {
  const r = await fetch(url, {method, headers, body});
  return {status: r.status, contentType: r.headers.get('content-type') || '',
          location: r.headers.get('location'), etag: r.headers.get('etag'), body: await r.text()};
}

// ---- in-page client wrappers -----------------------------------------------------------------
// tryPublish / tryPlay return the page's result object as is ({ok:false, status, ...} on a
// non-201 answer); publish / play throw unless the server answered 201 with a usable answer.
export function tryPublish(page, whipUrl, token, opts = {}) {
  return page.evaluate(([u, t, o]) => window.e2e.publish(u, t, o),
                       [whipUrl, token ?? null, {simulcast: false, video: true, audio: true, ...opts}]);
}

export async function publish(page, whipUrl, token, opts = {}) {
  const r = await tryPublish(page, whipUrl, token, opts);
  if (!r.ok) throw new Error(`WHIP publish to ${whipUrl} failed: ${describe(r)}`);
  return r;
}

export function tryPlay(page, whepUrl, token, opts = {}) {
  return page.evaluate(([u, t, o]) => window.e2e.play(u, t, o), [whepUrl, token ?? null, opts]);
}

export async function play(page, whepUrl, token, opts = {}) {
  const r = await tryPlay(page, whepUrl, token, opts);
  if (!r.ok) throw new Error(`WHEP play of ${whepUrl} failed: ${describe(r)}`);
  return r;
}

// DELETE the session's resource (its Location) and close its pc -> {status, ...}.
export function stop(page, id, opts = {}) {
  return page.evaluate(([i, o]) => window.e2e.stop(i, o), [id, opts]);
}

export function stats(page, id) {
  return page.evaluate((i) => window.e2e.stats(i), id);
}

// A raw signaling request made by the page (so CORS applies as for a real player).
export function request(page, url, opts = {}) {
  return page.evaluate(([u, o]) => window.e2e.request(u, o), [url, opts]);
}

export function closeAll(page) {
  return page.evaluate(() => window.e2e.closeAll()).catch(() => {});
}

function describe(r) {
  const body = (r.body || '').slice(0, 300);
  return `status ${r.status}${r.error ? ` (${r.error})` : ''} ${r.contentType || ''} ${body}`;
}

// ---- polling ---------------------------------------------------------------------------------
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll fn() every `every` ms until it says done, or `ms` pass: then throw with `what` and the
// last value seen. fn returns either {done: bool, ...details} (details end up in the failure
// message) or any value, done when truthy. Returns the final value.
export async function waitFor(what, fn, ms, every = 250) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last && (typeof last !== 'object' || !('done' in last) || last.done)) return last;
    if (Date.now() >= deadline) break;
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
}

// Video framesDecoded of a session (0 before the first inbound-rtp shows up).
export const frames = (s) => s?.inbound?.video?.framesDecoded ?? 0;
export const samples = (s) => s?.inbound?.audio?.totalSamplesReceived ?? 0;
export const audioPackets = (s) => s?.inbound?.audio?.packetsReceived ?? 0;
