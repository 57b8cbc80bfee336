// onair e2e: H.264 offers as encoders other than Chromium's make them (issue 13 D5). x264 and
// most hardware encoders (OBS, GStreamer x264enc, phones) offer H.264 Constrained Baseline as
// profile-level-id=42c01f; Chromium offers it as 42e01f (and Baseline as 42001f). The relay must
// match the profile as RFC 6184 defines it (profile_idc and the constraint flags), not the text:
// a Chromium player of an x264-style publisher gets H.264 and decodes it.
//
// The publisher is Chromium with H.264 preferred and every profile-level-id of its offer written
// as 42c01f (what the relay sees is then exactly an x264-style offer; the encoder sends
// Constrained Baseline either way).
//
//   ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE (see README.md)
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch, publish, tryPlay, stats, waitFor, sleep, frames, closeAll} from './lib/browser.mjs';
import {Onaird, onairTarget, api, haveOnaird} from './lib/onaird.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const skip = haveOnaird() ? false : 'no onaird (set ONAIRD, ONAIR_PLUGIN_DIR)';
if (skip && REQUIRE) test('onaird is built (ONAIR_E2E_REQUIRE=1)', () => assert.fail(skip));
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];

let server = null;
after(async () => {
  if (!server) return;
  const st = await server.stop();
  const log = server.log();
  for (const m of SANITIZER) assert.ok(!log.includes(m), `sanitizer report:\n${log.slice(-6000)}`);
  assert.equal(st.code, 0, `onaird exit ${JSON.stringify(st)}:\n${log.slice(-4000)}`);
});

test('an x264-style H.264 offer (profile-level-id=42c01f) reaches a Chromium player', {timeout: 60_000, skip}, async (t) => {
  server = new Onaird();
  await server.start();
  const target = await onairTarget(server.base);
  const browser = await launch();
  const [pubPage, playPage] = [await browser.newPage('publisher'), await browser.newPage('player')];
  try {
    const s = await target.newStream({title: 'x264'});
    const pub = await publish(pubPage, target.whipUrl(s.id), s.key, {
      videoCodec: 'H264',
      offerReplace: [['profile-level-id=[0-9a-fA-F]{6}', 'g', 'profile-level-id=42c01f']],
    });
    assert.match(pub.offer, /profile-level-id=42c01f/);
    assert.doesNotMatch(pub.offer, /profile-level-id=(?!42c01f)/, 'every H.264 entry is x264-style');
    assert.match(pub.answer, /a=rtpmap:\d+ H264\/90000/, 'the relay takes the H.264 offer');
    assert.match(pub.answer, /profile-level-id=42c01f/);
    const ply = await tryPlay(playPage, target.whepUrl(s.id), null);
    assert.equal(ply.status, 201, `WHEP: ${ply.status} ${ply.body || ''}`);
    const fmtp = ply.answer.match(/a=fmtp:\d+ .*profile-level-id=([0-9a-f]{6}).*/)?.[1];
    t.diagnostic(`the player's answer: H.264 with profile-level-id ${fmtp} (the publisher's: 42c01f)`);
    assert.match(ply.answer, /a=rtpmap:\d+ H264\/90000/, 'the player gets H.264');
    assert.ok(fmtp && fmtp.startsWith('42'), `a Baseline-family profile of the player's offer: ${fmtp}`);
    const first = await waitFor('the player decodes H.264', async () => {
      const st = await stats(playPage, ply.id);
      return {done: frames(st) > 10, ...st};
    }, 20_000);
    await sleep(2000);
    const last = await stats(playPage, ply.id);
    assert.ok(frames(last) > frames(first) + 10, `framesDecoded ${frames(first)} -> ${frames(last)}`);
    const m = await api(server.base, 'GET', `/api/v1/streams/${s.id}/media`, {token: s.viewerToken});
    assert.equal(m.json.publisher.tracks.find((x) => x.kind === 'video').codec, 'H264');
  } catch (e) {
    e.message += `\n--- onaird log (tail) ---\n${server.log().slice(-2000)}`;
    throw e;
  } finally {
    for (const pg of [pubPage, playPage]) {
      await closeAll(pg);
      await pg.close().catch(() => {});
    }
    await browser.close();
  }
});
