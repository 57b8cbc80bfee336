// The set-up the LiveKit e2e tests share: an onaird with the calls plugin (API key/secret),
// one Chromium, tokens minted by livekit-server-sdk's AccessToken as an app's backend does, and
// pages with livekit-client's UMD bundle loaded.
//
// Without a build or tests/livekit's modules a developer's run skips the tests; under
// ONAIR_E2E_REQUIRE=1 (ctest, CI) the missing pieces are a failing test instead, so CI never
// skips them.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {join} from 'node:path';
import {existsSync} from 'node:fs';
import {readFile} from 'node:fs/promises';
import {launch} from './browser.mjs';
import {Onaird, haveOnaird, PLUGIN_DIR, REPO} from './onaird.mjs';

export const LK = join(REPO, 'tests', 'livekit', 'node_modules');

// Registers the suite's hooks; returns {T (test options), server, browser (after `before`),
// token(identity, grant, ttl), page(name)}.
export function livekitSuite(key, secret) {
  const have = haveOnaird() && existsSync(join(PLUGIN_DIR, 'calls.so')) &&
    existsSync(join(LK, 'livekit-client')) && existsSync(join(LK, 'livekit-server-sdk'));
  const missing = have ? false : `no onaird, ${PLUGIN_DIR}/calls.so or tests/livekit/node_modules`;
  if (missing && process.env.ONAIR_E2E_REQUIRE === '1')
    test('onaird, the calls plugin and tests/livekit are there (ONAIR_E2E_REQUIRE=1)',
         () => assert.fail(missing));
  let AccessToken = null;
  let bundle = null;
  const s = {
    T: {timeout: 120_000, skip: missing || false},
    server: null,
    browser: null,
    async token(identity, grant, ttl = '10m') {
      const at = new AccessToken(key, secret, {identity, name: identity.toUpperCase(), ttl});
      at.addGrant(grant);
      return at.toJwt();
    },
    async page(name) {
      const page = await s.browser.newPage(name);
      bundle ??= await readFile(join(LK, 'livekit-client', 'dist', 'livekit-client.umd.js'), 'utf8');
      await page.addScriptTag({content: bundle});
      await page.waitForFunction(() => !!window.LivekitClient, null, {timeout: 10_000});
      return page;
    },
  };
  before(async () => {
    if (missing) return;
    ({AccessToken} = await import(join(LK, 'livekit-server-sdk', 'dist', 'index.js')));
    s.server = new Onaird({core: {server: {max_header_bytes: 32768}}, plugins: {
      calls: {path: join(PLUGIN_DIR, 'calls.so'), config: {api_key: key, api_secret: secret}},
    }});
    await s.server.start();
    s.browser = await launch();
  });
  after(async () => {
    await s.browser?.close();
    if (!s.server) return;
    // a sanitizer build (make sanitize) reports on stderr at exit: read it to its end
    const drained = new Promise((r) => s.server.proc.stderr.once('close', r));
    await s.server.stop();
    await drained;
    assert.doesNotMatch(s.server.log(), /(Address|Leak|UndefinedBehavior)Sanitizer|runtime error:/);
  });
  return s;
}
