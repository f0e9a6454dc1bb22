import { execFile, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateIdentity, identityToRecipient } from "age-encryption";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { NATS_URL } from "../support/env.js";
import { deleteStreams } from "../support/nats.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";
import { apiAs, setUpInstallation, spawnCore, waitForOk, type CoreProcess } from "../support/process.js";

/**
 * Backup and restore of a populated installation on the real PostgreSQL (pg_dump / pg_restore), NATS and
 * llama.cpp (the tiny embedding model indexes the knowledge base), through the CLI as an admin runs it.
 */
const BIN = new URL("../../installer/bin/worksynapse.mjs", import.meta.url).pathname;
const ADMIN = {
  organizationName: "St Backup",
  name: "Ada",
  email: "ada@backup.example",
  password: "lantern-harbor-violet-7",
};
const prefix = `bk${randomBytes(3).toString("hex")}`;

interface Cli {
  code: number;
  stdout: string;
  stderr: string;
}
function cli(env: Record<string, string>, ...args: string[]): Promise<Cli> {
  return promisify(execFile)(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({
      code: e.code ?? 1,
      stdout: e.stdout ?? "",
      stderr: e.stderr ?? "",
    }),
  );
}

const work = mkdtempSync(path.join(tmpdir(), "ws-backup-"));
const passFile = path.join(work, "passphrase");
// The site's age key pair: backups are encrypted to its public key, restores use the identity kept offline.
const idFile = path.join(work, "site-identity.txt");
let recipient: string;
const outDir = path.join(work, "backups");
let dbA: TestDatabase;
let dbB: TestDatabase | undefined;
let envA: Record<string, string>;
let core: CoreProcess | undefined;
let archive: string;

const baseEnv = (dataDir: string, db: TestDatabase) => ({
  WORKSYNAPSE_DATA_DIR: dataDir,
  DATABASE_URL: db.url,
  NATS_URL,
  WORKSYNAPSE_NATS_PREFIX: prefix,
  WORKSYNAPSE_AI_THREADS: "1",
  WORKSYNAPSE_KB_CHUNK_TOKENS: "60",
  WORKSYNAPSE_AUTH_API_PER_MINUTE: "100000",
  // The connection below points at a loopback port (nothing is called).
  WORKSYNAPSE_INTEGRATIONS_ALLOW_LOOPBACK: "true",
});

async function stopCore() {
  if (!core) return;
  core.child.kill("SIGTERM");
  await core.exit;
  core = undefined;
}

async function signIn(url: string): Promise<string> {
  const r = await fetch(`${url}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: url },
    body: JSON.stringify({ email: ADMIN.email, password: ADMIN.password }),
  });
  expect(r.status, await r.clone().text()).toBe(200);
  return r.headers.getSetCookie()[0]?.split(";")[0] as string;
}

type Api = ReturnType<typeof apiAs>;
interface Data<T> {
  data: T;
}

/** What every module shows through the API: compared before the backup and after the restore. */
async function snapshot(api: Api, ids: { collection: string; channel: string; project: string }) {
  const strip = (v: unknown): unknown =>
    JSON.parse(
      JSON.stringify(v, (k, x: unknown) => (k === "lastSeenAt" || k === "onlineCount" ? undefined : x)),
    );
  const get = async (p: string) => strip(await api<unknown>("GET", p));
  const search = await api<Data<{ documentId: string; text: string }[]>>("POST", "/api/kb/search", {
    query: "Which ward keeps the oxygen cylinders?",
    collectionIds: [ids.collection],
  });
  return {
    users: await get("/api/users"),
    apiKeys: await get("/api/api-keys"),
    notes: await get("/api/notes"),
    projects: await get("/api/projects"),
    tasks: await get(`/api/projects/${ids.project}/tasks`),
    channels: await get("/api/chat/channels"),
    messages: await get(`/api/chat/channels/${ids.channel}/messages`),
    collections: await get("/api/kb/collections"),
    documents: await get(`/api/kb/collections/${ids.collection}/documents`),
    connections: await get("/api/integrations/connections"),
    search: search.data.map((h) => [h.documentId, h.text]),
  };
}

let ids: { collection: string; channel: string; project: string };
let before: Awaited<ReturnType<typeof snapshot>>;
let chatFile: { id: string; bytes: Buffer };
let cookie: string;

beforeAll(async () => {
  writeFileSync(passFile, "correct horse battery staple 42\n", { mode: 0o600 });
  const identity = await generateIdentity();
  recipient = await identityToRecipient(identity);
  writeFileSync(idFile, `# the site's backup identity\n${identity}\n`, { mode: 0o600 });
  dbA = await createTestDatabase("backupa");
  const dataA = path.join(work, "a");
  envA = baseEnv(dataA, dbA);
  const model = path.join(work, "tiny.gguf");
  makeTinyModel(model);
  const imported = await cli(envA, "models", "import", model, "--name", "tiny", "--role", "embedding");
  expect(imported.code, imported.stderr).toBe(0);
  core = spawnCore(envA);
  const url = await core.url;
  await waitForOk(`${url}/readyz`);
  cookie = await setUpInstallation(url, ADMIN);
  const api = apiAs(url, cookie);

  // Every module gets data: people, keys, notes, a project with tasks, chat with a file, the knowledge base,
  // an integration connection with a sealed credential.
  await api("POST", "/api/users", {
    email: "bo@backup.example",
    displayName: "Bo",
    password: "quiet-meadow-orbit-19",
  });
  await api("POST", "/api/api-keys", { name: "ci", permissions: ["org.read"] });
  await api("POST", "/api/notes", {
    title: "Handover",
    body: "Night shift handover: bed 4 needs a check at 02:00.",
  });
  const project = (await api<Data<{ id: string }>>("POST", "/api/projects", { name: "Ward move" })).data;
  await api("POST", `/api/projects/${project.id}/tasks`, { title: "Pack the pharmacy" });
  await api("POST", `/api/projects/${project.id}/tasks`, { title: "Label the beds" });
  const channel = (
    await api<Data<{ id: string }>>("POST", "/api/chat/channels", {
      kind: "public",
      name: "ward-7",
      memberIds: [],
    })
  ).data;
  await api("POST", `/api/chat/channels/${channel.id}/messages`, { body: "The move starts on Monday." });
  const bytes = randomBytes(50_000);
  const form = new FormData();
  form.append("files", new Blob([new Uint8Array(bytes)]), "floorplan.bin");
  form.append("body", "Floor plan");
  const shared = await fetch(`${url}/api/chat/channels/${channel.id}/files`, {
    method: "POST",
    headers: { "x-requested-with": "worksynapse", origin: url, cookie },
    body: form,
  });
  expect(shared.status, await shared.clone().text()).toBe(201);
  const sharedBody = (await shared.json()) as Data<{ attachments: { id: string }[] }>;
  chatFile = { id: sharedBody.data.attachments[0]?.id as string, bytes };
  await api("PUT", "/api/integrations/plugins/webhook", { enabled: true });
  await api("POST", "/api/integrations/connections", {
    plugin: "webhook",
    name: "site",
    baseUrl: "http://127.0.0.1:9/",
    auth: { kind: "token", token: "sealed-token-value-123" },
  });
  const collection = (
    await api<Data<{ id: string }>>("POST", "/api/kb/collections", { name: "Ward handbook" })
  ).data;
  const kbForm = new FormData();
  kbForm.append(
    "files",
    new Blob([
      "The oxygen cylinders are kept in ward 7, in the locked room beside the lift.\n\n" +
        "Visiting hours are from 14:00 to 20:00; children under 12 visit with an adult.\n\n" +
        "Fire doors on every floor close automatically when the alarm sounds.",
    ]),
    "handbook.txt",
  );
  const up = await fetch(`${url}/api/kb/collections/${collection.id}/documents`, {
    method: "POST",
    headers: { "x-requested-with": "worksynapse", origin: url, cookie },
    body: kbForm,
  });
  expect(up.status, await up.clone().text()).toBe(201);
  const deadline = Date.now() + 90_000;
  for (;;) {
    const docs = await api<Data<{ status: string }[]>>(
      "GET",
      `/api/kb/collections/${collection.id}/documents`,
    );
    if (docs.data.every((d) => d.status === "indexed")) break;
    if (Date.now() > deadline) throw new Error(`not indexed: ${JSON.stringify(docs.data)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  ids = { collection: collection.id, channel: channel.id, project: project.id };
  before = await snapshot(api, ids);
  expect(before.search.length).toBeGreaterThan(0);
}, 240_000);

afterAll(async () => {
  await stopCore();
  await dbA?.drop();
  await dbB?.drop();
  await deleteStreams(prefix);
  rmSync(work, { recursive: true, force: true });
});

describe("backup and restore", () => {
  it("backs up a running installation into one encrypted archive and checks it", async () => {
    const r = await cli(envA, "backup", "--out", outDir, "--recipient", recipient);
    expect(r.code, r.stderr).toBe(0);
    const files = readdirSync(outDir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^worksynapse-\d+\.\d+\.\d+-\d{8}T\d{6}Z\.wsbackup$/);
    archive = path.join(outDir, files[0] as string);
    expect(statSync(archive).mode & 0o077).toBe(0);
    // Encrypted: none of the data is readable in the archive.
    const raw = readFileSync(archive);
    expect(raw.subarray(0, 21).toString()).toBe("age-encryption.org/v1");
    for (const text of ["oxygen cylinders", "Handover", "sealed-token-value-123", "ada@backup.example"])
      expect(raw.includes(text), text).toBe(false);
    // A site can open it without WorkSynapse: Debian's age decrypts it into a tar with the manifest first.
    const opened = path.join(work, "opened.tar");
    await promisify(execFile)("age", ["--decrypt", "--identity", idFile, "--output", opened, archive]);
    const { stdout: listing } = await promisify(execFile)("tar", ["-tf", opened], { maxBuffer: 16 << 20 });
    expect(listing.split("\n")[0]).toBe("manifest.json");
    expect(listing).toMatch(/^database\/postgres\.dump$/m);
    rmSync(opened);
    const checked = await cli(envA, "restore", "--check", archive, "--identity-file", idFile);
    expect(checked.code, checked.stderr).toBe(0);
    expect(checked.stdout).toMatch(/checked/);
  });

  it("refuses a wrong passphrase or identity, a damaged archive and a truncated one, naming the problem", async () => {
    const wrong = path.join(work, "wrong");
    writeFileSync(wrong, "not the passphrase at all\n");
    const w = await cli(envA, "restore", "--check", archive, "--passphrase-file", wrong);
    expect(w.code).toBe(1);
    expect(w.stderr).toMatch(/passphrase or identity does not open this backup/);
    const otherId = path.join(work, "other-identity.txt");
    writeFileSync(otherId, `${await generateIdentity()}\n`);
    const o = await cli(envA, "restore", "--check", archive, "--identity-file", otherId);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/passphrase or identity does not open this backup/);
    const raw = readFileSync(archive);
    const damaged = Buffer.from(raw);
    const middle = Math.floor(raw.length / 2);
    damaged[middle] = (raw[middle] as number) ^ 0xff;
    writeFileSync(path.join(work, "damaged.wsbackup"), damaged);
    const d = await cli(
      envA,
      "restore",
      "--check",
      path.join(work, "damaged.wsbackup"),
      "--identity-file",
      idFile,
    );
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/damaged/);
    writeFileSync(path.join(work, "short.wsbackup"), raw.subarray(0, Math.floor(raw.length * 0.7)));
    const s = await cli(
      envA,
      "restore",
      "--check",
      path.join(work, "short.wsbackup"),
      "--identity-file",
      idFile,
    );
    expect(s.code).toBe(1);
    expect(s.stderr).toMatch(/damaged/);
  });

  it("leaves nothing that looks like a backup when killed half-way, and cleans up after it next time", async () => {
    // A large upload makes the archive take long enough to kill the writer in the middle.
    const big = path.join(envA.WORKSYNAPSE_DATA_DIR as string, "chat", "files", "zz-large-upload.bin");
    writeFileSync(big, randomBytes(96 * 2 ** 20));
    const killDir = path.join(work, "killed");
    const child = spawn(process.execPath, [BIN, "backup", "--out", killDir, "--recipient", recipient], {
      env: { ...process.env, ...envA },
      stdio: "ignore",
    });
    const exited = new Promise((r) => child.once("exit", r));
    let partial: string | undefined;
    const deadline = Date.now() + 60_000;
    while (!partial && Date.now() < deadline) {
      partial = existsSync(killDir) ? readdirSync(killDir).find((f) => f.includes(".partial-")) : undefined;
      if (!partial) await new Promise((r) => setTimeout(r, 5));
    }
    expect(partial, "the archive is written under a temporary name").toBeDefined();
    await new Promise((r) => setTimeout(r, 50));
    child.kill("SIGKILL");
    await exited;
    const left = readdirSync(killDir);
    expect(left.filter((f) => f.endsWith(".wsbackup"))).toEqual([]);
    const r = await cli(
      envA,
      "restore",
      "--check",
      path.join(killDir, partial as string),
      "--identity-file",
      idFile,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unfinished backup/);
    // The next backup removes what the killed one left (its archive and its staging folder).
    rmSync(big);
    const again = await cli(envA, "backup", "--out", killDir, "--recipient", recipient);
    expect(again.code, again.stderr).toBe(0);
    expect(readdirSync(killDir).filter((f) => f.includes(".partial-"))).toEqual([]);
    // Retention: with --keep 1 the next backup deletes the older archive.
    const [older] = readdirSync(killDir);
    await new Promise((r) => setTimeout(r, 1100));
    const kept = await cli(
      envA,
      "backup",
      "--out",
      killDir,
      "--recipient",
      recipient,
      "--keep",
      "1",
      "--no-models",
    );
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toMatch(/removed .*retention: 1 kept/);
    const now = readdirSync(killDir);
    expect(now).toHaveLength(1);
    expect(now[0]).not.toBe(older);
    expect(readdirSync(envA.WORKSYNAPSE_DATA_DIR as string).filter((f) => f.startsWith(".staging-"))).toEqual(
      [],
    );
    // Each command's backup is a run the admin page lists; the killed one is marked failed (its process is
    // gone), which is what let the next one start.
    const runs = execFileSync(
      "psql",
      [dbA.url, "-tAc", "select trigger || ' ' || status from backup_runs order by created_at"],
      { encoding: "utf8" },
    )
      .trim()
      .split("\n");
    expect(runs.slice(-3)).toEqual(["command failed", "command succeeded", "command succeeded"]);
  }, 120_000);

  it("restores onto a wiped installation: every listing, the knowledge-base search, files and the audit chain are as they were", async () => {
    await stopCore();
    // Wipe: the database and the data directory are gone; a fresh database and an empty directory take their place.
    await dbA.drop();
    rmSync(envA.WORKSYNAPSE_DATA_DIR as string, { recursive: true, force: true });
    await deleteStreams(prefix);
    dbB = await createTestDatabase("backupb");
    const envB = baseEnv(path.join(work, "b"), dbB);

    const restored = await cli(envB, "restore", archive, "--identity-file", idFile);
    expect(restored.code, restored.stderr).toBe(0);
    const audit = await cli(envB, "audit", "verify");
    expect(audit.code, audit.stdout + audit.stderr).toBe(0);
    expect(audit.stdout).toMatch(/audit log intact/);

    // Restoring again onto what is now a populated installation is refused and changes nothing.
    const twice = await cli(envB, "restore", archive, "--identity-file", idFile);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/not empty/);

    core = spawnCore(envB);
    const url = await core.url;
    await waitForOk(`${url}/readyz`);
    // The administrator's session is part of the backup: the browser stays signed in.
    const api = apiAs(url, cookie);
    expect(await snapshot(api, ids)).toEqual(before);
    const file = await fetch(`${url}/api/chat/channels/${ids.channel}/files/${chatFile.id}`, {
      headers: { cookie },
    });
    expect(file.status).toBe(200);
    expect(Buffer.from(await file.arrayBuffer()).equals(chatFile.bytes)).toBe(true);
    // And the password still signs in.
    expect(await signIn(url)).toMatch(/=/);
  }, 180_000);
});

describe("backup and restore of the embedded database (PGlite)", () => {
  it("copies the stopped cluster with its empty folders and restores it into a fresh data directory", async () => {
    const a = { WORKSYNAPSE_DATA_DIR: path.join(work, "embedded-a") };
    const b = { WORKSYNAPSE_DATA_DIR: path.join(work, "embedded-b") };
    const clean = Object.fromEntries(
      Object.keys(process.env)
        .filter((k) => k.startsWith("WORKSYNAPSE_") || k === "DATABASE_URL" || k === "NATS_URL")
        .map((k) => [k, ""]),
    );
    const migrated = await cli({ ...clean, ...a }, "migrate", "up");
    expect(migrated.code, migrated.stderr).toBe(0);
    const created = await cli(
      { ...clean, ...a, WORKSYNAPSE_ADMIN_PASSWORD: ADMIN.password },
      "admin",
      "create",
      "--org",
      "Embedded",
      "--email",
      "ada@embedded.example",
      "--name",
      "Ada",
    );
    expect(created.code, created.stderr).toBe(0);
    const backup = await cli({ ...clean, ...a }, "backup", "--passphrase-file", passFile);
    expect(backup.code, backup.stderr).toBe(0);
    expect(backup.stdout).toMatch(/database {2}pglite/);
    const file = path.join(
      a.WORKSYNAPSE_DATA_DIR,
      "backups",
      readdirSync(path.join(a.WORKSYNAPSE_DATA_DIR, "backups"))[0] as string,
    );
    const restored = await cli({ ...clean, ...b }, "restore", file, "--passphrase-file", passFile);
    expect(restored.code, restored.stderr).toBe(0);
    const audit = await cli({ ...clean, ...b }, "audit", "verify");
    expect(audit.code, audit.stdout + audit.stderr).toBe(0);
    expect(audit.stdout).toMatch(/1 records checked/);
  }, 120_000);
});
