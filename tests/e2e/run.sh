#!/usr/bin/env bash
# onair e2e: browser tests of the media relay (WHIP/WHEP) with headless Chromium.
#   tests/e2e/run.sh                  selftest + WHIP/WHEP tests (these skip without a relay)
#   tests/e2e/run.sh selftest.test.mjs   only the given test files (relative to tests/e2e)
# Env: ONAIR_URL, ONAIRD, ONAIR_PLUGIN_DIR, ONAIR_E2E_REQUIRE, ... (see README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# paths given relative to the caller's directory stay valid after the cd below
for v in ONAIRD ONAIR_PLUGIN_DIR ONAIR_E2E_CHROMIUM; do
  if [ -n "${!v:-}" ] && [ "${!v#/}" = "${!v}" ]; then export "$v=$PWD/${!v}"; fi
done
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefer-offline --no-audit --no-fund
fi
if [ "$#" -eq 0 ]; then set -- *.test.mjs; fi
exec node --test --test-concurrency=1 "$@"
