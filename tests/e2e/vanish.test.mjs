// onair e2e: a publisher that vanishes without a goodbye (issue 13). Its network goes away (the
// UDP proxy it reaches the relay through drops everything: a crash, a closed laptop, a lost
// Wi-Fi), so no DTLS close_notify and no DELETE ever come. After media.publisher_timeout seconds
// without a packet (3 here, 5 by default) the relay ends the publish: the player's transport is
// closed (DTLS close_notify), the stream ends, and a page watching the stream on the WebSocket
// gets stream.ended. Before, players stayed frozen until media.consent_timeout (30 s).
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch, publish, play, stats, waitFor, frames, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird} from './lib/onaird.mjs';
import {startProxy} from './lib/udp_proxy.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const skip = haveOnaird() ? false : 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)';
if (skip && REQUIRE) test('onaird is built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];
const TIMEOUT_S = 3;

let server = null;
after(async () => {
  if (!server) return;
  const st = await server.stop();
  const log = server.log();
  for (const m of SANITIZER) assert.ok(!log.includes(m), `sanitizer report:\n${log.slice(-6000)}`);
  assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
});

test('a publisher that vanishes: players are closed and the stream ends within seconds', {timeout: 90_000, skip}, async (t) => {
  server = new Onaird({core: {media: {publisher_timeout: TIMEOUT_S}}});
  await server.start();
  const target = await onairTarget(server.base);
  const proxy = await startProxy({relayPort: server.mediaPort});
  const browser = await launch();
  const [pubPage, playPage] = [await browser.newPage('publisher'), await browser.newPage('player')];
  try {
    const s = await target.newStream({title: 'vanish'});
    await publish(pubPage, target.whipUrl(s.id), s.key, {answerReplace: proxy.answerReplace});
    const ply = await play(playPage, target.whepUrl(s.id), null);
    const ws = await playPage.evaluate(([u, id]) => window.e2e.watchStream(u, id),
                                       [server.base.replace(/^http/, 'ws') + '/ws', s.id]);
    await waitFor('the player decodes', async () => ({done: frames(await stats(playPage, ply.id)) > 10}), 20_000);
    const wsMsgs = () => playPage.evaluate((id) => window.e2e.wsMessages(id), ws);
    await waitFor('the WebSocket watch is answered', async () => {
      const m = await wsMsgs();
      return {done: m.some((x) => x.type === 'result'), m};
    }, 10_000);

    const t0 = Date.now();
    proxy.blackhole = true; // the publisher is gone: not a packet more, no goodbye
    const ended = await waitFor('the player is closed by the relay', async () => {
      const x = await stats(playPage, ply.id);
      return {done: x.ended, ...x};
    }, (TIMEOUT_S + 9) * 1000);
    const closedAfter = (Date.now() - t0) / 1000;
    const m = await waitFor('stream.ended on the WebSocket', async () => {
      const msgs = await wsMsgs();
      return {done: msgs.some((x) => x.type === 'stream.ended'), msgs};
    }, 5_000);
    const st = await api(server.base, 'GET', `/api/v1/streams/${s.id}`);
    t.diagnostic(`player closed ${closedAfter} s after the publisher vanished (DTLS ${ended.dtlsState}); ` +
                 `WebSocket: ${m.msgs.map((x) => x.type).join(', ')}; stream ${st.json?.stream?.status}; ` +
                 `proxy ${JSON.stringify(proxy.stats)}`);
    assert.ok(closedAfter >= TIMEOUT_S - 1, `closed after ${closedAfter} s: not before the timeout`);
    assert.equal(st.json.stream.status, 'ended');
    assert.match(server.log(), /closed: no_media/);
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-2000)}`;
    throw e;
  } finally {
    for (const pg of [pubPage, playPage]) {
      await closeAll(pg);
      await pg.close().catch(() => {});
    }
    await browser.close();
    await proxy.close();
  }
});
