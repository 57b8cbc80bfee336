// onair e2e: a publisher hand-over. A second WHIP publish to a live stream replaces the first
// (media.on_second_publisher: replace): the player's session stays, it switches to the new
// publisher at its next keyframe and keeps decoding; the stream stays live; the first
// publisher's transport is closed by the relay. A new publisher with another codec (VP8 to
// H.264, issue 13 D7): the players that negotiated the old one are closed, and play again in the
// new one. With `reject`, the second publish is 409.
//
//   ONAIRD, ONAIR_PLUGIN_DIR (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch, publish, tryPublish, play, stop, stats, waitFor, sleep, frames, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird, PLUGIN_DIR} from './lib/onaird.mjs';
import {join} from 'node:path';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const skip = haveOnaird() ? false : 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)';
if (skip && REQUIRE) test('onaird is built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
const T = {timeout: 90_000, skip};

let browser = null;
const servers = [];

async function start(onSecond) {
  const s = new Onaird({
    core: {media: {on_second_publisher: onSecond}},
    plugins: {streams: {path: join(PLUGIN_DIR, 'streams.so'), config: {max_live_per_user: 100}}},
  });
  await s.start();
  servers.push(s);
  browser ??= await launch();
  return {server: s, target: await onairTarget(s.base)};
}

after(async () => {
  try {
    await browser?.close();
  } finally {
    for (const s of servers) {
      const st = await s.stop();
      assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${s.log().slice(-4000)}`);
      assert.ok(!/ERROR: (Address|Leak)Sanitizer|runtime error:/.test(s.log()), s.log().slice(-6000));
    }
  }
});

async function decoding(page, id, what, ms = 15_000) {
  const a = await stats(page, id);
  return waitFor(what, async () => {
    const b = await stats(page, id);
    return {done: frames(b) > frames(a) + 10, ...b};
  }, ms);
}

test('a second publisher takes over; the player keeps its session and decodes', T, async (t) => {
  const {server, target} = await start('replace');
  const s = await target.newStream();
  const [pubA, pubB, player] = [await browser.newPage('publisher-a'),
                                await browser.newPage('publisher-b'),
                                await browser.newPage('player')];
  try {
    const a = await publish(pubA, target.whipUrl(s.id), s.key);
    const p = await play(player, target.whepUrl(s.id), null);
    await decoding(player, p.id, 'player decodes publisher A');
    const b = await publish(pubB, target.whipUrl(s.id), s.key);
    assert.equal(b.status, 201);
    // the relay closes A's transport (DTLS close_notify)
    await waitFor('publisher A is closed by the relay', async () => {
      const x = await stats(pubA, a.id);
      return {done: x.ended || x.dtlsState === 'closed' || x.connectionState !== 'connected', ...x};
    }, 10_000);
    const after = await decoding(player, p.id, 'player decodes publisher B');
    t.diagnostic(`after the hand-over: ${frames(after)} frames, connection ${after.connectionState}`);
    assert.equal(after.connectionState, 'connected', 'the player kept its session');
    const st = await api(server.base, 'GET', `/api/v1/streams/${s.id}`);
    assert.equal(st.json.stream.status, 'live');
    const m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
    assert.equal(m.status, 200, m.text);
    assert.ok(b.location.endsWith(m.json.publisher.session), `B is the publisher: ${m.text}`);
    assert.equal(m.json.viewer_count, 1);
    await stop(pubB, b.id);
  } finally {
    for (const pg of [pubA, pubB, player]) {
      await closeAll(pg);
      await pg.close();
    }
  }
});

test('a hand-over to another codec (VP8 to H.264) closes the players that cannot take it; they play again', T, async (t) => {
  const {server, target} = await start('replace');
  const s = await target.newStream();
  const [pubA, pubB, player, again] = [await browser.newPage('publisher-a'), await browser.newPage('publisher-b'),
                                       await browser.newPage('player'), await browser.newPage('player-again')];
  try {
    await publish(pubA, target.whipUrl(s.id), s.key, {videoCodec: 'VP8'});
    const p = await play(player, target.whepUrl(s.id), null);
    assert.match(p.answer, /a=rtpmap:\d+ VP8\/90000/, 'the player gets VP8');
    assert.doesNotMatch(p.answer, /a=rtpmap:\d+ H264\/90000/);
    await decoding(player, p.id, 'player decodes publisher A (VP8)');
    const b = await publish(pubB, target.whipUrl(s.id), s.key, {videoCodec: 'H264'});
    assert.match(b.answer, /a=rtpmap:\d+ H264\/90000/, 'publisher B sends H.264');
    // the relay closes the player (DTLS close_notify): its VP8 payload type cannot carry H.264
    const ended = await waitFor('the VP8 player is closed by the relay', async () => {
      const x = await stats(player, p.id);
      return {done: x.ended, ...x};
    }, 10_000);
    t.diagnostic(`player closed: connection ${ended.connectionState}, DTLS ${ended.dtlsState}`);
    assert.ok(server.log().includes('codec_changed'), 'the relay logs why');
    // a player that comes again gets H.264 and decodes it
    const q = await play(again, target.whepUrl(s.id), null);
    assert.match(q.answer, /a=rtpmap:\d+ H264\/90000/, 'the new player gets H.264');
    await decoding(again, q.id, 'the new player decodes publisher B (H.264)');
    const m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
    assert.equal(m.json.viewer_count, 1, m.text);
    assert.equal(m.json.publisher.tracks.find((x) => x.kind === 'video').codec, 'H264');
  } finally {
    for (const pg of [pubA, pubB, player, again]) {
      await closeAll(pg);
      await pg.close();
    }
  }
});

test('with on_second_publisher: reject, a second publish is 409', T, async () => {
  const {target} = await start('reject');
  const s = await target.newStream();
  const [pubA, pubB] = [await browser.newPage('publisher-a'), await browser.newPage('publisher-b')];
  try {
    const a = await publish(pubA, target.whipUrl(s.id), s.key);
    const b = await tryPublish(pubB, target.whipUrl(s.id), s.key);
    assert.equal(b.status, 409, JSON.stringify(b));
    assert.match(b.body || b.text || JSON.stringify(b), /already_publishing/);
    await stop(pubA, a.id);
  } finally {
    for (const pg of [pubA, pubB]) {
      await closeAll(pg);
      await pg.close();
    }
  }
});
