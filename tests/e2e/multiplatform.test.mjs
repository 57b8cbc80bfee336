// onair e2e: restreaming (plugins/multiplatform, issue 18) of a WebRTC publisher. Chromium
// publishes H.264 over WHIP; the owner's destination, a Debian nginx with libnginx-mod-rtmp
// started here on a free port, gets it as FLV: ffprobe on the nginx side sees H.264 and AAC (the
// Opus transcoded). A VP8 publisher cannot be restreamed without video transcoding: adding a
// destination to its stream answers 422 video_codec_unsupported.
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {spawn, execFile} from 'node:child_process';
import {existsSync} from 'node:fs';
import {mkdtemp, writeFile} from 'node:fs/promises';
import {createServer} from 'node:net';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {launch, publish, waitFor, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird, PLUGIN_DIR} from './lib/onaird.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const RTMP_MODULE = '/usr/lib/nginx/modules/ngx_rtmp_module.so';
const skip = !haveOnaird() ? 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)'
  : !existsSync(RTMP_MODULE) ? 'no libnginx-mod-rtmp' : false;
if (skip && REQUIRE) test('onaird and nginx-rtmp are there (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
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

async function startNginx() {
  const dir = await mkdtemp(join(tmpdir(), 'nginx-rtmp-'));
  const port = await freeTcpPort();
  await writeFile(join(dir, 'nginx.conf'), `load_module ${RTMP_MODULE};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
worker_processes 1;
events { worker_connections 64; }
rtmp { server { listen 127.0.0.1:${port}; application app { live on; record off; } } }
`);
  const proc = spawn('/usr/sbin/nginx', ['-p', dir, '-c', 'nginx.conf', '-g', 'daemon off; master_process off;'],
                     {stdio: 'ignore'});
  return {proc, url: `rtmp://127.0.0.1:${port}/app`};
}

function probe(url) {
  return new Promise((resolve) => {
    execFile('ffprobe', ['-v', 'error', '-rw_timeout', '8000000', '-show_streams', '-of', 'json', url],
             {timeout: 30_000}, (err, stdout) => {
               if (err) return resolve(null);
               try {
                 const streams = JSON.parse(stdout).streams || [];
                 resolve(Object.fromEntries(streams.map((s) => [s.codec_type, s.codec_name])));
               } catch { resolve(null); }
             });
  });
}

let server = null;
let nginx = null;
after(async () => {
  nginx?.proc.kill('SIGKILL');
  if (!server) return;
  const st = await server.stop();
  const log = server.log();
  for (const m of SANITIZER) assert.ok(!log.includes(m), `sanitizer report:\n${log.slice(-6000)}`);
  assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
});

test('a Chromium WHIP publisher is restreamed to nginx-rtmp as H.264 + AAC; VP8 is refused', {timeout: 120_000, skip}, async (t) => {
  nginx = await startNginx();
  process.env.ONAIR_MULTIPLATFORM_KEY = '5a'.repeat(32);
  server = new Onaird({plugins: {
    streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}},
    multiplatform: {path: join(PLUGIN_DIR, 'multiplatform.so'), config: {}},
  }});
  await server.start();
  const target = await onairTarget(server.base);
  const browser = await launch();
  const [vp8Page, h264Page] = [await browser.newPage('vp8'), await browser.newPage('h264')];
  try {
    const vp8 = await target.newStream({title: 'vp8'});
    const h264 = await target.newStream({title: 'h264'});
    const token = vp8.viewerToken; // the owner's
    const c = await api(server.base, 'POST', '/api/v1/multiplatform/connections',
                        {token, body: {name: 'nginx', url: nginx.url, stream_key: 'e2ekey'}});
    assert.equal(c.status, 201, c.text);
    const cid = c.json.connection.id;

    await publish(vp8Page, target.whipUrl(vp8.id), vp8.key, {videoCodec: 'VP8'});
    await waitFor('the VP8 track in the relay', async () => {
      const m = await api(server.base, 'GET', `/api/v1/streams/${vp8.id}/media`, {token});
      return m.json?.publisher?.tracks?.some((x) => x.kind === 'video' && x.codec === 'VP8' &&
                                                    x.layers[0].packets > 0);
    }, 20_000);
    const refused = await api(server.base, 'PUT', `/api/v1/streams/${vp8.id}/multiplatform`,
                              {token, body: {destinations: [cid]}});
    assert.equal(refused.status, 422, refused.text);
    assert.equal(refused.json.code, 'video_codec_unsupported');
    await closeAll(vp8Page);

    await publish(h264Page, target.whipUrl(h264.id), h264.key, {videoCodec: 'H264'});
    await waitFor('the H.264 track in the relay', async () => {
      const m = await api(server.base, 'GET', `/api/v1/streams/${h264.id}/media`, {token});
      return m.json?.publisher?.tracks?.some((x) => x.kind === 'video' && x.codec === 'H264' &&
                                                    x.layers[0].packets > 0);
    }, 20_000);
    const put = await api(server.base, 'PUT', `/api/v1/streams/${h264.id}/multiplatform`,
                          {token, body: {destinations: [cid], start_with_stream: true}});
    assert.equal(put.status, 200, put.text);
    const live = await waitFor('the destination live', async () => {
      const r = await api(server.base, 'GET', `/api/v1/streams/${h264.id}/multiplatform`, {token});
      const d = r.json?.multiplatform?.destinations?.[0];
      return {done: d?.state === 'live', ...d};
    }, 30_000, 500);
    t.diagnostic(`destination: ${JSON.stringify(live)}`);
    const seen = await waitFor('ffprobe on nginx sees H.264 + AAC', async () => {
      const p = await probe(`${nginx.url}/e2ekey`);
      return {done: p?.video === 'h264' && p?.audio === 'aac', ...p};
    }, 40_000, 1000);
    assert.equal(seen.video, 'h264');
    assert.equal(seen.audio, 'aac');
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    for (const pg of [vp8Page, h264Page]) {
      await closeAll(pg);
      await pg.close().catch(() => {});
    }
    await browser.close();
  }
});

// Chromium offers VP8 before H.264. A stream with restream destinations set before it goes live
// gets H.264 anyway (the WHIP answer prefers it: multiplatform.video_preference), and is
// restreamed; a stream without destinations keeps Chromium's first choice, VP8.
test('WHIP prefers H.264 from Chromium\'s default offer when the stream has destinations', {timeout: 120_000, skip}, async (t) => {
  assert.ok(server && nginx, 'the first test started onaird and nginx');
  const target = await onairTarget(server.base);
  const browser = await launch();
  const [plainPage, destPage] = [await browser.newPage('plain'), await browser.newPage('dest')];
  const codecOf = async (sid, token) => {
    const m = await api(server.base, 'GET', `/api/v1/streams/${sid}/media`, {token});
    const v = m.json?.publisher?.tracks?.find((x) => x.kind === 'video' && x.layers[0].packets > 0);
    return v?.codec;
  };
  try {
    const plain = await target.newStream({title: 'default codecs'});
    const dest = await target.newStream({title: 'default codecs, restreamed'});
    const token = dest.viewerToken; // the owner's
    const c = await api(server.base, 'POST', '/api/v1/multiplatform/connections',
                        {token, body: {name: 'nginx-pref', url: nginx.url, stream_key: 'e2epref'}});
    assert.equal(c.status, 201, c.text);
    const put = await api(server.base, 'PUT', `/api/v1/streams/${dest.id}/multiplatform`,
                          {token, body: {destinations: [c.json.connection.id], start_with_stream: true}});
    assert.equal(put.status, 200, put.text);

    await publish(plainPage, target.whipUrl(plain.id), plain.key);
    const plainCodec = await waitFor('the plain stream\'s video track', async () => {
      const codec = await codecOf(plain.id, plain.viewerToken);
      return codec && {done: true, codec};
    }, 20_000);
    assert.equal(plainCodec.codec, 'VP8', 'Chromium offers VP8 first');
    await closeAll(plainPage);

    await publish(destPage, target.whipUrl(dest.id), dest.key);
    const destCodec = await waitFor('the restreamed stream\'s video track', async () => {
      const codec = await codecOf(dest.id, token);
      return codec && {done: true, codec};
    }, 20_000);
    assert.equal(destCodec.codec, 'H264');
    const seen = await waitFor('ffprobe on nginx sees H.264 + AAC', async () => {
      const p = await probe(`${nginx.url}/e2epref`);
      return {done: p?.video === 'h264' && p?.audio === 'aac', ...p};
    }, 40_000, 1000);
    t.diagnostic(`nginx: ${JSON.stringify(seen)}`);
    assert.equal(seen.video, 'h264');
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    for (const pg of [plainPage, destPage]) {
      await closeAll(pg);
      await pg.close().catch(() => {});
    }
    await browser.close();
  }
});
