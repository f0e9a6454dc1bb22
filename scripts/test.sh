#!/usr/bin/env bash
# The whole test suite: installs what the tests need (no-op when present), builds, checks, runs every
# vitest project (the fault-injection one last, alone) against the machine's PostgreSQL and NATS, and ends with one "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh || exit 1
npm run build || exit 1
npm run check || exit 1
mkdir -p test-results
# Reports of an earlier run must never be counted as this run's.
rm -f test-results/vitest.json test-results/vitest-faults.json
# Databases an interrupted earlier run left behind (every test database is named ws_<label>_<hex>).
node -e '
const pg = require("pg");
const c = new pg.Client({ connectionString: process.env.TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres" });
c.connect().then(async () => {
  const r = await c.query("select datname from pg_database where datname ~ $1", ["^ws_[a-z0-9]+_[0-9a-f]{10}$"]);
  for (const { datname } of r.rows) await c.query(`drop database if exists ${datname} with (force)`);
  await c.end();
}).catch((e) => { console.error("cleanup of old test databases failed:", e.message); process.exit(0); });
'
npx vitest run --project integration --project e2e --reporter=default --reporter=json --outputFile=test-results/vitest.json
status=$?
# The fault-injection suite runs alone afterwards: it kills processes and stops services on a 2-core machine,
# and timings of its recoveries mean nothing while other suites compete for the CPU.
npx vitest run --project faults --reporter=default --reporter=json --outputFile=test-results/vitest-faults.json || status=1
node scripts/test-summary.mjs test-results/vitest.json test-results/vitest-faults.json || status=1
exit $status
