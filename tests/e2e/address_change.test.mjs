// onair e2e: a client's address changes mid-session (issue 13 D1). A multi-homed client (Wi-Fi +
// Ethernet, a VPN, docker bridges) moves its ICE nomination to another local address when the
// one in use goes away; the relay must follow the new pair on whichever media worker its 4-tuple
// hashes to (SO_REUSEPORT), for a publisher (its media arrives from the new address) and for a
// player (its media must be sent to the new address).
//
// This file runs twice, like gst_whip.test.mjs: the outer run re-executes it inside `unshare -n`
// (ONAIR_E2E_IN_NETNS=1) with this set-up:
//   lo up, plus 10.77.0.10/32 on lo           the relay's address (media.bind_address) and host
//                                             candidate
//   jd1, jd2, jd3: dummy devices 10.77.N.1/32 Chromium's local addresses
// Chromium runs without --allow-loopback-in-peer-connection, so its only candidates are the three
// jdN addresses (lo and 10.77.0.10 are a loopback network it ignores). Once a player decodes, the
// addresses the publisher's and the player's selected pairs use are deleted (`ip addr del`):
// Chromium nominates a pair on another address, and the player must go on decoding. That is
// done twice; media.workers is 8, so a new 4-tuple lands on another worker 7 times in 8, and the
// owner's media view (GET /api/v1/streams/{id}/media, `worker` per session) must show at least
// one session that moved to another worker (else the run proves nothing and fails as such).
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE, ONAIR_E2E_DEBUG (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {fileURLToPath} from 'node:url';
import {launch, publish, play, stats, waitFor, sleep, frames, closeAll, CHROMIUM_ARGS} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird, ONAIRD, PLUGIN_DIR} from './lib/onaird.mjs';
import {inNetns, netnsProbe, runInNetns, exitWithParent} from './lib/gst.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const DEBUG = !!process.env.ONAIR_E2E_DEBUG;
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];
const NAME = 'a publisher and a player whose nominated pairs move to other addresses keep their media';
const SERVER_IP = '10.77.0.10';
const DEVICES = ['jd1', 'jd2', 'jd3'];
const addrOf = (dev) => `10.77.${dev.slice(2)}.1`;
const SETUP = ['ip link set lo up', `ip addr add ${SERVER_IP}/32 dev lo`,
  ...DEVICES.map((d) => `(ip link add ${d} type dummy || ip link add ${d} type ifb) && ` +
                        `ip addr add ${addrOf(d)}/32 dev ${d} && ip link set ${d} up`)].join(' && ');

function skipOrFail(reason) {
  if (!reason) return false;
  if (REQUIRE) {
    test('address change prerequisites (ONAIR_E2E_REQUIRE=1)', () => assert.fail(reason));
    return 'see the failure above';
  }
  return reason;
}

if (!inNetns()) {
  let reason = null;
  if (process.env.ONAIR_URL)
    reason = 'ONAIR_URL is set, but this test must start its own onaird inside a private network namespace';
  else if (!haveOnaird())
    reason = `no onaird: ${ONAIRD} or ${PLUGIN_DIR}/streams.so missing (set ONAIRD, ONAIR_PLUGIN_DIR)`;
  reason ||= netnsProbe(SETUP);
  const skip = skipOrFail(reason);
  test(NAME, {timeout: 150_000, skip}, async (t) => {
    const r = await runInNetns(fileURLToPath(import.meta.url), {
      timeoutMs: 140_000, setup: SETUP,
      onLine: DEBUG ? (l) => process.stderr.write(`[netns] ${l}\n`) : null,
    });
    const tail = r.out.slice(-12_000);
    assert.ok(!r.timedOut, `the namespaced run timed out:\n${tail}`);
    assert.equal(r.code, 0, `the namespaced run failed (exit ${r.code ?? r.sig}):\n${tail}`);
    const skipped = r.out.match(/^\W*skipped (\d+)/m);
    if (skipped && Number(skipped[1]) > 0) {
      assert.ok(!REQUIRE, `the namespaced run skipped: ${r.out.slice(-500)}`);
      t.skip(`inside the namespace: ${r.out.slice(-500)}`);
      return;
    }
    for (const l of r.out.split('\n').filter((x) => /^\s*ℹ /.test(x) &&
                                 !/ℹ (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) /.test(x)))
      t.diagnostic(l.trim().slice(2));
  });
} else {
  exitWithParent();
  // bound to SERVER_IP: a socket on every address would answer from the kernel's choice of
  // source address (here: the client's own address), which ICE rightly ignores
  const server = new Onaird({core: {media: {public_addresses: [SERVER_IP], bind_address: SERVER_IP, workers: 8}}});
  await server.start();
  const target = await onairTarget(server.base);

  after(async () => {
    const st = await server.stop();
    const log = server.log();
    for (const m of SANITIZER)
      assert.ok(!log.includes(m), `sanitizer report in onaird output:\n${log.slice(-6000)}`);
    assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
  });

  const local = (st) => st?.pair?.local?.address ?? null;
  const devOf = (addr) => DEVICES.find((d) => addrOf(d) === addr);

  test(NAME, {timeout: 130_000}, async (t) => {
    // no loopback candidates: Chromium's candidates are the jdN addresses only
    const browser = await launch({args: CHROMIUM_ARGS.filter((a) => a !== '--allow-loopback-in-peer-connection')});
    const [pubPage, playPage] = [await browser.newPage('publisher'), await browser.newPage('player')];
    try {
      const s = await target.newStream({title: 'address change'});
      const pub = await publish(pubPage, target.whipUrl(s.id), s.key, {audio: true, width: 640, height: 360});
      const ply = await play(playPage, target.whepUrl(s.id), null);
      await waitFor('the player decodes', async () => {
        const st = await stats(playPage, ply.id);
        return {done: frames(st) > 10 && local(st) && local(await stats(pubPage, pub.id)), ...st};
      }, 20_000);
      const media = async () => {
        const r = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
        assert.equal(r.status, 200, r.text);
        return {pub: r.json.publisher?.worker, view: r.json.viewers?.[0]?.worker};
      };
      const moves = [];
      for (let round = 1; round <= 2; round++) {
        const [sp, sv] = [await stats(pubPage, pub.id), await stats(playPage, ply.id)];
        const before = {pub: local(sp), view: local(sv), workers: await media()};
        const gone = [...new Set([before.pub, before.view])];
        for (const a of gone) {
          const dev = devOf(a);
          assert.ok(dev, `round ${round}: the selected pairs use ${JSON.stringify(before)}, not a jdN address`);
          execFileSync('ip', ['addr', 'del', `${a}/32`, 'dev', dev]);
        }
        t.diagnostic(`round ${round}: publisher on ${before.pub} (worker ${before.workers.pub}), ` +
                     `player on ${before.view} (worker ${before.workers.view}); deleted ${gone.join(', ')}`);
        // Chromium notices and nominates a pair on an address that is still there (meanwhile
        // the publisher's checks on the other pairs keep it alive: media.publisher_timeout)
        const tMove = Date.now();
        const moved = await waitFor(`round ${round}: both selected pairs leave ${gone.join(', ')}`, async () => {
          const [p, v] = [await stats(pubPage, pub.id), await stats(playPage, ply.id)];
          return {done: local(p) && local(v) && !gone.includes(local(p)) && !gone.includes(local(v)),
                  pub: local(p), view: local(v), pubState: p.connectionState, viewState: v.connectionState};
        }, 30_000);
        const moveS = (Date.now() - tMove) / 1000;
        // media goes on: the player decodes frames from the publisher's new address
        const f0 = frames(await stats(playPage, ply.id));
        const after = await waitFor(`round ${round}: the player decodes after the move`, async () => {
          const v = await stats(playPage, ply.id);
          return {done: frames(v) > f0 + 30, framesDecoded: frames(v), pair: v.pair,
                  connectionState: v.connectionState, inbound: v.inbound.video};
        }, 20_000);
        const workers = await media();
        moves.push({before: before.workers, after: workers});
        t.diagnostic(`round ${round}: publisher now on ${moved.pub} (worker ${workers.pub}), player on ` +
                     `${moved.view} (worker ${workers.view}) after ${moveS} s; ${after.framesDecoded} frames decoded`);
        assert.equal(after.connectionState, 'connected');
      }
      const crossed = moves.some((m) => m.before.pub !== m.after.pub || m.before.view !== m.after.view);
      assert.ok(crossed, `no move landed on another media worker (${JSON.stringify(moves)}): ` +
                         'the run did not test what it should (1 chance in 8^4)');
    } catch (e) {
      e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
      throw e;
    } finally {
      for (const p of [pubPage, playPage]) {
        await closeAll(p);
        await p.close().catch(() => {});
      }
      await browser.close();
    }
  });
}
