// onair e2e: the clips plugin with real media. Chromium publishes over WHIP (VP8); a viewer
// clips the last 10 s of the live stream (from the plugin's ring buffer): its duration is
// within one keyframe interval of 10 s (ffprobe) and it plays in a <video> element; a clip
// is cut from a recording at an offset; bad input, lists, views and deletes. A private stream
// whose owner switched clipping off (409 clipping_disabled) and on again mid-stream; its clip
// plays from a signed URL without headers (206), a tampered, an expired or a recording's
// signature does not.
//
//   ONAIRD, ONAIR_PLUGIN_DIR (build/plugins); ffprobe (Debian ffmpeg)
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {join} from 'node:path';
import {execFileSync} from 'node:child_process';
import {createHmac} from 'node:crypto';
import {mkdtemp, rm} from 'node:fs/promises';
import {existsSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {launch, publish, waitFor, sleep} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird, register, PLUGIN_DIR} from './lib/onaird.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const have = haveOnaird() && existsSync(join(PLUGIN_DIR, 'clips.so'));
const skip = have ? false : `no onaird or no ${PLUGIN_DIR}/clips.so`;
if (skip && REQUIRE)
  test('onaird and the clips plugin are built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));

const T = {timeout: 180_000, skip: skip || false};
const KEYFRAME_S = 2; // clips.keyframe_interval_s below
const URL_SECRET = 'e2e-clips-url-secret';
let browser = null;
let server = null;
let dir = null;

function ffprobe(url) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name',
    '-show_entries', 'format=duration', '-of', 'json', url], {encoding: 'utf8'});
  const j = JSON.parse(out);
  return {codecs: j.streams.map((x) => x.codec_name).sort(), duration: Number(j.format.duration)};
}

before(async () => {
  if (skip) return;
  browser = await launch();
  dir = await mkdtemp(join(tmpdir(), 'onair-clips-'));
  process.env.ONAIR_CLIPS_URL_SECRET = URL_SECRET; // onaird inherits it: signatures made here
  server = new Onaird({plugins: {
    streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
    recording: {path: join(PLUGIN_DIR, 'recording.so'), config: {dir: join(dir, 'rec'), keyframe_interval_s: 2}},
    clips: {path: join(PLUGIN_DIR, 'clips.so'), config: {dir: join(dir, 'clips'), keyframe_interval_s: KEYFRAME_S}},
  }});
  await server.start();
});

after(async () => {
  try {
    await browser?.close();
  } finally {
    if (server) {
      const st = await server.stop();
      assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${server.log().slice(-4000)}`);
      assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(server.log()), server.log().slice(-6000));
    }
    if (dir) await rm(dir, {recursive: true, force: true});
  }
});

async function playsInVideo(url) {
  const page = await browser.newPage('viewer');
  try {
    return await page.evaluate(async (src) => {
      const el = document.createElement('video');
      el.muted = true;
      el.src = src;
      document.body.appendChild(el);
      await new Promise((ok, ko) => { el.onloadedmetadata = ok; el.onerror = () => ko(new Error('load ' + el.error?.code)); });
      await el.play();
      await new Promise((r) => setTimeout(r, 1500));
      return {t: el.currentTime, duration: el.duration, error: el.error?.code ?? null};
    }, url);
  } finally {
    await page.close();
  }
}

test('a clip of the last 10 s of a live stream, and one of a recording', T, async () => {
  const target = await onairTarget(server.base);
  const s = await target.newStream();
  const viewer = await register(server.base, 'clipper');
  const stranger = await register(server.base, 'stranger');
  // not live yet
  const nl = await api(server.base, 'POST', `/api/v1/streams/${s.id}/clips`, {token: viewer.token, body: {duration_s: 10}});
  assert.equal(nl.status, 409, nl.text);
  assert.equal(nl.json.code, 'not_live');
  const page = await browser.newPage('publisher');
  await publish(page, target.whipUrl(s.id), s.key);
  await waitFor('live', async () => ({done: (await api(server.base, 'GET', `/api/v1/streams/${s.id}`)).json?.stream?.status === 'live'}), 10_000);
  // a recording runs meanwhile (for the clip from a recording below)
  await sleep(1000);
  const rs = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: s.viewerToken});
  assert.equal(rs.status, 201, rs.text);
  await sleep(14_000);
  // bad input
  for (const [body, field] of [[{duration_s: 61}, 'duration_s'], [{duration_s: 4}, 'duration_s'],
                               [{duration_s: '10'}, 'duration_s'], [{title: ''}, 'title'], [{x: 1}, 'x']]) {
    const b = await api(server.base, 'POST', `/api/v1/streams/${s.id}/clips`, {token: viewer.token, body});
    assert.equal(b.status, 400, `${JSON.stringify(body)}: ${b.text}`);
    assert.equal(b.json.field, field);
  }
  const anon = await api(server.base, 'POST', `/api/v1/streams/${s.id}/clips`, {body: {duration_s: 10}});
  assert.equal(anon.status, 401);
  // the clip
  const c = await api(server.base, 'POST', `/api/v1/streams/${s.id}/clips`,
                      {token: viewer.token, body: {title: 'that moment', duration_s: 10}});
  assert.equal(c.status, 201, c.text);
  const clip = c.json.clip;
  assert.equal(clip.title, 'that moment');
  assert.equal(clip.source, 'live');
  // the ring's tracks share the timeline of Chromium's RTCP sender reports
  assert.equal(clip.av_sync, 'sender_reports', JSON.stringify(clip));
  assert.ok(Math.abs(clip.duration_ms / 1000 - 10) <= KEYFRAME_S + 0.5, JSON.stringify(clip));
  const p = ffprobe(server.base + clip.file_url);
  assert.deepEqual(p.codecs, ['opus', 'vp8']);
  assert.ok(p.duration >= 10 - 0.5 && p.duration <= 10 + KEYFRAME_S + 0.5,
            `a 10 s clip within one keyframe interval: ${p.duration} s`);
  const v = await playsInVideo(server.base + clip.file_url);
  assert.equal(v.error, null);
  assert.ok(v.t > 0.5, JSON.stringify(v));
  const th = await api(server.base, 'GET', clip.thumbnail_url);
  assert.equal(th.status, 200);
  assert.equal(th.headers.get('content-type'), 'image/jpeg');
  // views counted (the probe, the element's first request), lists per stream and per creator
  const one = await api(server.base, 'GET', `/api/v1/clips/${clip.id}`);
  assert.ok(one.json.clip.views >= 2, JSON.stringify(one.json));
  const ls = await api(server.base, 'GET', `/api/v1/streams/${s.id}/clips`);
  assert.deepEqual(ls.json.clips.map((x) => x.id), [clip.id]);
  const me = (await api(server.base, 'GET', '/api/v1/auth/me', {token: viewer.token})).json;
  const uid = me?.user?.id ?? me?.id;
  const lu = await api(server.base, 'GET', `/api/v1/users/${uid}/clips`);
  assert.deepEqual(lu.json.clips.map((x) => x.id), [clip.id], lu.text);

  // from the recording: stop it, then 3 s from 4 s in
  const st = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/stop`, {token: s.viewerToken});
  assert.equal(st.status, 200);
  const rec = (await waitFor('recording ready', async () => {
    const l = (await api(server.base, 'GET', `/api/v1/streams/${s.id}/recordings`)).json.recordings;
    return {done: l.length === 1 && l[0].state === 'ready', rec: l[0]};
  }, 30_000)).rec;
  const past = await api(server.base, 'POST', `/api/v1/recordings/${rec.id}/clips`,
                         {token: viewer.token, body: {start_s: rec.duration_ms / 1000 + 5, duration_s: 3}});
  assert.equal(past.status, 400, past.text);
  assert.equal(past.json.field, 'start_s');
  const over = await api(server.base, 'POST', `/api/v1/recordings/${rec.id}/clips`,
                         {token: viewer.token, body: {start_s: 4, duration_s: 3600}});
  assert.equal(over.status, 400, over.text);
  assert.equal(over.json.field, 'duration_s');
  const rc = await api(server.base, 'POST', `/api/v1/recordings/${rec.id}/clips`,
                       {token: viewer.token, body: {start_s: 4, duration_s: 3}});
  assert.equal(rc.status, 201, rc.text);
  assert.equal(rc.json.clip.source, 'recording');
  const rp = ffprobe(server.base + rc.json.clip.file_url);
  assert.ok(rp.duration >= 3 - 0.5 && rp.duration <= 3 + KEYFRAME_S + 0.5, `recording clip: ${rp.duration}`);

  // deletes: a stranger 403, the stream's owner may, the creator may
  const forb = await api(server.base, 'DELETE', `/api/v1/clips/${clip.id}`, {token: stranger.token});
  assert.equal(forb.status, 403, forb.text);
  const byOwner = await api(server.base, 'DELETE', `/api/v1/clips/${rc.json.clip.id}`, {token: s.viewerToken});
  assert.equal(byOwner.status, 204, byOwner.text);
  const byCreator = await api(server.base, 'DELETE', `/api/v1/clips/${clip.id}`, {token: viewer.token});
  assert.equal(byCreator.status, 204, byCreator.text);
  assert.equal((await api(server.base, 'GET', clip.file_url)).status, 404);
  await page.close();
});

// sig = hex(HMAC-SHA256 keyed with k of "<id>.<what>.<exp>"), k = HMAC-SHA256 keyed with the label of
// the secret (common-media/sign.c)
function sign(label, id, what, exp) {
  const key = createHmac('sha256', label).update(URL_SECRET).digest();
  return createHmac('sha256', key).update(`${id}.${what}.${exp}`).digest('hex');
}

test('a private stream: clipping switched by its owner, signed URLs of its clip', T, async () => {
  const target = await onairTarget(server.base);
  const s = await target.newStream({visibility: 'private'});
  const stranger = await register(server.base, 'outsider');
  const settings = `/api/v1/streams/${s.id}/clips/settings`;
  const off = await api(server.base, 'PUT', settings, {token: s.viewerToken, body: {enabled: false}});
  assert.equal(off.status, 200, off.text);
  const page = await browser.newPage('publisher');
  await publish(page, target.whipUrl(s.id), s.key);
  await waitFor('live', async () => ({done: (await api(server.base, 'GET', `/api/v1/streams/${s.id}`, {token: s.viewerToken})).json?.stream?.status === 'live'}), 10_000);
  await sleep(3000);
  const dis = await api(server.base, 'POST', `/api/v1/streams/${s.id}/clips`, {token: s.viewerToken, body: {duration_s: 5}});
  assert.equal(dis.status, 409, dis.text);
  assert.equal(dis.json.code, 'clipping_disabled');
  // on again: the ring starts from now (nothing was kept while it was off)
  const on = await api(server.base, 'PUT', settings, {token: s.viewerToken, body: {enabled: true}});
  assert.equal(on.status, 200, on.text);
  await sleep(8000);
  const c = await api(server.base, 'POST', `/api/v1/streams/${s.id}/clips`, {token: s.viewerToken, body: {duration_s: 5}});
  assert.equal(c.status, 201, c.text);
  const clip = c.json.clip;
  assert.ok(clip.duration_ms >= 4500 && clip.duration_ms <= 5000 + KEYFRAME_S * 1000 + 500, JSON.stringify(clip));
  // no headers, no access; a stranger gets no signed URL either
  assert.equal((await api(server.base, 'GET', clip.file_url)).status, 404);
  assert.equal((await api(server.base, 'GET', `/api/v1/clips/${clip.id}/url`)).status, 404);
  assert.equal((await api(server.base, 'GET', `/api/v1/clips/${clip.id}/url`, {token: stranger.token})).status, 404);
  const u = await api(server.base, 'GET', `/api/v1/clips/${clip.id}/url`, {token: s.viewerToken});
  assert.equal(u.status, 200, u.text);
  assert.ok(u.json.expires_at > Date.now(), u.text);
  const signed = await fetch(server.base + u.json.url, {headers: {Range: 'bytes=0-99'}});
  assert.equal(signed.status, 206);
  assert.equal(signed.headers.get('cache-control'), 'private, max-age=3600');
  assert.equal((await signed.arrayBuffer()).byteLength, 100);
  const th = await fetch(server.base + u.json.thumbnail_url);
  assert.equal(th.status, 200);
  assert.equal(th.headers.get('content-type'), 'image/jpeg');
  // the file URL's signature does not open the thumbnail, a tampered one nothing
  assert.equal((await fetch(server.base + u.json.url.replace('/file?', '/thumbnail?'))).status, 404);
  const bad = await fetch(server.base + u.json.url.replace(/sig=(.)/, (m, ch) => `sig=${ch === '0' ? '1' : '0'}`));
  assert.equal(bad.status, 404);
  // signatures made with the key: a valid one plays, an expired one and a recording's do not
  const future = Math.floor(Date.now() / 1000) + 600, past = Math.floor(Date.now() / 1000) - 5;
  const mine = await fetch(`${server.base}/api/v1/clips/${clip.id}/file?exp=${future}&sig=${sign('onair-clips', clip.id, 'file', future)}`,
                           {headers: {Range: 'bytes=0-'}});
  assert.equal(mine.status, 206);
  const expired = await fetch(`${server.base}/api/v1/clips/${clip.id}/file?exp=${past}&sig=${sign('onair-clips', clip.id, 'file', past)}`);
  assert.equal(expired.status, 404);
  const recKey = await fetch(`${server.base}/api/v1/clips/${clip.id}/file?exp=${future}&sig=${sign('onair-recording', clip.id, 'file', future)}`);
  assert.equal(recKey.status, 404);
  // a <video> element with the signed URL plays it
  const v = await playsInVideo(server.base + u.json.url);
  assert.equal(v.error, null);
  assert.ok(v.t > 0.5, JSON.stringify(v));
  await page.close();
});
