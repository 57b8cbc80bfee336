// onair e2e: WHIP publish / WHEP play through a real onaird, with headless Chromium.
//
//   ONAIR_URL=http://127.0.0.1:8080  use a running onaird (media on, server.cors_origins "*")
//   otherwise start one: ONAIRD (build/core/onaird), ONAIR_PLUGIN_DIR (build/plugins)
//   ONAIR_E2E_REQUIRE=1  fail instead of skipping when there is no onaird (ctest sets it)
// See README.md for what each scenario checks and what it assumes about the server.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {launch} from './lib/browser.mjs';
import {startTarget} from './lib/onaird.mjs';
import * as sc from './lib/scenarios.mjs';

const REQUIRE = process.env.ONAIR_E2E_REQUIRE === '1';
const T = {timeout: 60_000};
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];

// ---- find or start the server (top-level: a skip must be known when the tests are declared) --
const started = await startTarget();
const server = started.server; // the onaird we started, if any
const target = started.target;
let skip = started.skip;
if (skip && REQUIRE) {
  const reason = skip;
  test('onaird is there (ONAIR_E2E_REQUIRE=1)', () => assert.fail(reason));
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

const opts = {...T, skip: skip || false};
const diag = (t) => (m) => t.diagnostic(m);

test('(1) WHIP publish, two WHEP players get video and audio, DELETE ends them', opts,
     (t) => sc.publishTwoPlayers(browser, target, diag(t)));
test('(2) a late player decodes a frame within 2 s (keyframe request)', opts,
     (t) => sc.lateJoiner(browser, target, diag(t)));
test('(3) simulcast: a constrained player gets <= 320 wide, another 1280', opts,
     (t) => sc.simulcast(browser, target, diag(t)));
test('(4) private stream: WHEP without a token is 401/403 problem+json', opts,
     (t) => sc.privateStream(browser, target, diag(t)));
test('(5) bad SDP: 400 application/problem+json on WHIP and WHEP', opts,
     (t) => sc.badSdp(browser, target, diag(t)));
