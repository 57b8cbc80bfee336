// onair e2e: recording a stream with co-hosts (plugins/recording, plugins/cohosts, SDK 1.7
// media_room_watch). The owner publishes from Chromium (640x360); co-host A (320x180) is on air
// when the owner starts the recording, co-host B (480x270) goes on air after it started. Each
// host gets files of its own: the main host's recording has no `participant`, A's and B's carry
// their user id. A is removed half-way: A's file ends then (stop_reason participant_left) while
// the others go on; the owner's stop ends the rest. ffmpeg decodes every file and ffprobe finds
// VP8 + Opus at each host's own picture size. A live clip of co-host B (the clips plugin keeps a
// buffer per host) decodes at B's picture size.
//
//   ONAIRD, ONAIR_PLUGIN_DIR (build/plugins); ffmpeg / ffprobe (Debian ffmpeg)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {join} from 'node:path';
import {execFileSync} from 'node:child_process';
import {mkdtemp, rm, writeFile} from 'node:fs/promises';
import {existsSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {launch, publish, waitFor, sleep, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, api, register, haveOnaird, PLUGIN_DIR} from './lib/onaird.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const have = haveOnaird() && existsSync(join(PLUGIN_DIR, 'recording.so')) &&
    existsSync(join(PLUGIN_DIR, 'cohosts.so')) && existsSync(join(PLUGIN_DIR, 'clips.so'));
const skip = have ? false : `no onaird or no recording / cohosts plugin in ${PLUGIN_DIR}`;
if (skip && REQUIRE)
  test('onaird, recording and cohosts are built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
const T = {timeout: 180_000, skip};

let browser = null;
let server = null;
let dir = null;

after(async () => {
  try {
    await browser?.close();
  } finally {
    if (server) {
      const st = await server.stop();
      assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${server.log().slice(-4000)}`);
      assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(server.log()), server.log().slice(-6000));
    }
    if (dir) await rm(dir, {recursive: true, force: true}).catch(() => {});
  }
});

const userId = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sub;

// The file as a player downloads it; ffmpeg decodes all of it (it exits non-zero on what it
// cannot read); ffprobe tells the codecs, the picture size and the last video frame's time.
async function probe(fileUrl) {
  const res = await fetch(fileUrl);
  assert.equal(res.status, 200, fileUrl);
  const url = join(dir, `probe-${Date.now()}.webm`);
  await writeFile(url, Buffer.from(await res.arrayBuffer()));
  execFileSync('ffmpeg', ['-v', 'error', '-i', url, '-f', 'null', '-'], {stdio: 'ignore', timeout: 60_000});
  const j = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_entries',
    'stream=codec_name,width,height', '-of', 'json', url], {encoding: 'utf8', timeout: 60_000}));
  const pts = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries',
    'packet=pts_time', '-of', 'csv=p=0', url], {encoding: 'utf8', timeout: 60_000})
      .split('\n').map(Number).filter((x) => Number.isFinite(x) && x > 0);
  const v = j.streams.find((x) => x.codec_name === 'vp8') || {};
  return {codecs: j.streams.map((x) => x.codec_name).sort(), width: v.width, height: v.height,
          seconds: Math.max(0, ...pts)};
}

test('every host of a recorded stream gets files of their own, which decode', T, async (t) => {
  dir = await mkdtemp(join(tmpdir(), 'onair-corec-'));
  const recDir = join(dir, 'recordings');
  server = new Onaird({
    plugins: {
      streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
      cohosts: {path: join(PLUGIN_DIR, 'cohosts.so')},
      recording: {path: join(PLUGIN_DIR, 'recording.so'), config: {keyframe_interval_s: 2, dir: recDir}},
      clips: {path: join(PLUGIN_DIR, 'clips.so'), config: {dir: join(dir, 'clips')}},
    },
  });
  await server.start();
  browser = await launch();
  const target = await onairTarget(server.base);
  const s = await target.newStream();
  const owner = s.viewerToken;
  const a = await register(server.base, 'cohost_a');
  const b = await register(server.base, 'cohost_b');
  const aId = userId(a.token), bId = userId(b.token);
  const pages = [await browser.newPage('host'), await browser.newPage('cohost-a'),
                 await browser.newPage('cohost-b')];
  const [hostPage, aPage, bPage] = pages;
  const cohostWhip = target.whipUrl(s.id) + '?role=cohost';
  const onAir = (who) => waitFor(`${who} is on air`, async () => {
    const r = await api(server.base, 'GET', `/api/v1/streams/${s.id}/cohosts`);
    return {done: r.json?.cohosts?.some((c) => c.user_id === who && c.on_air), list: r.json?.cohosts};
  }, 15_000);
  try {
    await publish(hostPage, target.whipUrl(s.id), s.key, {width: 640, height: 360});
    for (const g of [a, b]) {
      let r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/cohosts/invite`,
                        {token: owner, body: {user_id: userId(g.token)}});
      assert.equal(r.status, 201, r.text);
      r = await api(server.base, 'POST', `/api/v1/cohosts/invites/${r.json.invite.id}/accept`,
                    {token: g.token});
      assert.equal(r.status, 200, r.text);
    }
    await publish(aPage, cohostWhip, a.token, {width: 320, height: 180});
    await onAir(aId);
    await sleep(1000); // the tracks are announced after DTLS
    let r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/start`, {token: owner});
    assert.equal(r.status, 201, r.text);
    await sleep(2000);
    await publish(bPage, cohostWhip, b.token, {width: 480, height: 270});
    await onAir(bId);
    await sleep(7000);
    // a live clip of co-host B (the clips plugin buffers every host): B's own picture
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/clips`,
                  {token: owner, body: {participant: bId, duration_s: 5}});
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.clip.participant, bId, r.text);
    const clip = await probe(server.base + r.json.clip.file_url);
    t.diagnostic(`co-host B's live clip: ${JSON.stringify(clip)}`);
    assert.deepEqual(clip.codecs, ['opus', 'vp8']);
    assert.ok(clip.width > 0 && clip.width <= 480 && clip.seconds >= 2, JSON.stringify(clip));
    // someone not publishing: nothing buffered
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/clips`,
                  {token: owner, body: {participant: userId(owner), duration_s: 5}});
    assert.equal(r.status, 409, r.text);
    assert.equal(r.json.code, 'not_live');
    // A is removed: A's media ends, and so does A's file; the others record on
    r = await api(server.base, 'DELETE', `/api/v1/streams/${s.id}/cohosts/${aId}`, {token: owner});
    assert.equal(r.status, 200, r.text);
    const aDone = await waitFor('co-host A\'s recording is finalized while the stream records', async () => {
      const l = await api(server.base, 'GET', `/api/v1/streams/${s.id}/recordings`, {token: owner});
      const mine = (l.json?.recordings || []).filter((x) => x.participant === aId);
      return {done: mine.length > 0 && mine.every((x) => x.state === 'ready'), list: l.json?.recordings};
    }, 30_000);
    assert.ok(aDone.list.some((x) => !x.participant && x.state === 'recording'),
              `the main host still records: ${JSON.stringify(aDone.list)}`);
    await sleep(2000);
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/recording/stop`, {token: owner});
    assert.equal(r.status, 200, r.text);
    const {list} = await waitFor('every recording is finalized', async () => {
      const l = await api(server.base, 'GET', `/api/v1/streams/${s.id}/recordings`, {token: owner});
      const recs = l.json?.recordings || [];
      return {done: recs.length >= 3 && recs.every((x) => x.state === 'ready'), list: recs};
    }, 30_000);
    // newest first; a host whose encoder changed its picture size (Chromium adapts to CPU) has
    // a file per size, all of them theirs
    const by = (who) => list.filter((x) => (x.participant ?? null) === who);
    for (const who of [null, aId, bId]) assert.ok(by(who).length >= 1, `${who}: ${JSON.stringify(list)}`);
    assert.equal(by(null).length + by(aId).length + by(bId).length, list.length, JSON.stringify(list));
    assert.equal(by(aId)[0].stop_reason, 'participant_left', JSON.stringify(by(aId)));
    assert.equal(by(bId)[0].stop_reason, 'stopped', JSON.stringify(by(bId)));
    const want = [[null, 640, 360, 8], [aId, 320, 180, 3], [bId, 480, 270, 3]];
    for (const [who, w, h, min] of want) {
      let seconds = 0, widest = 0, tallest = 0;
      for (const rec of by(who)) {
        assert.equal(rec.stream, s.id);
        assert.equal(rec.video, 'vp8', JSON.stringify(rec));
        assert.equal(rec.audio, 'opus', JSON.stringify(rec));
        const p = await probe(server.base + rec.file_url);
        t.diagnostic(`${who ?? 'main host'}: ${JSON.stringify(p)}, ${rec.duration_ms} ms, ${rec.stop_reason}`);
        assert.deepEqual(p.codecs, ['opus', 'vp8']);
        seconds += p.seconds;
        widest = Math.max(widest, p.width);
        tallest = Math.max(tallest, p.height);
      }
      assert.equal(widest, w, `${who ?? 'main host'}: the host's own picture`);
      assert.equal(tallest, h, `${who ?? 'main host'}: the host's own picture`);
      assert.ok(seconds >= min, `${who ?? 'main host'}: ${seconds} s of video decoded, want ${min}+`);
    }
    // the co-hosts' recordings are the stream's: the same access rules, one list
    const one = await api(server.base, 'GET', `/api/v1/recordings/${by(bId)[0].id}`);
    assert.equal(one.status, 200, one.text);
    assert.equal(one.json.recording.participant, bId);
  } finally {
    for (const p of pages) await closeAll(p);
  }
});
