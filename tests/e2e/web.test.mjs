// onair e2e: the web app (plugins/web, issue 21), driven as people use it. Headless Chromium
// (Debian's, through playwright-core) with two isolated browser contexts, a streamer and a
// viewer, plus an admin and an OBS-like overlay context, against a real onaird with the stock
// plugins and the web plugin:
//   - the streamer signs up and verifies her email with the code the development mail
//     transport (maildir) wrote;
//   - she goes live from the studio with Chromium's fake camera (WHIP);
//   - the viewer signs up, opens /watch/{id} and the video decodes (WHEP); she chats, reacts,
//     asks a question and votes in the poll the streamer starts from the studio;
//   - the streamer deletes her message and times her out: the message vanishes on the viewer's
//     page and her next message is refused with the timeout's reason;
//   - she makes a clip of the last 30 s and plays it (clips plugin); the streamer records
//     from the studio and the finished recording plays on the viewer page (recording plugin);
//   - an overlay page (/overlay/{id}/alerts#token=...) shows her tip as an alert;
//   - the admin signs in and sees users, plugins and the server;
//   - every page is screenshotted at desktop and phone widths (ONAIR_WEB_SHOTS, default
//     <build dir or tmp>/web-screenshots) and no page logs a console error or throws.
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE, ONAIR_WEB_SHOTS (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import {mkdir, mkdtemp, readdir, readFile, rm} from 'node:fs/promises';
import {existsSync} from 'node:fs';
import {join, resolve} from 'node:path';
import {tmpdir} from 'node:os';
import {createHmac, randomBytes} from 'node:crypto';
import {createServer} from 'node:http';
import {chromium} from 'playwright-core';
import {CHROMIUM, CHROMIUM_ARGS, waitFor, sleep} from './lib/browser.mjs';
import {Onaird, haveOnaird, ONAIRD, PLUGIN_DIR, api, REPO} from './lib/onaird.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const missing = !haveOnaird() ? 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)'
  : !existsSync(join(PLUGIN_DIR, 'web.so')) ? `no ${PLUGIN_DIR}/web.so` : false;
if (missing && REQUIRE) test('onaird and the web plugin are built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(missing));
const T = {timeout: 180_000, skip: missing};
const SHOTS = resolve(process.env.ONAIR_WEB_SHOTS ||
  join(process.env.ONAIR_BUILD_DIR || join(tmpdir(), 'onair-web'), 'web-screenshots'));
const PASSWORD = 'correct horse battery staple';
const DESKTOP = {width: 1280, height: 860};
const PHONE = {width: 390, height: 844};
const has = (name) => existsSync(join(PLUGIN_DIR, name + '.so'));

let server = null;
let browser = null;
const contexts = [];
const problems = []; // console errors and page errors, of every page
const S = {}; // shared between the steps: pages, users, the stream

async function setup() {
  if (server) return;
  const plugins = {
    streams: {config: {max_live_per_user: 100}},
    chat: {}, moderation: {}, reactions: {}, qa: {}, scheduling: {},
    verification: {config: {transport: 'maildir', from: 'onair <no-reply@localhost>'}},
    web: {},
  };
  if (has('polls')) plugins.polls = {config: {min_duration_s: 15}};
  if (has('donations')) plugins.donations = {config: {provider: 'test'}};
  if (has('analytics')) plugins.analytics = {};
  if (has('recording') || has('clips')) S.recDir = await mkdtemp(join(tmpdir(), 'onair-web-rec-'));
  if (has('recording')) plugins.recording = {config: {dir: join(S.recDir, 'recordings')}};
  if (has('clips')) plugins.clips = {config: {dir: join(S.recDir, 'clips')}};
  if (has('cohosts')) plugins.cohosts = {};
  if (has('webhooks')) plugins.webhooks = {config: {allow_private: true}}; // our receiver is on 127.0.0.1
  if (has('rtmp')) plugins.rtmp = {config: {port: 0, bind_address: '127.0.0.1'}}; // the kernel's port
  if (has('multiplatform')) {
    plugins.multiplatform = {};
    process.env.ONAIR_MULTIPLATFORM_KEY ??= randomBytes(32).toString('hex'); // seals stream keys
  }
  server = new Onaird({plugins, core: {server: {cors_origins: []}}});
  await server.start();
  browser = await chromium.launch({executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS});
}

after(async () => {
  try {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
  } finally {
    if (server) {
      const st = await server.stop();
      assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${server.log().slice(-4000)}`);
      assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(server.log()), server.log().slice(-6000));
    }
    if (S.recDir) await rm(S.recDir, {recursive: true, force: true});
    S.receiver?.close();
  }
});

// A browser context (its own storage: one person) and a page in it that records problems.
async function person(name, viewport = DESKTOP) {
  const context = await browser.newContext({viewport, baseURL: server.base});
  contexts.push(context);
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`${name} ${page.url()}: console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${name} ${page.url()}: ${e.message}`));
  page.on('dialog', (d) => d.accept());
  return page;
}

// desktop and phone widths in the light scheme, and the desktop in the dark one
async function shot(page, name) {
  await mkdir(SHOTS, {recursive: true});
  for (const [label, vp, scheme] of [['desktop', DESKTOP, 'light'], ['phone', PHONE, 'light'],
                                     ['dark', DESKTOP, 'dark']]) {
    await page.emulateMedia({colorScheme: scheme});
    await page.setViewportSize(vp);
    await sleep(300);
    await page.screenshot({path: join(SHOTS, `${name}-${label}.png`), fullPage: vp === DESKTOP});
  }
  await page.emulateMedia({colorScheme: 'light'});
  await page.setViewportSize(DESKTOP);
}

const noProblems = () => assert.deepEqual(problems, [], problems.join('\n'));
// A refusal a step provokes on purpose: Chromium logs the failed request as a console error.
function expected(who, status) {
  const re = new RegExp(`^${who} .*status of ${status}`);
  for (let i = problems.length - 1; i >= 0; i--) if (re.test(problems[i])) problems.splice(i, 1);
}

// axe-core (WCAG 2 A and AA rules: labels, names, contrast, landmarks, ...) on the page as it
// is: evaluated through the DevTools protocol, which the page's CSP does not govern.
const AXE = await readFile(join(REPO, 'tests/e2e/node_modules/axe-core/axe.min.js'), 'utf8').catch(() => null);
async function accessible(page, name) {
  assert.ok(AXE, 'axe-core is installed (tests/e2e: npm ci)');
  await page.evaluate(AXE);
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({colorScheme: scheme});
    const found = await page.evaluate(async () => {
      const r = await window.axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}});
      return r.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
    });
    assert.deepEqual(found, [], `${name} (${scheme}): accessibility violations:\n${found.join('\n')}`);
  }
  await page.emulateMedia({colorScheme: 'light'});
}
const text = (page, sel) => page.locator(sel).innerText();

async function signUp(page, username) {
  await page.goto('/signup');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Email').fill(`${username}@example.org`);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', {name: 'Sign up'}).click();
  await page.waitForURL('**/verify');
  await page.getByText('We mailed a 6-digit code').waitFor();
}

// the newest mail of the development transport for `address`: its 6-digit code
async function mailedCode(address) {
  const dir = join(server.dir, 'data', 'mail');
  return waitFor(`a mail to ${address}`, async () => {
    const files = existsSync(dir) ? (await readdir(dir)).filter((f) => f.endsWith('.eml')).sort() : [];
    for (const f of files.reverse()) {
      const body = await readFile(join(dir, f), 'utf8');
      if (!body.includes(address)) continue;
      const m = body.match(/\b(\d{6})\b/);
      if (m) return {done: true, code: m[1]};
    }
    return {done: false, files};
  }, 15_000).then((r) => r.code);
}

// the page's <video class="vod"> loads its first frame, or the step fails with the media error
const plays = (page, what) => page.locator('video.vod').evaluate((v, what) => new Promise((resolve, reject) => {
  if (v.readyState >= 2) return resolve();
  v.addEventListener('loadeddata', resolve);
  v.addEventListener('error', () => reject(new Error(`the ${what} does not play: ${v.error?.message}`)));
}), what);
const decoded = (page) => page.evaluate(() => document.querySelector('#video')?.getVideoPlaybackQuality().totalVideoFrames ?? 0);

test('the site: pages, security headers, 404s', T, async () => {
  await setup();
  for (const path of ['/', '/studio', '/admin', '/signup', '/signin', '/verify', '/account',
                      '/watch/65f1c0ffee0000000000abcd', '/overlay/65f1c0ffee0000000000abcd/chat']) {
    const r = await fetch(server.base + path);
    assert.equal(r.status, 200, path);
    assert.match(r.headers.get('content-type'), /^text\/html/);
    const csp = r.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    const etag = r.headers.get('etag');
    assert.ok(etag, path);
    const again = await fetch(server.base + path, {headers: {'If-None-Match': etag}});
    assert.equal(again.status, 304, path);
  }
  for (const path of ['/static/nope.js', '/static/watch.html', '/overlay/x/nope'])
    assert.equal((await fetch(server.base + path)).status, 404, path);
  // the SDK's file reply: gzip for clients that take it, revalidation every time
  const js = await fetch(server.base + '/static/watch.js', {headers: {'Accept-Encoding': 'gzip'}});
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  assert.equal(js.headers.get('content-encoding'), 'gzip');
  assert.equal(js.headers.get('cache-control'), 'no-cache');
  assert.match(await js.text(), /new Player\(video, id/);
  // the API and the probes are untouched
  assert.equal((await fetch(server.base + '/readyz')).status, 200);
  assert.equal((await api(server.base, 'GET', '/api/v1/streams')).status, 200);
  assert.match(server.log(), /the site: http:\/\/127\.0\.0\.1:\d+\//);
});

test('sign up and verify the email address', T, async () => {
  await setup();
  S.streamer = await person('streamer');
  S.streamerName = 'ada' + Date.now().toString(36);
  const page = S.streamer;
  await page.goto('/signup');
  await shot(page, 'signup');
  await accessible(page, 'signup');
  await signUp(page, S.streamerName);
  await shot(page, 'verify');
  await accessible(page, 'verify');
  const code = await mailedCode(`${S.streamerName}@example.org`);
  await page.getByLabel('Code').fill(code);
  await page.getByRole('button', {name: 'Verify'}).click();
  await page.getByRole('heading', {name: 'Email verified'}).waitFor();
  // the header no longer asks for verification, and the account says so
  await page.goto('/account');
  await page.getByText('(verified)').waitFor();
  await shot(page, 'account');
  await accessible(page, 'account');
  noProblems();
});

test('the account lists its sessions; signing one out ends it at once', T, async () => {
  // the streamer signs in on her phone too
  const phone = await person('streamer-phone', PHONE);
  await phone.goto('/signin');
  await phone.getByLabel('Username or email').fill(S.streamerName);
  await phone.getByLabel('Password').fill(PASSWORD);
  await phone.getByRole('button', {name: 'Sign in'}).click();
  await phone.waitForURL((u) => u.pathname === '/');
  await phone.goto('/account');
  await phone.getByRole('heading', {name: 'Your account'}).waitFor();
  // her first browser lists both: itself marked, the phone with a sign-out
  const page = S.streamer;
  await page.goto('/account');
  const rows = page.locator('#sessions > li');
  await waitFor('two sessions listed', async () => ({done: (await rows.count()) === 2, n: await rows.count()}), 10_000);
  assert.equal(await rows.filter({hasText: 'This browser'}).count(), 1);
  assert.match(await rows.filter({hasText: 'This browser'}).innerText(), /Chrom\w* on Linux[\s\S]*from 127\.0\.0\.1/);
  await shot(page, 'account');
  await accessible(page, 'account');
  noProblems(); // none before the refusals this step provokes
  await page.getByRole('button', {name: /^Sign out Chrom\w* on Linux \(signed in/}).click();
  await page.getByText(/^Signed out Chrom/).waitFor();
  await waitFor('one session left', async () => ({done: (await rows.count()) === 1}), 10_000);
  // the phone is signed out at once: its next request is refused, the page asks to sign in
  await phone.getByLabel('Display name').fill('from the phone');
  await phone.getByRole('button', {name: 'Save'}).click();
  await phone.locator('.status[data-kind="error"]', {hasText: 'signed out'}).waitFor();
  await phone.reload();
  await phone.waitForURL('**/signin?next=/account');
  await phone.getByRole('heading', {name: 'Sign in'}).waitFor();
  // this browser stays signed in, and its name did not change
  await page.reload();
  await page.getByRole('heading', {name: 'Your account'}).waitFor();
  assert.notEqual(await page.getByLabel('Display name').inputValue(), 'from the phone');
  expected('streamer-phone', 401); // the phone's refused requests
  noProblems();
});

test('go live from the studio with the fake camera; a second browser watches', T, async (t) => {
  await setup();
  const page = S.streamer;
  await page.goto('/studio');
  await page.getByLabel('New stream title').fill('Friday e2e stream');
  await page.getByRole('button', {name: 'Create stream'}).click();
  await page.getByText('Created “Friday e2e stream”.').waitFor();
  await page.locator('#whip-url', {hasText: '/api/v1/whip/'}).waitFor({state: 'attached'});
  S.streamId = (await page.locator('#whip-url').textContent()).split('/').pop();
  assert.match(S.streamId, /^[0-9a-f]{24}$/);
  assert.match(await page.locator('#stream-key').textContent(), /^sk_/);
  if (has('rtmp')) { // OBS's classic setup: the RTMP server to paste, with the port listened on
    const info = await (await fetch(server.base + '/api/v1/rtmp')).json();
    await page.locator('#rtmp-url', {hasText: `:${info.port}/live`}).waitFor({state: 'attached'});
    assert.ok(info.port > 0);
    assert.equal(await page.locator('#rtmp-url').textContent(), `rtmp://${new URL(server.base).hostname}:${info.port}/live`);
  }
  await page.locator('#preview').evaluate((v) => new Promise((r) => v.readyState >= 2 ? r() : v.addEventListener('loadeddata', r)));
  await page.getByRole('button', {name: 'Go live'}).click();
  await page.getByText('You are live.').waitFor({timeout: 20_000});
  if (has('recording')) {
    await page.getByRole('button', {name: 'Record'}).click();
    await page.getByRole('button', {name: 'Stop recording'}).waitFor();
  }

  S.viewer = await person('viewer');
  S.viewerName = 'bob' + Date.now().toString(36);
  await signUp(S.viewer, S.viewerName);
  await S.viewer.goto('/');
  await S.viewer.getByRole('link', {name: /Friday e2e stream/}).waitFor();
  await shot(S.viewer, 'home');
  await accessible(S.viewer, 'home');
  const clicked = Date.now();
  await S.viewer.getByRole('link', {name: /Friday e2e stream/}).click();
  await S.viewer.waitForURL(`**/watch/${S.streamId}`);
  await waitFor('the first frame', async () => ({done: (await decoded(S.viewer)) > 0}), 30_000, 50);
  t.diagnostic(`viewer page: first video frame ${Date.now() - clicked} ms after the click on the stream`);
  const first = await waitFor('the viewer decodes frames', async () => {
    const n = await decoded(S.viewer);
    return {done: n > 10, n};
  }, 30_000);
  await waitFor('more frames', async () => {
    const n = await decoded(S.viewer);
    return {done: n > first.n + 10, n};
  }, 15_000);
  await S.viewer.locator('#live-badge').waitFor();
  // quality: "Low" caps the simulcast layer (PATCH of the WHEP session), "Auto" lifts the cap
  const width = () => S.viewer.locator('#video').evaluate((v) => v.videoWidth);
  await S.viewer.getByLabel('Quality').selectOption({label: 'Low'});
  await waitFor('the low layer', async () => {
    const w = await width();
    return {done: w > 0 && w <= 320, w};
  }, 20_000);
  await S.viewer.getByLabel('Quality').selectOption({label: 'Auto'});
  await waitFor('a higher layer again', async () => {
    const w = await width();
    return {done: w > 320, w};
  }, 45_000);
  await waitFor('the viewer count', async () => {
    const t = await text(S.viewer, '#viewers');
    return {done: /^[1-9]\d* watching/.test(t), t};
  }, 10_000);
  // the streamer's health grade arrives (health.update on her socket)
  await page.locator('#health[data-grade]').waitFor({timeout: 15_000});
  noProblems();
});

test('the viewer chats, reacts, asks and votes; the streamer sees it', T, async () => {
  const v = S.viewer, s = S.streamer;
  await v.getByLabel('Chat message').fill('hello from the viewer');
  await v.getByRole('button', {name: 'Send'}).click();
  await v.locator('#messages li', {hasText: 'hello from the viewer'}).waitFor();
  await s.locator('#messages li', {hasText: 'hello from the viewer'}).waitFor();

  await v.getByRole('button', {name: 'React heart'}).click();
  await v.getByRole('button', {name: 'React heart'}).locator('.count', {hasText: '1'}).waitFor();

  await v.getByLabel('Your question').fill('What camera is that?');
  await v.getByRole('button', {name: 'Ask'}).click();
  await s.locator('#questions li', {hasText: 'What camera is that?'}).waitFor();
  await v.getByRole('button', {name: 'Upvote: What camera is that?'}).click();
  await v.locator('#questions li', {hasText: 'What camera is that?'}).locator('.votes', {hasText: '1'}).waitFor();
  await s.locator('#questions li', {hasText: 'What camera is that?'}).getByText('▲ 1').waitFor();

  if (has('polls')) {
    await s.getByLabel('Poll question').fill('Best snack?');
    await s.getByLabel(/Choices/).fill('crisps\nnuts');
    await s.getByRole('button', {name: 'Start poll'}).click();
    await v.getByRole('heading', {name: 'Poll: Best snack?'}).waitFor();
    await v.locator('#poll').getByRole('button', {name: 'nuts'}).click();
    await v.locator('#poll .poll-choice[data-choice="b"] .pct', {hasText: '100 % (1)'}).waitFor({timeout: 10_000});
    await s.locator('#poll-live', {hasText: 'nuts 1 votes'}).waitFor({timeout: 10_000});
  }
  if (has('clips')) {
    await v.getByRole('button', {name: 'Clip the last 30 s'}).click();
    await v.locator('#player-state', {hasText: 'Clip made'}).waitFor({timeout: 20_000});
    const clip = v.locator('#vods li', {hasText: 'Clip of'});
    await clip.waitFor();
    await clip.getByRole('button', {name: 'Play'}).click();
    await plays(v, 'clip');
  }
  await shot(v, 'watch');
  await accessible(v, 'watch');
  await shot(s, 'studio');
  await accessible(s, 'studio');
  noProblems();
});

test('an overlay page shows a tip as an alert', {...T, skip: T.skip || (!REQUIRE && !has('donations') && 'no donations plugin')}, async () => {
  const s = S.streamer;
  await s.getByText('Stream with OBS').click(); // open the details
  await s.getByRole('button', {name: /Make an alerts overlay link/}).click();
  const url = await s.locator('#overlays code', {hasText: '/alerts#token='}).innerText();
  assert.match(url, new RegExp(`/overlay/${S.streamId}/alerts#token=`));
  const overlay = await person('overlay');
  await overlay.goto(url);
  await sleep(500);
  // the tip, from the viewer's page (the test provider confirms at once; no money moves)
  const v = S.viewer;
  await v.locator('#tip-panel').waitFor();
  await v.getByLabel('Amount').fill('5');
  await v.getByLabel('Tip message').fill('great stream');
  await v.getByRole('button', {name: 'Tip'}).click();
  await v.locator('#tip-status[data-kind="ok"], #tip-status[data-kind="error"]').waitFor();
  assert.match(await text(v, '#tip-status'), /Thank you!/);
  await overlay.locator('.alert', {hasText: 'great stream'}).waitFor({timeout: 15_000}).catch(async (e) => {
    throw new Error(`${e.message}\noverlay shows: ${await overlay.locator('#overlay').innerText()}`);
  });
  assert.match(await overlay.locator('.alert').innerText(), /5\.00/);
  await overlay.screenshot({path: join(SHOTS, 'overlay-alerts.png'), omitBackground: true});
  // the streamer's queue lists it; Replay shows it on the overlay again
  const queued = s.locator('#alerts li', {hasText: 'great stream'});
  await queued.waitFor({timeout: 15_000});
  await overlay.locator('.alert').waitFor({state: 'detached', timeout: 15_000});
  await queued.getByRole('button', {name: /^Replay/}).click();
  await overlay.locator('.alert', {hasText: 'great stream'}).waitFor({timeout: 15_000});
  // the chat and poll overlays load too
  await overlay.goto(`/overlay/${S.streamId}/chat`);
  await overlay.locator('.chatline', {hasText: 'hello from the viewer'}).waitFor();
  await overlay.screenshot({path: join(SHOTS, 'overlay-chat.png'), omitBackground: true});
  if (has('polls')) {
    await overlay.goto(`/overlay/${S.streamId}/poll`);
    await overlay.locator('.poll', {hasText: 'Best snack?'}).waitFor();
    assert.match(await overlay.locator('.poll').innerText(), /nuts · 100 %/);
    await overlay.screenshot({path: join(SHOTS, 'overlay-poll.png'), omitBackground: true});
  }
  noProblems();
});

test('the streamer deletes a message and times the viewer out; the viewer sees it', T, async () => {
  const v = S.viewer, s = S.streamer;
  await v.getByLabel('Chat message').fill('this one goes away');
  await v.getByRole('button', {name: 'Send'}).click();
  const line = s.locator('#messages li', {hasText: 'this one goes away'});
  await line.waitFor();
  await v.locator('#messages li', {hasText: 'this one goes away'}).waitFor();
  await line.getByRole('button', {name: /^Delete message/}).click();
  await v.locator('#messages li', {hasText: 'this one goes away'}).waitFor({state: 'detached'});
  await s.locator('#messages li', {hasText: 'this one goes away'}).waitFor({state: 'detached'});

  await s.locator('#messages li', {hasText: 'hello from the viewer'}).getByRole('button', {name: /^Time out/}).click();
  await s.getByText(/is timed out for 10 minutes/).waitFor();
  await v.getByLabel('Chat message').fill('am I still here?');
  await v.getByRole('button', {name: 'Send'}).click();
  await v.locator('#chat-status', {hasText: /timed out for \d+ more seconds/}).waitFor();
  assert.equal(await s.locator('#messages li', {hasText: 'am I still here?'}).count(), 0);
  // the refusal is shown as a status, not a console error
  noProblems();
});

test('the admin signs in and sees users, plugins and the server', T, async () => {
  const name = 'root' + Date.now().toString(36);
  const r = spawnSync(ONAIRD, ['-c', server.configPath, '--create-admin', name], {
    cwd: server.dir, env: {...process.env, ONAIR_ADMIN_PASSWORD: PASSWORD}, encoding: 'utf8'});
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const page = await person('admin');
  // with the keyboard only: the form has the focus, Tab moves on, Enter submits
  await page.goto('/signin?next=/admin');
  await page.getByLabel('Username or email').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.name), 'login');
  await page.keyboard.type(name);
  await page.keyboard.press('Tab');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await page.waitForURL('**/admin');
  await page.locator('#plugins tr', {has: page.getByRole('cell', {name: 'web', exact: true})}).getByText('started').waitFor();
  await page.locator('#users tr', {hasText: S.viewerName}).waitFor();
  // verify the viewer by hand
  await page.locator('#users tr', {hasText: S.viewerName}).getByRole('button', {name: 'Verify'}).click();
  await page.getByText(`Saved ${S.viewerName}.`).waitFor();
  await shot(page, 'admin');
  await accessible(page, 'admin');
  await page.goto('/signin');
  await shot(page, 'signin');
  await accessible(page, 'signin');
  noProblems();
});

test('the viewer follows the streamer (remembered); the streamer edits the stream (the viewer sees it)', T, async () => {
  const v = S.viewer;
  await v.getByRole('button', {name: 'Follow'}).click();
  await v.getByRole('button', {name: 'Following'}).waitFor();
  await v.reload();
  await v.getByRole('button', {name: 'Following'}).waitFor();
  assert.equal(await v.getByRole('button', {name: 'Following'}).getAttribute('aria-pressed'), 'true');
  // the streamer edits the title; the viewer's page follows (stream.updated)
  const s = S.streamer;
  await s.getByText('Edit the stream').click();
  await s.locator('#edit-title').fill('Friday e2e stream, edited');
  await s.locator('#edit-form').getByRole('button', {name: 'Save'}).click();
  await s.locator('#status', {hasText: 'Saved.'}).waitFor();
  await v.locator('#title', {hasText: 'Friday e2e stream, edited'}).waitFor();
  if (has('multiplatform')) { // a restream platform (not used: the browser publishes VP8)
    await s.locator('#restream-panel').getByText('Add a platform').click();
    await s.getByLabel('Name', {exact: true}).fill('Elsewhere');
    await s.getByLabel('RTMP URL').fill('rtmp://127.0.0.1:1935/live');
    await s.getByLabel('Stream key', {exact: true}).fill('secret-key-1234');
    await s.getByRole('button', {name: 'Add', exact: true}).click();
    await s.locator('#destinations li', {hasText: 'Elsewhere'}).waitFor();
    assert.match(await s.locator('#destinations li', {hasText: 'Elsewhere'}).innerText(), /key \.\.\.1234/);
    await accessible(s, 'studio with restream');
  }
  noProblems();
});

test('the streamer invites the viewer to co-host; a third browser sees both side by side', {...T, skip: T.skip || (!REQUIRE && !has('cohosts') && 'no cohosts plugin')}, async () => {
  const v = S.viewer, s = S.streamer;
  await s.locator('#messages li', {hasText: 'hello from the viewer'}).getByRole('button', {name: /^Invite/}).click();
  await s.locator('#mod-status', {hasText: 'invited to co-host'}).waitFor();
  await v.locator('#invite-panel').waitFor({state: 'visible', timeout: 15_000});
  await v.getByRole('button', {name: 'Accept and go live'}).click();
  await v.locator('#invite-status', {hasText: 'You are live as a co-host.'}).waitFor({timeout: 20_000});
  await s.locator('#cohosts li', {hasText: 'on air'}).waitFor({timeout: 15_000});
  const friend = await person('friend');
  await friend.goto(`/watch/${S.streamId}`);
  const cohostVideo = friend.locator('#cohosts figure video');
  await cohostVideo.waitFor({timeout: 15_000});
  await waitFor('the co-host decodes on a third browser', async () => {
    const n = await cohostVideo.evaluate((el) => el.getVideoPlaybackQuality().totalVideoFrames);
    return {done: n > 10, n};
  }, 30_000);
  assert.ok(await decoded(friend) > 0, 'the main host plays too');
  await shot(friend, 'watch-cohost');
  // removed: the co-host's video goes from the third browser, and the co-host is told
  await s.locator('#cohosts li', {hasText: 'on air'}).getByRole('button', {name: /^Remove co-host/}).click();
  await friend.locator('#cohosts figure').waitFor({state: 'detached', timeout: 15_000});
  await v.locator('#chat-status', {hasText: 'removed as a co-host'}).waitFor({timeout: 15_000});
  noProblems();
});

test('the streamer adds a webhook endpoint, sees its secret once and its deliveries', {...T, skip: T.skip || (!REQUIRE && !has('webhooks') && 'no webhooks plugin')}, async () => {
  // a receiver of our own, as a streamer's backend would be
  const got = [];
  S.receiver = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      got.push({headers: req.headers, body: Buffer.concat(chunks)});
      res.writeHead(200).end('ok');
    });
  });
  await new Promise((r) => S.receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${S.receiver.address().port}/hook`;
  const s = S.streamer;
  const panel = s.locator('#webhooks-panel');
  await panel.getByText('No endpoints for this stream.').waitFor();
  await panel.getByText('Add an endpoint').click();
  await s.getByLabel('Endpoint URL').fill(url);
  await s.getByLabel(/^Events/).fill('stream.*');
  await s.getByRole('button', {name: 'Add endpoint'}).click();
  await s.locator('#wh-status', {hasText: 'Endpoint added.'}).waitFor();
  const secret = await s.locator('#wh-secret-value').textContent();
  assert.match(secret, /^whsec_/);
  await panel.locator('#wh-endpoints li', {hasText: url}).waitFor();
  // a change of the stream is an event; the receiver gets it signed with that secret
  await s.locator('#edit').evaluate((d) => { d.open = true; }); // opened by an earlier step
  await s.locator('#edit-description').fill('now with webhooks');
  await s.locator('#edit-form').getByRole('button', {name: 'Save'}).click();
  const hit = await waitFor('the webhook delivery', async () => {
    const h = got.find((x) => x.headers['onair-event'] === 'stream.updated');
    return {done: !!h, h, n: got.length};
  }, 20_000).then((r) => r.h);
  assert.match(hit.body.toString(), /now with webhooks/);
  const sig = Object.fromEntries(hit.headers['onair-signature'].split(',').map((p) => p.split('=')));
  const mac = createHmac('sha256', secret).update(`${sig.t}.`).update(hit.body).digest('hex');
  assert.equal(sig.v1, mac, 'signed with the secret the page showed');
  // the studio lists the delivery, delivered with the receiver's status
  const row = panel.locator('#wh-deliveries tr', {hasText: 'stream.updated'});
  await row.filter({hasText: 'delivered'}).first().waitFor({timeout: 20_000});
  assert.match(await row.first().innerText(), /HTTP 200/);
  // the secret is not shown again: the list the panel reads does not carry it
  const listed = await s.evaluate(async () => {
    const t = JSON.parse(localStorage.getItem('onair.session')).access_token;
    return (await fetch('/api/v1/webhooks/endpoints', {headers: {Authorization: 'Bearer ' + t}})).text();
  });
  assert.match(listed, /"url"/);
  assert.ok(!listed.includes(secret), 'the secret is not listed');
  // a new secret: shown once, and the next delivery is signed with it, not the old one
  await s.getByRole('button', {name: `New secret for ${url}`}).click();
  await s.locator('#wh-status', {hasText: 'New secret made.'}).waitFor();
  const secret2 = await s.locator('#wh-secret-value').textContent();
  assert.match(secret2, /^whsec_/);
  assert.notEqual(secret2, secret);
  await s.locator('#edit-description').fill('a second change');
  await s.locator('#edit-form').getByRole('button', {name: 'Save'}).click();
  const hit2 = await waitFor('the delivery after the rotation', async () => {
    const h = got.find((x) => x.headers['onair-event'] === 'stream.updated' && x.body.includes('a second change'));
    return {done: !!h, h, n: got.length};
  }, 20_000).then((r) => r.h);
  const sig2 = Object.fromEntries(hit2.headers['onair-signature'].split(',').map((p) => p.split('=')));
  assert.equal(sig2.v1, createHmac('sha256', secret2).update(`${sig2.t}.`).update(hit2.body).digest('hex'));
  assert.notEqual(sig2.v1, createHmac('sha256', secret).update(`${sig2.t}.`).update(hit2.body).digest('hex'));
  // paused by its owner: shown as off
  const sending = s.getByRole('button', {name: `Sending to ${url}`});
  assert.equal(await sending.getAttribute('aria-pressed'), 'true');
  await sending.click();
  await s.locator('#wh-endpoints li', {hasText: 'paused'}).waitFor();
  assert.equal(await sending.getAttribute('aria-pressed'), 'false');
  await accessible(s, 'studio with webhooks');
  await s.locator('#webhooks-panel').screenshot({path: join(SHOTS, 'studio-webhooks.png')});
  await s.getByRole('button', {name: `Delete the endpoint ${url}`}).click();
  await panel.getByText('No endpoints for this stream.').waitFor();
  noProblems();
});

test('the streamer schedules a stream, edits and cancels it; the viewer sees each', T, async () => {
  const s = S.streamer, v = S.viewer;
  const form = s.locator('#schedule-form');
  const start = new Date(Date.now() + 3 * 86400_000);
  start.setHours(19, 30, 0, 0);
  const p = (n) => String(n).padStart(2, '0');
  const local = `${start.getFullYear()}-${p(start.getMonth() + 1)}-${p(start.getDate())}T19:30`;
  await form.getByLabel('Title', {exact: true}).fill('Next week special');
  await form.getByLabel('Starts').fill(local);
  await form.getByLabel('Length (minutes)').fill('90');
  await s.getByRole('button', {name: 'Schedule', exact: true}).click();
  await s.locator('#sch-status', {hasText: 'Scheduled “Next week special”.'}).waitFor();
  await s.locator('#schedules li', {hasText: 'Next week special'}).waitFor();
  assert.match(await s.locator('#schedules li', {hasText: 'Next week special'}).innerText(), /90 min/);
  const upcoming = async (want) => waitFor(`the viewer sees ${want || 'no schedule'}`, async () => {
    await v.reload();
    await v.locator('#title', {hasText: 'Friday e2e stream'}).waitFor();
    await sleep(800);
    const t = await v.locator('#sched-panel').isVisible() ? await v.locator('#schedule').innerText() : '';
    return {done: want ? t.includes(want) : t === '', t};
  }, 15_000, 200);
  await upcoming('Next week special');
  assert.equal(new Date(Date.parse(await s.evaluate(async () => {
    const r = await fetch('/api/v1/schedules/upcoming');
    return (await r.json()).items.find((x) => x.title === 'Next week special').start;
  }))).getTime(), start.getTime(), 'the start the streamer picked, in her time zone');
  // edit: a new title and weekly on two days
  await s.getByRole('button', {name: 'Edit Next week special'}).click();
  await form.getByLabel('Title', {exact: true}).fill('Weekly special');
  await form.getByLabel('Sat').check();
  await form.getByLabel('Sun').check();
  await s.getByRole('button', {name: 'Save changes'}).click();
  await s.locator('#sch-status', {hasText: 'Saved “Weekly special”.'}).waitFor();
  const weekly = s.locator('#schedules li', {hasText: 'weekly on Sat, Sun'});
  await weekly.waitFor();
  await upcoming('Weekly special');
  // skip the next one: the series goes on from the one after
  const before = await weekly.innerText();
  await weekly.getByRole('button', {name: /^Skip Weekly special on /}).click();
  await s.locator('#sch-status', {hasText: 'Skipped “Weekly special”'}).waitFor();
  await waitFor('a later next occurrence', async () => {
    const t = await weekly.innerText();
    return {done: t !== before && /next /.test(t), t, before};
  }, 10_000);
  await accessible(s, 'studio with a schedule');
  await s.locator('#schedule-panel').screenshot({path: join(SHOTS, 'studio-schedule.png')});
  // a start in the past is refused by the server: said, and the field gets the focus
  noProblems(); // none before the refusal this step provokes
  await form.getByLabel('Title', {exact: true}).fill('Too late');
  await form.getByLabel('Starts').fill('2020-01-03T10:00');
  await s.getByRole('button', {name: 'Schedule', exact: true}).click();
  await s.locator('#sch-status[data-kind="error"]').waitFor();
  assert.equal(await s.evaluate(() => document.activeElement?.id), 'sch-start');
  assert.equal(await s.locator('#schedules li', {hasText: 'Too late'}).count(), 0);
  expected('streamer', 400);
  // cancel: gone from the studio and the viewer page
  await s.getByRole('button', {name: 'Cancel Weekly special'}).click();
  await s.locator('#sch-status', {hasText: 'Cancelled “Weekly special”.'}).waitFor();
  await s.locator('#schedules', {hasText: 'Nothing scheduled.'}).waitFor();
  await upcoming('');
  noProblems();
});

test('the streamer ends the stream; the viewer page says it is offline', T, async () => {
  await S.streamer.getByRole('button', {name: 'End stream'}).click();
  await S.streamer.getByText('The stream ended.').waitFor();
  await S.viewer.locator('#offline').waitFor({state: 'visible', timeout: 20_000});
  if (has('recording')) {
    // the recording, finalized after the end, is listed on the viewer page and plays
    const item = S.viewer.locator('#vods li', {hasText: 'Recording of'});
    await waitFor('the recording on the viewer page', async () => {
      if (await item.count()) return true;
      await S.viewer.reload();
      await S.viewer.locator('#title', {hasText: 'Friday e2e stream'}).waitFor();
      await sleep(1500);
      return item.count();
    }, 40_000, 500);
    await item.getByRole('button', {name: 'Play'}).click();
    await plays(S.viewer, 'recording');
    if (has('clips')) { // a clip of a part of the (longest) recording: seconds 2 to 8
      const rec = S.viewer.locator('#vods li', {hasText: /Recording of .* · \d{2,} s/}).first();
      await rec.getByText('Clip a part').click();
      await rec.getByLabel('From (s)').fill('2');
      await rec.getByLabel('To (s)').fill('8');
      await rec.getByLabel('Clip title').fill('The best bit');
      await rec.getByRole('button', {name: 'Cut clip'}).click();
      await waitFor('the clip is made', async () => {
        const t = await S.viewer.locator('#vod-status').innerText();
        return {done: /Clip made/.test(t), t};
      }, 30_000, 300);
      const clip = S.viewer.locator('#vods li', {hasText: 'The best bit'});
      await waitFor('the clip in the list', async () => ({done: (await clip.count()) > 0,
        list: (await S.viewer.locator('#vod-panel').innerText()).slice(0, 600)}), 10_000, 300);
      assert.match(await clip.innerText(), /\b[5-9] s\b/);
      await clip.getByRole('button', {name: 'Play'}).click();
      await plays(S.viewer, 'clip');
      await accessible(S.viewer, 'watch with a recording clip');
    }
    await shot(S.viewer, 'watch-ended');
  }
  noProblems();
});
