// onair e2e: the recording plugin with real media. Chromium publishes over WHIP (VP8, then
// H.264); the owner starts and stops a recording; ffprobe checks the file's codecs and
// duration; a Chromium <video> element plays it and seeks (206 answers); a kill -9 in the
// middle of a recording leaves a playable file that the next start finalizes; a private
// stream's recording needs the owner's token or a signed URL; a quota and a full disk (a
// small tmpfs) stop a recording cleanly.
//
//   ONAIRD, ONAIR_PLUGIN_DIR (build/plugins); ffprobe (Debian ffmpeg); root for the tmpfs
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {join} from 'node:path';
import {execFileSync} from 'node:child_process';
import {mkdtemp, rm, readdir} from 'node:fs/promises';
import {existsSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {launch, publish, stop, waitFor, sleep} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird, PLUGIN_DIR} from './lib/onaird.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const have = haveOnaird() && existsSync(join(PLUGIN_DIR, 'recording.so'));
const skip = have ? false : `no onaird or no ${PLUGIN_DIR}/recording.so`;
if (skip && REQUIRE)
  test('onaird and the recording plugin are built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));

const T = {timeout: 180_000, skip: skip || false};
let browser = null;
const servers = [];
const dirs = [];

async function tempDir(prefix) {
  const d = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

async function startServer(recConfig = {}, core = {}) {
  const dir = recConfig.dir || await tempDir('onair-rec-');
  const s = new Onaird({core, plugins: {
    streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
    recording: {path: join(PLUGIN_DIR, 'recording.so'),
                config: {keyframe_interval_s: 2, ...recConfig, dir}},
  }});
  await s.start();
  servers.push(s);
  return {server: s, target: await onairTarget(s.base), dir};
}

function ffprobe(url) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name,codec_type',
    '-show_entries', 'format=duration,format_name', '-of', 'json', url], {encoding: 'utf8'});
  const j = JSON.parse(out);
  return {codecs: j.streams.map((x) => x.codec_name).sort(), duration: Number(j.format.duration),
          format: j.format.format_name};
}

// Decode the whole file (ffmpeg fails on what it cannot read): the time of its last video
// frame, in seconds.
function decodedSeconds(path) {
  execFileSync('ffmpeg', ['-v', 'error', '-i', path, '-f', 'null', '-'], {stdio: 'ignore'});
  const out = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries',
    'packet=pts_time', '-of', 'csv=p=0', path], {encoding: 'utf8'});
  const times = out.split('\n').map(Number).filter((x) => Number.isFinite(x) && x > 0);
  return Math.max(0, ...times);
}

async function recordings(base, stream, token) {
  const r = await api(base, 'GET', `/api/v1/streams/${stream}/recordings`, {token});
  assert.equal(r.status, 200, r.text);
  return r.json.recordings;
}

async function untilReady(base, stream, token) {
  return waitFor('the recording is finalized', async () => {
    const list = await recordings(base, stream, token);
    const ready = list.filter((x) => x.state === 'ready');
    return {done: ready.length >= 1 && list.every((x) => x.state !== 'recording'), list, ready};
  }, 30_000);
}

before(async () => {
  if (!skip) browser = await launch();
});

after(async () => {
  // stop everything and unmount first, then report: a failed check must not leave an onaird
  // running or a tmpfs mounted
  const problems = [];
  try {
    await browser?.close();
  } finally {
    for (const s of servers) {
      const st = await s.stop();
      if (!s.killed && st?.code !== 0)
        problems.push(`onaird exit ${JSON.stringify(st)}:\n${s.log().slice(-4000)}`);
      if (!s.killed && /ERROR: (Address|Leak)Sanitizer|runtime error:/.test(s.log()))
        problems.push(s.log().slice(-6000));
    }
    for (const d of dirs) {
      try { execFileSync('umount', [d], {stdio: 'ignore'}); } catch {}
      await rm(d, {recursive: true, force: true}).catch(() => {});
    }
  }
  assert.deepEqual(problems, []);
});

async function recordFor(server, s, page, seconds, opts = {}) {
  await publish(page, server.target.whipUrl(s.id), s.key, opts);
  await waitFor('the stream is live', async () => {
    const r = await api(server.base, 'GET', `/api/v1/streams/${s.id}`, {token: s.viewerToken});
    return {done: r.json?.stream?.status === 'live'};
  }, 10_000);
  await sleep(1000); // the tracks are announced after DTLS
  const t0 = Date.now();
  const r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.recording.state, 'recording');
  const again = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
  assert.equal(again.status, 409, again.text);
  assert.equal(again.json.code, 'already_recording');
  await sleep(seconds * 1000);
  const st = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/stop`, {token: s.viewerToken});
  assert.equal(st.status, 200, st.text);
  return (Date.now() - t0) / 1000;
}

test('VP8: a recording plays in <video>, seeks (206), ffprobe agrees', T, async () => {
  const {server, target, dir} = await startServer();
  server.target = target;
  const s = await target.newStream();
  const page = await browser.newPage('publisher');
  // not live: 409
  const nl = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
  assert.equal(nl.status, 409, nl.text);
  assert.equal(nl.json.code, 'not_live');
  const elapsed = await recordFor(server, s, page, 10);
  const {ready} = await untilReady(server.base, s.id);
  const rec = ready[0];
  assert.equal(rec.format, 'webm');
  assert.equal(rec.video, 'vp8');
  assert.equal(rec.audio, 'opus');
  // Chromium sends RTCP sender reports: the tap carries them, the tracks are aligned by them
  assert.equal(rec.av_sync, 'sender_reports', JSON.stringify(rec));
  assert.ok(rec.size > 100_000, JSON.stringify(rec));
  const url = server.base + rec.file_url;
  const p = ffprobe(url);
  assert.deepEqual(p.codecs, ['opus', 'vp8']);
  assert.ok(Math.abs(p.duration - elapsed) <= 1.0, `duration ${p.duration} s, recorded for ${elapsed} s`);
  assert.ok(Math.abs(rec.duration_ms / 1000 - p.duration) <= 0.5, JSON.stringify(rec));
  // nothing left but the file and its thumbnail
  const owners = await readdir(dir);
  const left = (await readdir(join(dir, owners[0]))).sort();
  assert.equal(left.length, 2, `files: ${left}`);
  assert.ok(left[0].endsWith('.jpg') && left[1].endsWith('.webm') && !left[1].includes('.rec.'), `${left}`);
  const th = await api(server.base, 'GET', rec.thumbnail_url);
  assert.equal(th.status, 200);
  assert.equal(th.headers.get('content-type'), 'image/jpeg');
  // a <video> element plays it and seeks to the middle
  const viewer = await browser.newPage('viewer');
  const v = await viewer.evaluate(async (src) => {
    const el = document.createElement('video');
    el.muted = true;
    el.src = src;
    document.body.appendChild(el);
    await new Promise((ok, ko) => { el.onloadedmetadata = ok; el.onerror = () => ko(new Error('load ' + el.error?.code)); });
    await el.play();
    const t0 = el.currentTime;
    await new Promise((r) => setTimeout(r, 1500));
    const played = el.currentTime - t0;
    const target = el.duration / 2;
    await new Promise((ok) => { el.onseeked = ok; el.currentTime = target; });
    const afterSeek = el.currentTime;
    await new Promise((r) => setTimeout(r, 1000));
    return {duration: el.duration, played, target, afterSeek, later: el.currentTime, error: el.error?.code ?? null};
  }, url);
  assert.equal(v.error, null);
  assert.ok(v.played > 0.5, `currentTime advances: ${JSON.stringify(v)}`);
  assert.ok(Math.abs(v.duration - p.duration) < 1, JSON.stringify(v));
  assert.ok(Math.abs(v.afterSeek - v.target) < 0.5 && v.later > v.afterSeek, `seek: ${JSON.stringify(v)}`);
  assert.match(server.log(), new RegExp(`/api/v1/recordings/${rec.id}/file\\S* 206`),
               'the element asked for byte ranges and got 206');
  // the stream's recording list and the recording itself for anyone (public stream)
  const one = await api(server.base, 'GET', `/api/v1/recordings/${rec.id}`);
  assert.equal(one.status, 200);
  assert.equal(one.json.recording.stream, s.id);
  // stop again: 409; delete by someone else: 403; by the owner: 204 and the file is gone
  const st2 = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/stop`, {token: s.viewerToken});
  assert.equal(st2.status, 409);
  assert.equal(st2.json.code, 'not_recording');
  const other = await (await import('./lib/onaird.mjs')).register(server.base, 'other');
  const forb = await api(server.base, 'DELETE', `/api/v1/recordings/${rec.id}`, {token: other.token});
  assert.equal(forb.status, 403, forb.text);
  const startOther = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: other.token});
  assert.equal(startOther.status, 403, startOther.text);
  const del = await api(server.base, 'DELETE', `/api/v1/recordings/${rec.id}`, {token: s.viewerToken});
  assert.equal(del.status, 204, del.text);
  assert.equal((await api(server.base, 'GET', rec.file_url.replace(/\/file$/, ''))).status, 404);
  await viewer.close();
  await page.close();
});

test('H.264: a fragmented MP4 while recording, an MP4 with its index after', T, async () => {
  const {server, target} = await startServer();
  server.target = target;
  const s = await target.newStream();
  const page = await browser.newPage('publisher');
  const elapsed = await recordFor(server, s, page, 6, {videoCodec: 'H264'});
  const {ready} = await untilReady(server.base, s.id);
  const rec = ready[0];
  assert.equal(rec.format, 'mp4');
  const p = ffprobe(server.base + rec.file_url);
  assert.deepEqual(p.codecs, ['h264', 'opus']);
  assert.ok(Math.abs(p.duration - elapsed) <= 1.0, `duration ${p.duration} s, recorded for ${elapsed} s`);
  const viewer = await browser.newPage('viewer');
  const v = await viewer.evaluate(async (src) => {
    const el = document.createElement('video');
    el.muted = true;
    el.src = src;
    document.body.appendChild(el);
    await new Promise((ok, ko) => { el.onloadedmetadata = ok; el.onerror = () => ko(new Error('load ' + el.error?.code)); });
    await el.play();
    await new Promise((r) => setTimeout(r, 1500));
    return {t: el.currentTime, error: el.error?.code ?? null, w: el.videoWidth, h: el.videoHeight};
  }, server.base + rec.file_url);
  assert.equal(v.error, null);
  assert.ok(v.t > 0.5, JSON.stringify(v));
  // the MP4's picture size is the SPS's (not a placeholder): what the element shows
  assert.deepEqual([rec.width, rec.height], [v.w, v.h], JSON.stringify({rec, v}));
  await viewer.close();
  await page.close();
});

test('VP9: WebM with VP9 and Opus', T, async () => {
  const {server, target} = await startServer();
  server.target = target;
  const s = await target.newStream();
  const page = await browser.newPage('publisher');
  const elapsed = await recordFor(server, s, page, 5, {videoCodec: 'VP9'});
  const {ready} = await untilReady(server.base, s.id);
  const rec = ready[0];
  assert.equal(rec.format, 'webm');
  assert.equal(rec.video, 'vp9');
  const p = ffprobe(server.base + rec.file_url);
  assert.deepEqual(p.codecs, ['opus', 'vp9']);
  // the file starts at the first keyframe after the start: Chromium's VP9 encoder takes longer
  // to answer the keyframe request than its VP8 one (measured once: about 1 s on a loaded machine)
  assert.ok(p.duration <= elapsed + 0.5 && p.duration >= elapsed - 1.5,
            `duration ${p.duration} s, recorded for ${elapsed} s`);
  const viewer = await browser.newPage('viewer');
  const v = await viewer.evaluate(async (src) => {
    const el = document.createElement('video');
    el.muted = true;
    el.src = src;
    document.body.appendChild(el);
    await new Promise((ok, ko) => { el.onloadedmetadata = ok; el.onerror = () => ko(new Error('load ' + el.error?.code)); });
    await el.play();
    await new Promise((r) => setTimeout(r, 1500));
    return {t: el.currentTime, error: el.error?.code ?? null};
  }, server.base + rec.file_url);
  assert.equal(v.error, null);
  assert.ok(v.t > 0.5, JSON.stringify(v));
  await viewer.close();
  await page.close();
});

test('settings.record_on_start records from going live to the end of the stream', T, async () => {
  const {server, target} = await startServer();
  const s = await target.newStream();
  const on = await api(server.base, 'PATCH', `/api/v1/streams/${s.id}`,
                       {token: s.viewerToken, body: {settings: {record_on_start: true}}});
  assert.equal(on.status, 200, on.text);
  const page = await browser.newPage('publisher');
  const w = await publish(page, target.whipUrl(s.id), s.key);
  await waitFor('recording', async () => {
    const l = await recordings(server.base, s.id, s.viewerToken);
    return {done: l.some((x) => x.state === 'recording')};
  }, 15_000);
  await sleep(4000);
  await stop(page, w.id); // DELETE of the WHIP resource ends the stream, and the recording
  const {list, ready} = await untilReady(server.base, s.id, s.viewerToken);
  assert.equal(list.length, 1, `one recording (no empty segments left): ${JSON.stringify(list)}`);
  assert.equal(ready[0].stop_reason, 'stream_ended');
  const p = ffprobe(server.base + ready[0].file_url);
  assert.deepEqual(p.codecs, ['opus', 'vp8']);
  assert.ok(p.duration >= 3, `duration ${p.duration}`);
  await page.close();
});

test('kill -9 mid-recording: the file plays, the next start finalizes it', T, async () => {
  const data = await tempDir('onair-rec-data-');
  const dir = await tempDir('onair-rec-files-');
  const core = {storage: {backend: 'sqlite', data_dir: data}};
  const {server, target} = await startServer({dir}, core);
  server.target = target;
  const s = await target.newStream();
  const page = await browser.newPage('publisher');
  await publish(page, target.whipUrl(s.id), s.key);
  await waitFor('live', async () => ({done: (await api(server.base, 'GET', `/api/v1/streams/${s.id}`)).json?.stream?.status === 'live'}), 10_000);
  await sleep(1000);
  const r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
  assert.equal(r.status, 201, r.text);
  await sleep(8000);
  server.killed = true;
  server.proc.kill('SIGKILL');
  await server.exited;
  await page.close();
  // the file being written plays up to its last few seconds
  const owners = await readdir(dir);
  assert.equal(owners.length, 1);
  const files = await readdir(join(dir, owners[0]));
  const raw = files.find((f) => f.includes('.rec.'));
  assert.ok(raw, `a raw file: ${files}`);
  const secs = decodedSeconds(join(dir, owners[0], raw));
  assert.ok(secs >= 5, `decodable video after kill -9: ${secs} s`);
  // a new onaird on the same data: the recording is finalized and listed
  const again = new Onaird({core, plugins: {
    streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
    recording: {path: join(PLUGIN_DIR, 'recording.so'), config: {dir}},
  }});
  await again.start();
  servers.push(again);
  const {ready} = await untilReady(again.base, s.id, s.viewerToken);
  const rec = ready[0];
  assert.equal(rec.recovered, true);
  assert.equal(rec.stop_reason, 'crash');
  const p = ffprobe(again.base + rec.file_url);
  assert.deepEqual(p.codecs, ['opus', 'vp8']);
  assert.ok(p.duration >= 5 && p.duration <= 9.5, `duration ${p.duration}`);
  assert.ok(!(await readdir(join(dir, owners[0]))).some((f) => f.includes('.rec.')), 'the raw file is gone');
});

test('private streams: the owner or a signed URL; others get 404', T, async () => {
  const {server, target} = await startServer();
  server.target = target;
  const s = await target.newStream({visibility: 'private'});
  const page = await browser.newPage('publisher');
  await recordFor(server, s, page, 3);
  const {ready} = await untilReady(server.base, s.id, s.viewerToken);
  const rec = ready[0];
  const anon = await api(server.base, 'GET', rec.file_url);
  assert.equal(anon.status, 404, anon.text);
  assert.equal((await api(server.base, 'GET', `/api/v1/streams/${s.id}/recordings`)).status, 404);
  const {register} = await import('./lib/onaird.mjs');
  const other = await register(server.base, 'stranger');
  assert.equal((await api(server.base, 'GET', rec.file_url, {token: other.token})).status, 404);
  assert.equal((await api(server.base, 'GET', `/api/v1/recordings/${rec.id}/url`, {token: other.token})).status, 404);
  const own = await fetch(server.base + rec.file_url, {headers: {Authorization: 'Bearer ' + s.viewerToken, Range: 'bytes=0-99'}});
  assert.equal(own.status, 206);
  assert.equal(own.headers.get('cache-control'), 'private, max-age=3600');
  // a signed URL for a player that cannot send headers
  const u = await api(server.base, 'GET', `/api/v1/recordings/${rec.id}/url`, {token: s.viewerToken});
  assert.equal(u.status, 200, u.text);
  const signed = await fetch(server.base + u.json.url, {headers: {Range: 'bytes=0-99'}});
  assert.equal(signed.status, 206);
  const bad = await fetch(server.base + u.json.url.replace(/sig=(.)/, (m, c) => `sig=${c === '0' ? '1' : '0'}`));
  assert.equal(bad.status, 404);
  const expired = await fetch(server.base + u.json.url.replace(/exp=\d+/, 'exp=1000'));
  assert.equal(expired.status, 404);
  await page.close();
});

test('a quota and a full disk stop a recording cleanly', T, async () => {
  // quota: 1 MiB per streamer
  {
    const {server, target} = await startServer({quota_mb: 1});
    server.target = target;
    const s = await target.newStream();
    const page = await browser.newPage('publisher');
    await publish(page, target.whipUrl(s.id), s.key);
    await waitFor('live', async () => ({done: (await api(server.base, 'GET', `/api/v1/streams/${s.id}`)).json?.stream?.status === 'live'}), 10_000);
    await sleep(1000);
    const r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
    assert.equal(r.status, 201, r.text);
    const {ready} = await untilReady(server.base, s.id, s.viewerToken);
    assert.equal(ready[0].stop_reason, 'quota');
    const again = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
    assert.equal(again.status, 507, again.text);
    assert.equal(again.json.code, 'quota_exceeded');
    await page.close();
  }
  // a full disk: a 3 MiB tmpfs (CI runs as root)
  {
    const dir = await tempDir('onair-rec-tmpfs-');
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', dir]);
    } catch (e) {
      assert.fail(`cannot mount a tmpfs for the disk-full test (needs root): ${e.message}`);
    }
    const {server, target} = await startServer({dir, min_free_mb: 0});
    server.target = target;
    const s = await target.newStream();
    const page = await browser.newPage('publisher');
    await publish(page, target.whipUrl(s.id), s.key);
    await waitFor('live', async () => ({done: (await api(server.base, 'GET', `/api/v1/streams/${s.id}`)).json?.stream?.status === 'live'}), 10_000);
    await sleep(1000);
    const r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
    assert.equal(r.status, 201, r.text);
    const {list} = await waitFor('the recording stops on a full disk', async () => {
      const l = await recordings(server.base, s.id, s.viewerToken);
      return {done: l.length >= 1 && l.every((x) => x.state !== 'recording'), list: l};
    }, 60_000);
    assert.equal(list[0].stop_reason, 'disk_full', JSON.stringify(list));
    // nothing else broke: the stream is live, the server answers, a new start says 507
    const live = await api(server.base, 'GET', `/api/v1/streams/${s.id}`);
    assert.equal(live.json.stream.status, 'live');
    const again = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
    assert.equal(again.status, 507, again.text);
    assert.equal(again.json.code, 'insufficient_storage');
    // what was written plays
    const p = ffprobe(server.base + list[0].file_url);
    assert.ok(p.codecs.includes('vp8'), JSON.stringify(p));
    await page.close();
    await server.stop();
    servers.splice(servers.indexOf(server), 1);
    execFileSync('umount', [dir]);
  }
});
