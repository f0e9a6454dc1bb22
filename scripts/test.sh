#!/usr/bin/env bash
# The whole test suite: installs what the tests need (no-op when present), builds, checks, runs every
# vitest project against the machine's PostgreSQL and NATS, and ends with one "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh || exit 1
npm run build || exit 1
npm run check || exit 1
mkdir -p test-results
npx vitest run --reporter=default --reporter=json --outputFile=test-results/vitest.json
status=$?
node scripts/test-summary.mjs test-results/vitest.json || status=1
exit $status
