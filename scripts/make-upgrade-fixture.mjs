// Makes tests/fixtures/upgrade/: a populated database as a release leaves it, for the test that upgrades from
// it (tests/integration/upgrade-fixture.test.ts). Run at a release, from that release's tree:
//   node scripts/make-upgrade-fixture.mjs [--down N]
// It starts the built server on a fresh PostgreSQL database, fills it through the API as people would (an
// organization and its administrator, a member, a note, a project with a task, a chat channel with a message,
// a webhook connection with a delivery processed), stops it, and writes a plain SQL dump (gzip) with a
// manifest. --down N first undoes the N newest migrations: a fixture of the schema before them, made after
// the fact when no fixture was made at that release (the down migrations are the exact inverse of the ups).
// The master key is a fixed test value: the fixture holds sealed columns (the connection's webhook secret).
import { execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { forkCore } from "./bench/core.mjs";

export const FIXTURE_MASTER_KEY = "upgrade-fixture-master-key-not-a-secret-0123456789";
const root = new URL("..", import.meta.url).pathname;
const out = path.join(root, "tests/fixtures/upgrade");
const { values } = parseArgs({ options: { down: { type: "string", default: "0" } } });
const PG = process.env.FIXTURE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const NATS = process.env.FIXTURE_NATS_URL ?? "nats://127.0.0.1:4222";

const dbName = `ws_fixture_${randomBytes(4).toString("hex")}`;
const dbUrl = Object.assign(new URL(PG), { pathname: `/${dbName}` }).toString();
execFileSync("psql", [PG, "-qc", `create database ${dbName}`]);
const dataDir = mkdtempSync(path.join(tmpdir(), "ws-fixture-"));
const env = {
  DATABASE_URL: dbUrl,
  NATS_URL: NATS,
  WORKSYNAPSE_NATS_PREFIX: `fx${randomBytes(3).toString("hex")}`,
  WORKSYNAPSE_DATA_DIR: dataDir,
  WORKSYNAPSE_HTTP_HOST: "127.0.0.1",
  WORKSYNAPSE_HTTP_PORT: "0",
  WORKSYNAPSE_SECRETS_MASTER_KEY: FIXTURE_MASTER_KEY,
  WORKSYNAPSE_INTEGRATIONS_ALLOW_LOOPBACK: "true",
};
const core = forkCore(env);
try {
  const url = await core.url;
  const base = { "content-type": "application/json", "x-requested-with": "worksynapse", origin: url };
  let cookie = "";
  const api = async (method, p, body, headers = {}) => {
    const r = await fetch(`${url}${p}`, {
      method,
      headers: { ...base, cookie, ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
    return r.status === 204 ? null : r.json();
  };
  const setup = await fetch(`${url}/api/auth/setup`, {
    method: "POST",
    headers: base,
    body: JSON.stringify({
      organizationName: "Fixture Hospital",
      name: "Ada Admin",
      email: "ada@fixture.example",
      password: "lantern-harbor-violet-7",
    }),
  });
  if (setup.status !== 201) throw new Error(`setup: ${setup.status} ${await setup.text()}`);
  cookie = setup.headers.getSetCookie()[0].split(";")[0];
  await api("POST", "/api/notes", { title: "Ward rota", body: "Night shifts: **Ben**, then Chloe." });
  const project = (await api("POST", "/api/projects", { name: "Clinic move" })).data;
  await api("POST", `/api/projects/${project.id}/tasks`, { title: "Book the movers", priority: "high" });
  const channel = (await api("POST", "/api/chat/channels", { kind: "public", name: "ops" })).data;
  await api("POST", `/api/chat/channels/${channel.id}/messages`, { body: "The new wing opens Monday." });
  await api("PUT", "/api/integrations/plugins/webhook", { enabled: true });
  const conn = (
    await api("POST", "/api/integrations/connections", {
      plugin: "webhook",
      name: "lab",
      baseUrl: "https://lab.fixture.example",
      auth: { kind: "none" },
    })
  ).data;
  const body = JSON.stringify({ summary: "results ready", n: 1 });
  const ts = String(Math.floor(Date.now() / 1000));
  const sig = `v1=${createHmac("sha256", conn.webhookSecret).update(`${ts}.${body}`).digest("hex")}`;
  const hook = await fetch(`${url}${conn.connection.webhookUrl}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-webhook-timestamp": ts, "x-webhook-signature": sig },
    body,
  });
  if (hook.status !== 202) throw new Error(`webhook: ${hook.status}`);
  const psql = (sql) => execFileSync("psql", [dbUrl, "-tAc", sql], { encoding: "utf8" }).trim();
  for (let i = 0; psql("select count(*) from webhook_deliveries where status = 'processed'") !== "1"; i++) {
    if (i > 100) throw new Error("the delivery was not processed");
    await new Promise((r) => setTimeout(r, 100));
  }
  core.kill("SIGTERM");
  await new Promise((r) => core.once("exit", r));

  if (Number(values.down) > 0) {
    const { openOwnerDatabase, runMigrations, loadConfig, silentLogger } = await import(
      path.join(root, "core/dist/src/index.js")
    );
    const config = loadConfig({ env: { ...env } });
    const owner = openOwnerDatabase(config);
    try {
      for (let i = 0; i < Number(values.down); i++)
        await runMigrations(owner.knex, config.database.appRole, "down", silentLogger());
    } finally {
      await owner.close();
    }
  }
  const migrations = psql("select name from knex_migrations order by id").split("\n");
  const dump = execFileSync("pg_dump", ["--no-owner", "--format=plain", dbUrl], { maxBuffer: 256 * 2 ** 20 });
  mkdirSync(out, { recursive: true });
  writeFileSync(path.join(out, "database.sql.gz"), gzipSync(dump, { level: 9 }));
  writeFileSync(
    path.join(out, "manifest.json"),
    JSON.stringify(
      {
        madeAt: new Date().toISOString(),
        appRole: process.env.WORKSYNAPSE_DATABASE_APP_ROLE ?? "worksynapse_app",
        masterKey: FIXTURE_MASTER_KEY,
        lastMigration: migrations[migrations.length - 1],
        migrations: migrations.length,
        signIn: { email: "ada@fixture.example", password: "lantern-harbor-violet-7" },
        // What the test signs a new delivery with: it must still open from its sealed column.
        webhookSecret: conn.webhookSecret,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(`wrote ${out}: ${migrations.length} migrations, the last ${migrations[migrations.length - 1]}`);
} finally {
  if (core.exitCode === null) core.kill("SIGTERM");
  execFileSync("psql", [PG, "-qc", `drop database if exists ${dbName} with (force)`]);
  rmSync(dataDir, { recursive: true, force: true });
}
