import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import { loadConfig } from "@worksynapse/core";
import { dbSetup, doctor, init } from "./cli.js";
import { createTestDatabase, type TestDatabase } from "../../tests/support/pg.js";
import { NATS_URL, PG_ADMIN_URL } from "../../tests/support/env.js";

const run = promisify(execFile);
const BIN = new URL("../bin/worksynapse.mjs", import.meta.url).pathname;
const tmp = () => mkdtempSync(path.join(tmpdir(), "ws-cli-"));
const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup) await c();
});

describe("worksynapse init", () => {
  it("creates the data directory, config and a 0600 master key without printing it, and keeps them on rerun", () => {
    const dir = path.join(tmp(), "data");
    const out: string[] = [];
    init(dir, (s) => out.push(s));
    const key = readFileSync(path.join(dir, "secrets", "master.key"), "utf8").trim();
    expect(key.length).toBeGreaterThanOrEqual(64);
    expect(statSync(path.join(dir, "secrets", "master.key")).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dir, "secrets")).mode & 0o777).toBe(0o700);
    expect(out.join("\n")).not.toContain(key);
    init(dir, (s) => out.push(s));
    expect(readFileSync(path.join(dir, "secrets", "master.key"), "utf8").trim()).toBe(key);
    expect(out.join("\n")).toContain("kept");
    // The server picks the key up from the data directory.
    expect(loadConfig({ env: { WORKSYNAPSE_DATA_DIR: dir } }).secrets.masterKey).toBe(key);
  });
});

describe("worksynapse doctor", () => {
  it("passes with reachable PostgreSQL and NATS", async () => {
    const cfg = loadConfig({
      env: { WORKSYNAPSE_DATA_DIR: tmp(), DATABASE_URL: PG_ADMIN_URL, NATS_URL, WORKSYNAPSE_HTTP_PORT: "0" },
    });
    const checks = await doctor(cfg);
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    expect(checks.find((c) => c.name === "Database")?.detail).toMatch(/^PostgreSQL \d+/);
    expect(checks.find((c) => c.name === "Bus")?.detail).toContain("with JetStream");
  });

  it("fails with a table naming what is wrong, and exits 1", async () => {
    const env = {
      ...process.env,
      WORKSYNAPSE_DATA_DIR: tmp(),
      DATABASE_URL: "postgres://nobody@127.0.0.1:1/none",
      NATS_URL: "nats://127.0.0.1:1",
    };
    const err = (await run(process.execPath, [BIN, "doctor"], { env }).catch((e: unknown) => e)) as {
      code: number;
      stdout: string;
    };
    expect(err.code).toBe(1);
    expect(err.stdout).toMatch(/Database\s+FAIL\s+cannot connect/);
    expect(err.stdout).toMatch(/Bus\s+FAIL\s+cannot connect/);
    expect(err.stdout).toMatch(/Node\.js\s+pass/);
  });
});

describe("worksynapse migrate", () => {
  it("shows status, applies, rolls back and reapplies on PostgreSQL", async () => {
    const db: TestDatabase = await createTestDatabase("cli");
    cleanup.push(db.drop);
    const env = { ...process.env, WORKSYNAPSE_DATA_DIR: tmp(), DATABASE_URL: db.url };
    const status = async (action: string) =>
      (await run(process.execPath, [BIN, "migrate", action], { env })).stdout;
    expect(await status("status")).toMatch(/platform_bus\s+pending/);
    const up = await status("up");
    expect(up).not.toContain("pending");
    const names = [...up.matchAll(/^(\d{14}_\w+)\s+applied/gm)].map((m) => m[1]);
    expect(names.length).toBeGreaterThanOrEqual(3);
    // down undoes the last migration only
    const down = await status("down");
    expect(down).toMatch(new RegExp(`${names[names.length - 1]}\\s+pending`));
    expect(down).toMatch(new RegExp(`${names[0]}\\s+applied`));
    expect(await status("up")).not.toContain("pending");
    const bad = (await run(process.execPath, [BIN, "migrate", "sideways"], { env }).catch(
      (e: unknown) => e,
    )) as {
      code: number;
      stderr: string;
    };
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("Allowed choices are up, down, status");
  });
});

describe("worksynapse db setup", () => {
  it("creates an owner and an app role that can log in, owns nothing and cannot bypass RLS", async () => {
    const sfx = randomBytes(3).toString("hex");
    const names = { database: `wsdb_${sfx}`, owner: `wso_${sfx}`, app: `wsa_${sfx}` };
    const dataDir = tmp();
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    cleanup.push(async () => {
      await admin.query(`drop database if exists ${names.database} with (force)`);
      await admin.query(`drop role if exists ${names.app}`);
      await admin.query(`drop role if exists ${names.owner}`);
      await admin.end();
    });
    const out: string[] = [];
    await dbSetup({ adminUrl: PG_ADMIN_URL, dataDir, out: (s) => out.push(s), ...names });
    const appUrl = readFileSync(path.join(dataDir, "secrets", "database.url"), "utf8").trim();
    expect(statSync(path.join(dataDir, "secrets", "database.url")).mode & 0o777).toBe(0o600);
    expect(out.join("\n")).not.toContain(new URL(appUrl).password);
    const roles = await admin.query(
      "select rolname, rolsuper, rolbypassrls, rolcanlogin from pg_roles where rolname = $1",
      [names.app],
    );
    expect(roles.rows[0]).toEqual({
      rolname: names.app,
      rolsuper: false,
      rolbypassrls: false,
      rolcanlogin: true,
    });
    // Migrate as the owner, then the server connects as the app role with its own password.
    const env = {
      ...process.env,
      WORKSYNAPSE_DATA_DIR: dataDir,
      WORKSYNAPSE_DATABASE_APP_ROLE: names.app,
      DATABASE_URL_FILE: path.join(dataDir, "secrets", "database.url"),
      DATABASE_OWNER_URL_FILE: path.join(dataDir, "secrets", "database-owner.url"),
    };
    expect((await run(process.execPath, [BIN, "migrate", "up"], { env })).stdout).toMatch(/applied/);
    const app = new pg.Client({ connectionString: appUrl });
    await app.connect();
    const owned = await app.query(
      "select count(*)::int as n from pg_class c join pg_roles r on r.oid = c.relowner where r.rolname = current_user",
    );
    expect(owned.rows[0]).toEqual({ n: 0 });
    await expect(app.query("create table intruder (id int)")).rejects.toThrow(/permission denied/);
    expect((await app.query("select count(*)::int as n from outbox")).rows[0]).toEqual({ n: 0 });
    await app.end();
  });
});

describe("worksynapse admin create", () => {
  it("creates the first organization with a system administrator, then more organizations with plain owners", async () => {
    const db: TestDatabase = await createTestDatabase("admin");
    cleanup.push(db.drop);
    const dir = tmp();
    const pwFile = path.join(dir, "pw");
    writeFileSync(pwFile, "first-admin-password-long\n", { mode: 0o600 });
    const env = { ...process.env, WORKSYNAPSE_DATA_DIR: dir, DATABASE_URL: db.url };
    const first = await run(
      process.execPath,
      [
        BIN,
        "admin",
        "create",
        "--org",
        "Ministry",
        "--email",
        "root@ministry.example",
        "--name",
        "Root",
        "--password-file",
        pwFile,
      ],
      { env },
    );
    expect(first.stdout).toMatch(/created\s+organization Ministry .* \(system administrator\)/);
    expect(first.stdout).not.toContain("first-admin-password-long");
    const second = await run(
      process.execPath,
      [BIN, "admin", "create", "--org", "Agency", "--email", "boss@agency.example", "--name", "Boss"],
      {
        env: { ...env, WORKSYNAPSE_ADMIN_PASSWORD: "second-admin-password-long" },
      },
    );
    expect(second.stdout).not.toContain("system administrator");
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const users = (await c.query("select email, system_admin from users order by email")).rows;
    await c.end();
    expect(users).toEqual([
      { email: "boss@agency.example", system_admin: false },
      { email: "root@ministry.example", system_admin: true },
    ]);
    const weak = (await run(
      process.execPath,
      [BIN, "admin", "create", "--org", "X", "--email", "x@x.example", "--name", "X"],
      {
        env: { ...env, WORKSYNAPSE_ADMIN_PASSWORD: "short" },
      },
    ).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(weak.code).not.toBe(0);
    expect(weak.stderr).toContain("at least 12 characters");
  });
});

describe("worksynapse secrets rotate", () => {
  it("re-seals every stored credential with a new master key; the audit log stays verifiable; an interrupted rotation finishes when run again", async () => {
    const { sealSecret, openSecret } = await import("../../core/src/platform/crypto.js");
    const db: TestDatabase = await createTestDatabase("rotate");
    cleanup.push(db.drop);
    const dir = tmp();
    init(dir, () => undefined);
    const keyFile = path.join(dir, "secrets", "master.key");
    const k1 = readFileSync(keyFile, "utf8").trim();
    const env = {
      ...process.env,
      WORKSYNAPSE_DATA_DIR: dir,
      DATABASE_URL: db.url,
      WORKSYNAPSE_ADMIN_PASSWORD: "rotation-admin-password-1",
    };
    await run(
      process.execPath,
      [BIN, "admin", "create", "--org", "Rotators", "--email", "r@rot.example", "--name", "R"],
      {
        env,
      },
    );
    // A connection with sealed credentials and webhook secret, as the integrations module stores them.
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const org = (await c.query("select id from organizations")).rows[0].id as string;
    const id = "5b0c6c4e-8f7a-4d7e-9a57-2f1e1c0d9a11";
    await c.query(
      `insert into integration_connections (id, org_id, plugin_id, name, base_url, auth_kind, credentials, webhook_secret)
       values ($1, $2, 'webhook', 'ci', 'https://ci.rot.example', 'token', $3, $4)`,
      [
        id,
        org,
        sealSecret(k1, "integration:credentials", JSON.stringify({ token: "glpat-secret" }), id),
        sealSecret(k1, "integration:webhook", "hook-secret", id),
      ],
    );
    const sealed = async () =>
      (await c.query("select credentials, webhook_secret from integration_connections where id = $1", [id]))
        .rows[0] as { credentials: string; webhook_secret: string };

    const r1 = await run(process.execPath, [BIN, "secrets", "rotate"], { env });
    expect(r1.stdout).toMatch(/re-sealed 2 secrets/);
    const k2 = readFileSync(keyFile, "utf8").trim();
    expect(k2).not.toBe(k1);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(r1.stdout).not.toContain(k2);
    const s2 = await sealed();
    expect(JSON.parse(openSecret(k2, "integration:credentials", s2.credentials, id))).toEqual({
      token: "glpat-secret",
    });
    expect(openSecret(k2, "integration:webhook", s2.webhook_secret, id)).toBe("hook-secret");
    expect(() => openSecret(k1, "integration:credentials", s2.credentials, id)).toThrow();
    // The audit chain was written with the first key, which audit.key keeps.
    expect(readFileSync(path.join(dir, "secrets", "audit.key"), "utf8").trim()).toBe(k1);
    expect((await run(process.execPath, [BIN, "audit", "verify"], { env })).stdout).toMatch(
      /audit log intact/,
    );

    // A rotation that stopped after writing its next key: running it again finishes it with that key.
    const k3 = randomBytes(48).toString("base64url");
    writeFileSync(path.join(dir, "secrets", "master.key.next"), k3 + "\n", { mode: 0o600 });
    const r2 = await run(process.execPath, [BIN, "secrets", "rotate"], { env });
    expect(r2.stdout).toMatch(/re-sealed 2 secrets/);
    expect(readFileSync(keyFile, "utf8").trim()).toBe(k3);
    expect(openSecret(k3, "integration:webhook", (await sealed()).webhook_secret, id)).toBe("hook-secret");
    // Stopped after the database commit: nothing left to re-seal, the key file is put in place.
    const s3 = await sealed();
    writeFileSync(path.join(dir, "secrets", "master.key.next"), k3 + "\n", { mode: 0o600 });
    writeFileSync(keyFile, k2 + "\n", { mode: 0o600 });
    // (k2 no longer opens anything: the run recognises the values as already sealed with the next key.)
    const r3 = await run(process.execPath, [BIN, "secrets", "rotate"], { env });
    expect(r3.stdout).toMatch(/re-sealed 0 secrets .*2 already were/);
    expect(await sealed()).toEqual(s3);
    expect(readFileSync(keyFile, "utf8").trim()).toBe(k3);
    expect((await run(process.execPath, [BIN, "audit", "verify"], { env })).stdout).toMatch(
      /audit log intact/,
    );
    await c.end();
  });
});
