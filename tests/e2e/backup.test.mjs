// onair e2e: backup ingest and publisher health (issue 16). A stream has a primary and a backup
// WHIP publisher (?role=backup), both headless Chromium; a Chromium WHEP player watches. When the
// primary stops sending media (its senders' tracks replaced by null: ICE, DTLS and RTCP go on,
// as when an encoder stalls), the player is switched to the backup after media.failover_timeout
// (3 s) without renegotiating and keeps decoding; when the primary sends again it is switched
// back (auto failback); the owner switches by hand (POST .../backup/activate). Each switch is a
// stream.source_switched message on the stream's WebSocket topic. The owner's socket gets
// health.update once a second, and a health.report from the streamer's app is merged into it.
// A second test degrades a publisher's link (a UDP proxy dropping 20 % of its RTP): the grade
// goes to poor or critical with a loss reason, and back when the loss stops. A third caps the
// publisher's bitrate (settings.max_bitrate_kbps, sent as REMB) and watches Chromium obey; a
// fourth caps the simulcast layer every viewer gets (settings.max_layer).
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch, publish, play, stop, stats, waitFor, sleep, frames} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird, register} from './lib/onaird.mjs';
import {startProxy} from './lib/udp_proxy.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const skip = haveOnaird() ? false : 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)';
if (skip && REQUIRE) test('onaird is built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
const T = {timeout: 180_000, skip};
const SANITIZER = /ERROR: (Address|Leak)Sanitizer|runtime error:/;

let browser = null;
let server = null;
let target = null;

async function setup() {
  if (server) return;
  server = new Onaird();
  await server.start();
  target = await onairTarget(server.base);
  browser = await launch();
}

after(async () => {
  try {
    await browser?.close();
  } finally {
    if (server) {
      const st = await server.stop();
      assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${server.log().slice(-4000)}`);
      assert.ok(!SANITIZER.test(server.log()), server.log().slice(-6000));
    }
  }
});

const wsUrl = () => server.base.replace(/^http/, 'ws') + '/ws';
const pause = (page, id, paused) => page.evaluate(([i, p]) => window.e2e.pauseMedia(i, p), [id, paused]);
const messages = async (page, sock) => (await page.evaluate((i) => window.e2e.wsMessages(i), sock)) || [];
const wsSend = (page, sock, msg) => page.evaluate(([i, m]) => window.e2e.wsSend(i, m), [sock, msg]);

async function decoding(page, id, what, ms = 15_000) {
  const a = await stats(page, id);
  return waitFor(what, async () => {
    const b = await stats(page, id);
    return {done: frames(b) > frames(a) + 10, ...b};
  }, ms);
}

async function switches(page, sock, n, what) {
  const r = await waitFor(what, async () => {
    const m = (await messages(page, sock)).filter((x) => x.type === 'stream.source_switched');
    return {done: m.length >= n, m};
  }, 20_000);
  return r.m.map((x) => x.data);
}

test('the backup takes over when the primary stops sending, the primary takes back, the owner switches by hand',
     T, async (t) => {
  await setup();
  const s = await target.newStream({title: 'backup'});
  const owner = s.viewerToken;
  const [pubA, pubB, player] = [await browser.newPage('primary'), await browser.newPage('backup'),
                                await browser.newPage('player')];
  try {
    const a = await publish(pubA, target.whipUrl(s.id), s.key);
    const b = await publish(pubB, target.whipUrl(s.id), s.key, {query: {role: 'backup'}});
    assert.equal(b.status, 201);
    const p = await play(player, target.whepUrl(s.id), null);
    await decoding(player, p.id, 'the player decodes the primary');
    const sock = await player.evaluate(([u, i, tk]) => window.e2e.watchStream(u, i, tk),
                                       [wsUrl(), s.id, owner]);
    let m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: owner});
    assert.equal(m.json.active_source, 'primary', m.text);
    assert.ok(a.location.endsWith(m.json.publisher.session), m.text);
    assert.equal(m.json.standby?.role, 'backup', m.text);
    assert.ok(b.location.endsWith(m.json.standby.session), m.text);

    // the primary stops sending: the player moves to the backup and keeps decoding
    const t0 = Date.now();
    await pause(pubA, a.id, true);
    let ev = await switches(player, sock, 1, 'stream.source_switched to the backup');
    t.diagnostic(`primary paused: switched after ${Date.now() - t0} ms (failover_timeout 3 s): ${JSON.stringify(ev[0])}`);
    assert.deepEqual([ev[0].stream, ev[0].from, ev[0].to, ev[0].reason], [s.id, 'primary', 'backup', 'primary_silent']);
    const onBackup = await decoding(player, p.id, 'the player decodes the backup');
    assert.equal(onBackup.connectionState, 'connected', 'the player kept its session');
    m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: owner});
    assert.equal(m.json.active_source, 'backup', m.text);
    const st = await api(server.base, 'GET', `/api/v1/streams/${s.id}`);
    assert.equal(st.json.stream.status, 'live');

    // the primary sends again: back to it (auto failback after media.failback_delay)
    await pause(pubA, a.id, false);
    ev = await switches(player, sock, 2, 'stream.source_switched back to the primary');
    assert.deepEqual([ev[1].from, ev[1].to, ev[1].reason], ['backup', 'primary', 'primary_returned']);
    await decoding(player, p.id, 'the player decodes the primary again');

    // by hand: to the backup and back
    let r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/backup/activate`,
                      {token: owner, body: {source: 'backup'}});
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, {stream: s.id, active: 'backup', primary: true, backup: true, switched: true});
    ev = await switches(player, sock, 3, 'the manual switch');
    assert.deepEqual([ev[2].to, ev[2].reason], ['backup', 'manual']);
    await decoding(player, p.id, 'the player decodes the backup (manual)');
    await sleep(3000); // a manual choice holds: no failback although the primary sends
    m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: owner});
    assert.equal(m.json.active_source, 'backup', m.text);
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/backup/activate`,
                  {token: owner, body: {source: 'backup'}});
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.switched, false, 'already active');
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/backup/activate`,
                  {token: owner, body: {source: 'primary'}});
    assert.equal(r.json.active, 'primary', r.text);
    ev = await switches(player, sock, 4, 'the manual switch back');
    assert.deepEqual([ev[3].to, ev[3].reason], ['primary', 'manual']);

    // bad input
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/backup/activate`,
                  {token: owner, body: {source: 'sideways'}});
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.field, 'source');
    const stranger = await register(server.base, 'stranger');
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/backup/activate`,
                  {token: stranger.token, body: {source: 'backup'}});
    assert.equal(r.status, 403, r.text);
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/backup/activate`, {body: {source: 'backup'}});
    assert.equal(r.status, 401, r.text);
    r = await api(server.base, 'GET', `/api/v1/streams/${s.id}/health`, {token: stranger.token});
    assert.equal(r.status, 403, r.text);

    // health: the owner's socket gets health.update; the streamer's own report is merged in
    await waitFor('health.update on the owner\'s socket', async () => {
      const u = (await messages(player, sock)).filter((x) => x.type === 'health.update');
      return {done: u.length >= 2 && u.every((x) => x.data.stream === s.id), n: u.length};
    }, 10_000);
    await wsSend(player, sock, {type: 'health.report', id: 71,
                                data: {stream_id: s.id, fps: 30, cpu_pct: 97, frames: 60, dropped_frames: 40}});
    await wsSend(player, sock, {type: 'health.report', id: 72, data: {stream_id: s.id, cpu_pct: 150}});
    const replies = await waitFor('answers to health.report', async () => {
      const all = await messages(player, sock);
      const x = all.find((y) => y.id === 71), y = all.find((z) => z.id === 72);
      return {done: !!(x && y), x, y};
    }, 10_000);
    assert.equal(replies.x.type, 'result', JSON.stringify(replies.x));
    assert.equal(replies.x.data.accepted, true);
    assert.equal(replies.y.type, 'error', JSON.stringify(replies.y));
    assert.equal(replies.y.data.field, 'cpu_pct', JSON.stringify(replies.y));
    const merged = await waitFor('a health.update with the client report', async () => {
      const u = (await messages(player, sock)).filter((x) => x.type === 'health.update' && x.data.client);
      return {done: u.length > 0, u: u.at(-1)?.data};
    }, 10_000);
    t.diagnostic(`merged: ${JSON.stringify({grade: merged.u.grade, reasons: merged.u.reasons})}`);
    assert.ok(merged.u.reasons.includes('cpu 97 %'), JSON.stringify(merged.u.reasons));
    assert.ok(merged.u.reasons.includes('dropped frames 40 %'), JSON.stringify(merged.u.reasons));
    assert.ok(['poor', 'critical'].includes(merged.u.grade), merged.u.grade);
    const h = await api(server.base, 'GET', `/api/v1/streams/${s.id}/health`, {token: owner});
    assert.equal(h.status, 200, h.text);
    assert.equal(h.json.live, true);
    assert.ok(h.json.history.length >= 5, `history: ${h.json.history.length}`);
    assert.ok(h.json.history.some((e) => e.source === 'backup'), 'the backup had its turn');
    assert.deepEqual(h.json.switches.map((x) => x.reason),
                     ['primary_silent', 'primary_returned', 'manual', 'manual']);
    assert.equal(h.json.client.cpu_pct, 97);

    // the backup leaves: no switch to it any more
    await stop(pubB, b.id);
    await waitFor('no standby', async () => {
      const x = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: owner});
      return {done: x.json.standby === null, ...x.json};
    }, 10_000);
    r = await api(server.base, 'POST', `/api/v1/streams/${s.id}/backup/activate`,
                  {token: owner, body: {source: 'backup'}});
    assert.equal(r.status, 409, r.text);
    assert.equal(r.json.code, 'backup_not_publishing');
    await decoding(player, p.id, 'the player still decodes the primary');
    await stop(player, p.id);
    await stop(pubA, a.id);
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    for (const pg of [pubA, pubB, player]) await pg.close().catch(() => {});
  }
});

test('health grades follow loss on the publisher\'s link', T, async (t) => {
  await setup();
  const s = await target.newStream({title: 'health'});
  const proxy = await startProxy({relayPort: server.mediaPort});
  const [pub, player] = [await browser.newPage('publisher'), await browser.newPage('player')];
  const health = async () => (await api(server.base, 'GET', `/api/v1/streams/${s.id}/health`,
                                        {token: s.viewerToken})).json;
  try {
    const a = await publish(pub, target.whipUrl(s.id), s.key, {answerReplace: proxy.answerReplace});
    const p = await play(player, target.whepUrl(s.id), null);
    await decoding(player, p.id, 'the player decodes');
    const clean = await waitFor('a good grade without loss', async () => {
      const h = await health();
      return {done: ['excellent', 'good'].includes(h.current?.grade), current: h.current};
    }, 20_000);
    t.diagnostic(`clean: ${clean.current.grade} ${JSON.stringify(clean.current.reasons)}`);
    proxy.lossUp = 0.2;
    const lossy = await waitFor('a poor or critical grade for the loss', async () => {
      const h = await health();
      const c = h.current;
      return {done: ['poor', 'critical'].includes(c?.grade) && c.reasons.some((x) => /^loss /.test(x)),
              current: c && {grade: c.grade, reasons: c.reasons}};
    }, 20_000);
    t.diagnostic(`20 % loss: ${JSON.stringify(lossy.current)}`);
    proxy.lossUp = 0;
    const again = await waitFor('a good grade once the loss stops', async () => {
      const h = await health();
      return {done: ['excellent', 'good'].includes(h.current?.grade), current: h.current};
    }, 30_000);
    t.diagnostic(`after: ${again.current.grade} ${JSON.stringify(again.current.reasons)}`);
    const h = await health();
    assert.ok(h.history.some((e) => e.loss_pct >= 5), 'the history has the loss');
    await stop(player, p.id);
    await stop(pub, a.id);
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    await proxy.close();
    for (const pg of [pub, player]) await pg.close().catch(() => {});
  }
});

test('the stream\'s settings reach its relay; the owner\'s bitrate cap reaches the Chromium publisher (REMB)', T, async (t) => {
  await setup();
  const s = await target.newStream({title: 'cap'});
  const [pub, player] = [await browser.newPage('publisher'), await browser.newPage('player')];
  const videoKbps = async () => {
    const h = (await api(server.base, 'GET', `/api/v1/streams/${s.id}/health`, {token: s.viewerToken})).json;
    const v = h.current?.publisher?.tracks?.find((x) => x.kind === 'video');
    return v ? v.bitrate_kbps : null;
  };
  try {
    // settings made before the stream is live reach its relay when the publisher's video starts
    let r = await api(server.base, 'PATCH', `/api/v1/streams/${s.id}`,
                      {token: s.viewerToken, body: {settings: {failover_timeout_s: 7, max_layer: 1}}});
    assert.equal(r.status, 200, r.text);
    const a = await publish(pub, target.whipUrl(s.id), s.key);
    const p = await play(player, target.whepUrl(s.id), null);
    await decoding(player, p.id, 'the player decodes');
    await waitFor('the stream\'s settings in its relay', async () => {
      const m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
      const x = m.json?.settings;
      return {done: x?.failover_timeout_ms === 7000 && x?.max_layer === 1, settings: x};
    }, 10_000);
    const free = await waitFor('the publisher sends more than 400 kbit/s', async () => {
      const k = await videoKbps();
      return {done: k > 400, kbps: k};
    }, 40_000);
    r = await api(server.base, 'PATCH', `/api/v1/streams/${s.id}`,
                  {token: s.viewerToken, body: {settings: {max_bitrate_kbps: 150}}});
    assert.equal(r.status, 200, r.text);
    const m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
    assert.equal(m.json.settings.max_publisher_bitrate_kbps, 150, m.text);
    const capped = await waitFor('the publisher under the cap', async () => {
      const k = await videoKbps();
      return {done: k !== null && k <= 200, kbps: k};
    }, 30_000);
    t.diagnostic(`video ${free.kbps} kbit/s uncapped, ${capped.kbps} kbit/s with a 150 kbit/s cap`);
    await decoding(player, p.id, 'the player still decodes');
    await stop(player, p.id);
    await stop(pub, a.id);
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    for (const pg of [pub, player]) await pg.close().catch(() => {});
  }
});

test('the owner\'s max_layer caps every viewer of a simulcast publisher', T, async (t) => {
  await setup();
  const s = await target.newStream({title: 'max layer'});
  const [pub, player] = [await browser.newPage('publisher'), await browser.newPage('player')];
  const layerOf = async () => {
    const m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
    return m.json?.viewers?.[0]?.video_layer;
  };
  const setCap = async (maxLayer) => {
    const r = await api(server.base, 'PATCH', `/api/v1/streams/${s.id}`,
                        {token: s.viewerToken, body: {settings: {max_layer: maxLayer}}});
    assert.equal(r.status, 200, r.text);
  };
  try {
    const a = await publish(pub, target.whipUrl(s.id), s.key, {simulcast: true, audio: false});
    await waitFor('the relay receives three layers', async () => {
      const m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
      const layers = m.json?.publisher?.tracks?.find((x) => x.kind === 'video')?.layers || [];
      return {done: layers.length === 3 && layers.every((l) => l.active), layers};
    }, 30_000);
    const p = await play(player, target.whepUrl(s.id), null, {audio: false});
    const width = async () => (await stats(player, p.id))?.inbound?.video?.frameWidth ?? 0;
    const top = await waitFor('the player gets the top layer', async () => {
      const l = await layerOf();
      return {done: l === 2, layer: l, width: await width()};
    }, 20_000);
    await setCap(0);
    const low = await waitFor('the player is moved to the lowest layer', async () => {
      const l = await layerOf(), w = await width();
      return {done: l === 0 && w > 0 && w < top.width, layer: l, width: w};
    }, 20_000);
    await decoding(player, p.id, 'the player decodes the lowest layer');
    await setCap(null);
    const back = await waitFor('the cap lifted: the player climbs again', async () => {
      const l = await layerOf();
      return {done: l > 0, layer: l, width: await width()};
    }, 40_000);
    t.diagnostic(`layer/width: ${top.layer}/${top.width} free, ${low.layer}/${low.width} with max_layer 0, ` +
                 `${back.layer}/${back.width} after`);
    await stop(player, p.id);
    await stop(pub, a.id);
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    for (const pg of [pub, player]) await pg.close().catch(() => {});
  }
});
