// onair e2e: robustness while streaming. Chromium publishes (WHIP) and plays (WHEP) through
// onaird; once frames flow, Node sprays the relay's UDP media port for ~5 s, from several
// source ports, with junk (lib/fuzz.mjs): random bytes of 1..1500, garbled / truncated STUN
// with a valid header, ICE binding requests carrying the sessions' real ufrags but a wrong
// MESSAGE-INTEGRITY, DTLS-looking records (first byte 20..63), RTP-looking packets (first byte
// 0x80..0xBF, sometimes the sessions' real SSRCs) and RTCP compounds with bad lengths.
// The session must keep flowing: the player's framesDecoded grows in every second of the burst
// and after it, the publisher stays connected and sending, onair_media_dropped_total (summed
// over workers) grows, /healthz answers 200, and onaird exits cleanly without sanitizer reports.
//
// (2) the same junk (less STUN) *from the publisher's and the player's own address and port*:
// Node's dgram cannot send from a port Chromium holds, so lib/spoof_udp.py writes the UDP header
// itself on a raw socket (root / CAP_NET_RAW; the test skips without it). That junk is not
// dropped as from an unknown sender: it reaches the sessions' DTLS and SRTP paths
// (onair_media_srtp_errors_total must grow), and the sessions must not notice.
//
// Env: as whip_whep.test.mjs (ONAIR_URL, ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE=1, ...), and
//   ONAIR_E2E_FUZZ_MS     length of the burst (default 5000)
//   ONAIR_E2E_FUZZ_RATE   datagrams per second (default 2000)
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {createSocket} from 'node:dgram';
import {spawn, spawnSync} from 'node:child_process';
import {fileURLToPath} from 'node:url';
import {launch, publish, play, stop, stats, waitFor, sleep, frames, samples, closeAll} from './lib/browser.mjs';
import {startTarget, metrics} from './lib/onaird.mjs';
import {junk, ufragOf, ssrcsOf, candidatesOf} from './lib/fuzz.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const BURST_MS = Number(process.env.ONAIR_E2E_FUZZ_MS || 5000);
const RATE = Number(process.env.ONAIR_E2E_FUZZ_RATE || 2000);
const SOCKETS = 8;
const SPOOF = fileURLToPath(new URL('./lib/spoof_udp.py', import.meta.url));
const PYTHON = process.env.PYTHON || 'python3';
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];

const {server, target, skip: noRelay} = await startTarget();
let skip = noRelay;
if (skip && REQUIRE) {
  const reason = skip;
  test('the media relay is there (ONAIR_E2E_REQUIRE=1)', () => assert.fail(reason));
  skip = 'see the failure above';
}

let browser = null;
before(async () => {
  if (!skip) browser = await launch();
});
after(async () => {
  try {
    await browser?.close();
  } finally {
    if (server) {
      const st = await server.stop();
      const log = server.log();
      for (const m of SANITIZER)
        assert.ok(!log.includes(m), `sanitizer report in onaird output:\n${log.slice(-6000)}`);
      assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
    }
  }
});

// Send junk to host:port at `rate`/s for `ms` from SOCKETS fresh ports. Replies (the relay's
// 401s to bad-integrity checks, say) are counted. -> {sent: {kind: n}, total, replies, errors}
async function spray(host, port, ctx, ms, rate) {
  const socks = await Promise.all(Array.from({length: SOCKETS}, () => new Promise((res, rej) => {
    const s = createSocket('udp4');
    s.once('error', rej);
    s.bind(0, '127.0.0.1', () => res(s));
  })));
  const out = {sent: {}, total: 0, replies: 0, replyKinds: {}, errors: 0};
  for (const s of socks) {
    s.on('error', () => out.errors++);
    s.on('message', (m) => {
      out.replies++;
      const k = m.length >= 2 ? '0x' + m.readUInt16BE(0).toString(16).padStart(4, '0') : 'short';
      out.replyKinds[k] = (out.replyKinds[k] || 0) + 1;
    });
  }
  try {
    const tickMs = 10;
    const perTick = Math.max(1, Math.round(rate * tickMs / 1000));
    const end = Date.now() + ms;
    while (Date.now() < end) {
      for (let i = 0; i < perTick; i++) {
        const {kind, buf} = junk(ctx);
        out.sent[kind] = (out.sent[kind] || 0) + 1;
        out.total++;
        socks[out.total % SOCKETS].send(buf, port, host, (e) => { if (e) out.errors++; });
      }
      await sleep(tickMs);
    }
    await sleep(200); // late replies
  } finally {
    await Promise.all(socks.map((s) => new Promise((r) => s.close(r))));
  }
  return out;
}

async function healthz(base) {
  const r = await fetch(base + '/healthz');
  return {status: r.status, body: await r.text()};
}

// Publish + play, wait for media, run `burst(ctx)` while sampling the player every second,
// then check that both sessions still flow and the relay is fine. `burst` gets
// {cand: {address, port}, usernames, ssrcs, pubPorts, playerPorts} and returns {total, ...};
// `expect(delta, burstResult)` checks the metrics deltas.
async function underFire(t, burst, expect) {
  const s = await target.newStream({title: 'fuzz e2e'});
  const pub = await browser.newPage('publisher');
  const ply = await browser.newPage('player');
  try {
    const w = await publish(pub, target.whipUrl(s.id), s.key);
    const r = await play(ply, target.whepUrl(s.id), null);
    await waitFor('player: first decoded frame and audio', async () => {
      const st = await stats(ply, r.id);
      return {done: frames(st) > 0 && samples(st) > 0, ...st};
    }, 10_000);

    // what a spoofer could know: the relay's candidate, both sessions' ufrags and ports, the SSRCs
    const cand = candidatesOf(w.answer).find((c) => c.address === '127.0.0.1') || candidatesOf(w.answer)[0];
    assert.ok(cand, `a host candidate in the WHIP answer:\n${w.answer}`);
    const ctx = {
      cand,
      usernames: [[w.answer, w.offer], [r.answer, r.offer]].map(([a, o]) => `${ufragOf(a)}:${ufragOf(o)}`),
      ssrcs: [...ssrcsOf(w.offer), ...ssrcsOf(r.answer)],
      pubPorts: candidatesOf(w.offer).filter((c) => c.address === cand.address).map((c) => c.port),
      playerPorts: candidatesOf(r.offer).filter((c) => c.address === cand.address).map((c) => c.port),
      // the addresses the sessions use: the selected pairs' local candidates (Chromium may
      // reach the relay's 127.0.0.1 from another local address of the machine)
      pubSource: (await stats(pub, w.id)).pair?.local,
      playerSource: (await stats(ply, r.id)).pair?.local,
    };
    t.diagnostic(`relay ${cand.address}:${cand.port}; usernames ${ctx.usernames.join(', ')}; ssrcs ${ctx.ssrcs.join(', ')}; ` +
                 `publisher ports ${ctx.pubPorts}, player ports ${ctx.playerPorts}`);

    const m0 = await metrics(target.base);
    const pub0 = await stats(pub, w.id);
    const ply0 = await stats(ply, r.id);

    // the burst, with the player sampled every second
    const during = [];
    let spraying = true;
    const sampler = (async () => {
      let prev = ply0;
      while (spraying) {
        await sleep(1000);
        if (!spraying) break;
        const cur = await stats(ply, r.id);
        during.push({frames: frames(cur), d: frames(cur) - frames(prev), state: cur.connectionState, ended: cur.ended});
        prev = cur;
      }
    })();
    let res;
    try {
      res = await burst(ctx);
    } finally {
      spraying = false;
      await sampler;
    }
    t.diagnostic(`player each second of the burst: ${during.map((x) => `+${x.d}`).join(' ')} frames`);
    assert.ok(during.length >= Math.floor(BURST_MS / 1000) - 1, 'the player was sampled during the burst');
    for (const [i, x] of during.entries()) {
      assert.ok(x.d > 0, `second ${i + 1} of the burst: the player decoded no frame: ${JSON.stringify(during)}`);
      assert.ok(!x.ended, `second ${i + 1} of the burst: the player's session ended: ${JSON.stringify(during)}`);
    }

    // after the burst: still flowing both ways
    const ply1 = await stats(ply, r.id);
    const pub1 = await stats(pub, w.id);
    await sleep(2000);
    const ply2 = await stats(ply, r.id);
    const pub2 = await stats(pub, w.id);
    assert.ok(frames(ply2) > frames(ply1) + 10, `after the burst: framesDecoded ${frames(ply1)} -> ${frames(ply2)} over 2 s`);
    assert.ok(samples(ply2) > samples(ply1), `after the burst: audio samples ${samples(ply1)} -> ${samples(ply2)}`);
    for (const [name, x] of [['publisher', pub2], ['player', ply2]]) {
      assert.ok(!x.ended, `the ${name}'s session ended: ${JSON.stringify(x)}`);
      assert.equal(x.connectionState, 'connected', `${name}: connectionState`);
      assert.ok(['connected', 'completed'].includes(x.iceConnectionState), `${name}: iceConnectionState ${x.iceConnectionState}`);
      assert.equal(x.dtlsState, 'connected', `${name}: DTLS transport`);
    }
    const sent = (st) => st.outbound.filter((o) => o.kind === 'video').reduce((a, o) => a + (o.packetsSent || 0), 0);
    assert.ok(sent(pub2) > sent(pub1), `the publisher keeps sending video: ${sent(pub1)} -> ${sent(pub2)}`);
    t.diagnostic(`player: ${frames(ply0)} frames before, ${frames(ply2)} 2 s after; ` +
                 `publisher video packets ${sent(pub0)} -> ${sent(pub2)}`);

    // the relay counted the junk and still answers
    const m1 = await metrics(target.base);
    const delta = (name) => m1.sum(name) - m0.sum(name);
    t.diagnostic(`relay deltas: packets_in +${delta('onair_media_packets_in_total')}, dropped +${delta('onair_media_dropped_total')}, ` +
                 `srtp_errors +${delta('onair_media_srtp_errors_total')}; sessions ${m1.sum('onair_media_sessions')}`);
    expect(delta, res);
    assert.ok(delta('onair_media_packets_in_total') >= res.total * 0.5, 'onair_media_packets_in_total counted the junk');
    assert.equal(m1.sum('onair_media_sessions'), 2, 'the two sessions are still there');
    const h = await healthz(target.base);
    assert.equal(h.status, 200, `/healthz after the burst: ${JSON.stringify(h)}`);

    await stop(ply, r.id);
    await stop(pub, w.id);
  } catch (e) {
    if (server) e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-3000)}`;
    throw e;
  } finally {
    for (const p of [pub, ply]) {
      await closeAll(p);
      await p.close().catch(() => {});
    }
  }
}

test('(1) a burst of junk datagrams at the media port from fresh ports: the session keeps flowing',
     {timeout: 60_000, skip: skip || false}, (t) => underFire(t, async (ctx) => {
  const b = await spray(ctx.cand.address, ctx.cand.port, ctx, BURST_MS, RATE);
  t.diagnostic(`sent ${b.total} datagrams ${JSON.stringify(b.sent)}; ${b.replies} replies ` +
               `${JSON.stringify(b.replyKinds)}; ${b.errors} send errors`);
  return b;
}, (delta, b) => {
  // every one of them comes from an unknown address: all dropped (kernel drops aside)
  assert.ok(delta('onair_media_dropped_total') >= b.total * 0.5,
            `onair_media_dropped_total grew by ${delta('onair_media_dropped_total')} for ${b.total} junk datagrams`);
}));

// Can we send from someone else's port? (raw socket: root or CAP_NET_RAW, and python3)
function spoofProbe() {
  const r = spawnSync(PYTHON, [SPOOF, '--probe'], {encoding: 'utf8', timeout: 10_000});
  if (r.error) return `no ${PYTHON}: ${r.error.message}`;
  if (r.status !== 0) return `no raw socket for spoofed source ports (needs root / CAP_NET_RAW): ${(r.stderr || '').trim().split('\n').pop()}`;
  return null;
}

test('(2) junk from the publisher\'s and the player\'s own address and port (raw socket): nothing breaks',
     {timeout: 60_000, skip: skip || (!REQUIRE && spoofProbe()) || false}, (t) => underFire(t, async (ctx) => {
  const noRaw = spoofProbe(); // under ONAIR_E2E_REQUIRE=1 a missing raw socket is a failure
  assert.ok(!noRaw, noRaw);
  assert.ok(ctx.pubSource?.port && ctx.playerSource?.port && !/:/.test(ctx.pubSource.address + ctx.playerSource.address),
            `both sessions' IPv4 addresses and ports: ${JSON.stringify(ctx)}`);
  const ports = [ctx.pubSource, ctx.playerSource].map((c) => `${c.address}:${c.port}`);
  const proc = spawn(PYTHON, [SPOOF, String(ctx.cand.port), ports.join(','), String(BURST_MS / 1000), String(RATE)],
                     {stdio: ['ignore', 'pipe', 'pipe']});
  let out = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => { out += d; });
  const killer = () => proc.kill('SIGKILL');
  process.once('exit', killer);
  const timer = setTimeout(killer, BURST_MS + 10_000);
  const code = await new Promise((r) => proc.once('exit', (c, sig) => r(c ?? sig)));
  clearTimeout(timer);
  process.removeListener('exit', killer);
  assert.equal(code, 0, `spoof_udp.py: ${out}`);
  const sent = JSON.parse(out.trim().split('\n').pop());
  const total = Object.values(sent).reduce((a, n) => a + n, 0);
  t.diagnostic(`spoofed ${total} datagrams from ${ports.join(', ')}: ${JSON.stringify(sent)}`);
  return {total, sent};
}, (delta, b) => {
  // RTP/RTCP-looking junk from a session's address must reach SRTP and fail authentication
  assert.ok(delta('onair_media_srtp_errors_total') >= (b.sent.rtp + b.sent.rtcp) * 0.5,
            `onair_media_srtp_errors_total grew by ${delta('onair_media_srtp_errors_total')} for ${b.sent.rtp + b.sent.rtcp} RTP/RTCP-looking datagrams`);
  // DTLS-looking junk from a session's address reaches its DTLS peer, which discards it
  // (RFC 6347 4.1.2.7) and counts it, instead of ending the session
  assert.ok(delta('onair_media_dtls_dropped_total') >= b.sent.dtls * 0.5,
            `onair_media_dtls_dropped_total grew by ${delta('onair_media_dtls_dropped_total')} for ${b.sent.dtls} DTLS-looking datagrams`);
}));
