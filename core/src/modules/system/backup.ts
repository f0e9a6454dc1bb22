import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import {
  chmod,
  copyFile,
  link,
  lstat,
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as lancedb from "@lancedb/lancedb";
import { Decrypter, Encrypter } from "age-encryption";
import * as tar from "tar";
import { configFilePath } from "../../config/load.js";
import type { Config } from "../../config/schema.js";
import { ensureAppRole, openOwnerDatabase } from "../../platform/db/database.js";
import { runMigrations } from "../../platform/db/migrate.js";
import type { Logger } from "../../platform/log.js";
import { VERSION } from "../../platform/paths.js";
import { modelsDir } from "../ai/models.service.js";
import { chatDir } from "../chat/chat.service.js";
import { checkpointFile } from "../identity/audit.anchor.js";
import { kbDir } from "../kb/kb.service.js";
import { projectsDir } from "../projects/projects.service.js";

/**
 * Backup and restore of an installation: one encrypted archive (age: a passphrase or site public keys) holding
 * the database (pg_dump of one snapshot; the embedded PGlite cluster copied while its lock is held), each
 * knowledge-base table at the version it had when the backup began, uploaded files, models, the audit
 * checkpoints, the configuration file and the master key, with a manifest of every file's size and SHA-256.
 * The archive is written under a temporary name and renamed when complete, so a backup killed half-way leaves
 * nothing that looks like a backup. Restore decrypts and checks everything before it changes anything.
 */

export const BACKUP_FORMAT = "worksynapse-backup/1";
export const BACKUP_SUFFIX = ".wsbackup";

export interface BackupManifest {
  format: typeof BACKUP_FORMAT;
  version: string;
  createdAt: string;
  database: { kind: "postgres" | "pglite"; appRole: string; migrations: string[] };
  /** LanceDB table name → the version the backup holds. */
  lance: Record<string, number>;
  files: { path: string; size: number; sha256: string }[];
  /** Every folder, empty ones included (a PostgreSQL cluster needs its empty folders). */
  dirs: string[];
}

export class BackupError extends Error {}

export interface BackupKeys {
  passphrase?: string;
  /** age recipients (age1… public keys); the archive opens with any one of their identities. */
  recipients?: string[];
  /** age identities (AGE-SECRET-KEY-1…), to restore. */
  identities?: string[];
}

/** The folders of the data directory a backup holds: archive name → where it lives in this configuration. */
function dataFolders(config: Config, includeModels: boolean): { name: string; dir: string }[] {
  return [
    { name: "kb", dir: kbDir(config) },
    { name: "chat", dir: chatDir(config) },
    { name: "projects", dir: projectsDir(config) },
    { name: "audit", dir: path.dirname(checkpointFile(config.dataDir)) },
    ...(includeModels ? [{ name: "models", dir: modelsDir(config) }] : []),
  ];
}
/** Work folders never backed up (uploads being received). */
const SKIP = new Set(["tmp"]);

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

/** Removes what a killed backup or restore left (names carry the pid of the process that made them). */
async function removeStale(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  for (const name of await readdir(dir)) {
    const m = /\.(?:partial|staging|restore)-(\d+)-[0-9a-f]+$/.exec(name);
    if (m && !isAlive(Number(m[1]))) await rm(path.join(dir, name), { recursive: true, force: true });
  }
}

const tag = () => `${process.pid}-${randomBytes(4).toString("hex")}`;

/** Copies a tree into the staging folder: uploaded files (never rewritten) by hard link when possible. */
async function stageTree(from: string, to: string, linkFiles: boolean): Promise<void> {
  let entries;
  try {
    entries = await readdir(from, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  await mkdir(to, { recursive: true });
  for (const e of entries) {
    const src = path.join(from, e.name);
    const dst = path.join(to, e.name);
    if (e.isDirectory()) {
      if (!SKIP.has(e.name)) await stageTree(src, dst, linkFiles || e.name === "files");
    } else if (e.isFile()) {
      try {
        if (linkFiles) await link(src, dst);
        else await copyFile(src, dst);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // Deleted meanwhile: the database snapshot decides whether it is still referenced.
        if (code === "ENOENT") continue;
        if (linkFiles && (code === "EXDEV" || code === "EPERM" || code === "EMLINK"))
          await copyFile(src, dst);
        else throw err;
      }
    }
  }
}

async function sha256(file: string): Promise<string> {
  const h = createHash("sha256");
  await pipeline(createReadStream(file), h);
  return h.digest("hex");
}

async function listFiles(root: string, rel = "", dirs?: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(path.join(root, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) {
      dirs?.push(p);
      out.push(...(await listFiles(root, p, dirs)));
    } else if (e.isFile()) out.push(p);
    else throw new BackupError(`unexpected entry in the archive: ${p}`);
  }
  return out;
}

/** libpq connection settings from a URL, passed in the environment (never on a command line others can read). */
function pgEnv(url: string): NodeJS.ProcessEnv {
  const u = new URL(url);
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("PG")) delete env[k];
  Object.assign(env, {
    PGHOST: decodeURIComponent(u.hostname.replace(/^\[|\]$/g, "")) || "localhost",
    PGPORT: u.port || "5432",
    PGUSER: decodeURIComponent(u.username),
    PGDATABASE: decodeURIComponent(u.pathname.slice(1)),
    PGCONNECT_TIMEOUT: "10",
  });
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  for (const [k, v] of u.searchParams) {
    if (k === "sslmode") env.PGSSLMODE = v;
    if (k === "host") env.PGHOST = v;
  }
  return env;
}

function run(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on("error", (e) =>
      reject(new BackupError(`${bin} could not run (${e.message}); install the PostgreSQL client tools`)),
    );
    child.on("exit", (code, signal) =>
      code === 0
        ? resolve()
        : reject(
            new BackupError(`${path.basename(bin)} failed (${signal ?? `exit ${code}`}): ${err.trim()}`),
          ),
    );
  });
}

const ownerUrl = (config: Config) => config.database.ownerUrl ?? config.database.url;

/** The LanceDB tables of the knowledge base and their current versions. */
async function lanceVersions(dir: string): Promise<Record<string, number>> {
  if (!existsSync(dir)) return {};
  const db = await lancedb.connect(dir);
  try {
    const out: Record<string, number> = {};
    for (const name of await db.tableNames()) {
      const t = await db.openTable(name);
      out[name] = await t.version();
      t.close();
    }
    return out;
  } finally {
    db.close();
  }
}

function encrypter(keys: BackupKeys): Encrypter {
  const e = new Encrypter();
  if (keys.recipients?.length) for (const r of keys.recipients) e.addRecipient(r);
  else if (keys.passphrase) e.setPassphrase(keys.passphrase);
  else throw new BackupError("a backup is always encrypted: give a passphrase or an age recipient");
  return e;
}

export interface BackupOptions {
  config: Config;
  /** Where the archive goes (default: <data dir>/backups). */
  outDir?: string;
  keys: BackupKeys;
  /** Model files are large and can be imported again; they are included unless this is false. */
  includeModels?: boolean;
  /** After a successful backup, keep only this many of the newest archives in the folder (retention). */
  keep?: number;
  log: Logger;
}

export interface BackupResult {
  file: string;
  bytes: number;
  manifest: BackupManifest;
  /** Older archives deleted by the retention rule. */
  removed: string[];
}

/** Deletes all but the `keep` newest finished archives of a folder (their names sort by time). */
async function applyRetention(dir: string, keep: number): Promise<string[]> {
  const archives = (await readdir(dir))
    .filter((f) => /^worksynapse-.+-\d{8}T\d{6}Z\.wsbackup$/.test(f))
    .sort((a, b) =>
      a.replace(/^.*-(\d{8}T\d{6}Z)/, "$1").localeCompare(b.replace(/^.*-(\d{8}T\d{6}Z)/, "$1")),
    );
  const old = archives.slice(0, Math.max(0, archives.length - keep));
  for (const f of old) await rm(path.join(dir, f), { force: true });
  return old.map((f) => path.join(dir, f));
}

/** Writes a consistent, encrypted backup of the installation while it runs (PostgreSQL) or is stopped (PGlite). */
export async function createBackup(opts: BackupOptions): Promise<BackupResult> {
  const { config, log } = opts;
  const outDir = path.resolve(opts.outDir ?? config.backup.dir ?? path.join(config.dataDir, "backups"));
  const enc = encrypter(opts.keys);
  await mkdir(outDir, { recursive: true, mode: 0o700 });
  await removeStale(outDir);
  await removeStale(config.dataDir);
  const id = tag();
  // Staged inside the data directory, so uploaded files can be hard links (same file system, no copy).
  const staging = path.join(config.dataDir, `.staging-${id}`);
  const stamp = new Date()
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  const finalName = path.join(outDir, `worksynapse-${VERSION}-${stamp}${BACKUP_SUFFIX}`);
  const partial = `${finalName}.partial-${id}`;
  if (existsSync(finalName))
    throw new BackupError(`${finalName} exists (a backup in this same second); run again`);
  await mkdir(staging, { recursive: true, mode: 0o700 });
  try {
    // 1. The index's versions first: the database snapshot below is at least as new, so every document it
    //    lists as indexed has its chunks in these versions or gets re-indexed by the worker's repair.
    const lance = await lanceVersions(kbDir(config));

    // 2. The database, in one snapshot.
    const owner = openOwnerDatabase(config);
    const databaseKind = owner.kind;
    let migrations: string[];
    try {
      migrations = (await runMigrations(owner.knex, config.database.appRole, "status", log))
        .filter((m) => m.applied)
        .map((m) => m.name);
      await mkdir(path.join(staging, "database"));
      if (owner.kind === "postgres") {
        await run(
          config.backup.pgDumpBin,
          ["--format=custom", "--no-password", `--file=${path.join(staging, "database", "postgres.dump")}`],
          pgEnv(ownerUrl(config) as string),
        );
      }
    } finally {
      // PGlite: the cluster is copied after the handle is closed, while this process still holds its lock.
      if (owner.kind === "pglite") {
        await owner.knex.destroy();
        await stageTree(path.join(config.dataDir, "pgdata"), path.join(staging, "database", "pgdata"), false);
        await rm(path.join(staging, "database", "pgdata", "postmaster.pid"), { force: true });
      }
      await owner.close();
    }

    // 3. Files, the configuration and the keys.
    for (const f of dataFolders(config, opts.includeModels !== false))
      await stageTree(f.dir, path.join(staging, "data", f.name), f.name === "models");
    await mkdir(path.join(staging, "config"));
    const cfgFile = configFilePath();
    if (existsSync(cfgFile)) await copyFile(cfgFile, path.join(staging, "config", "config.yaml"));
    await mkdir(path.join(staging, "secrets"), { mode: 0o700 });
    const secrets = path.join(config.dataDir, "secrets");
    const master =
      config.secrets.masterKey ?? (await readFile(path.join(secrets, "master.key"), "utf8")).trim();
    await writeFile(path.join(staging, "secrets", "master.key"), `${master}\n`, { mode: 0o600 });
    if (existsSync(path.join(secrets, "audit.key")))
      await copyFile(path.join(secrets, "audit.key"), path.join(staging, "secrets", "audit.key"));

    // 4. The manifest: every file with its size and checksum.
    const files = [];
    const dirs: string[] = [];
    for (const p of (await listFiles(staging, "", dirs)).sort()) {
      const full = path.join(staging, p);
      files.push({ path: p, size: (await stat(full)).size, sha256: await sha256(full) });
    }
    const manifest: BackupManifest = {
      format: BACKUP_FORMAT,
      version: VERSION,
      createdAt: new Date().toISOString(),
      database: {
        kind: databaseKind,
        appRole: config.database.appRole,
        migrations,
      },
      lance,
      files,
      dirs: dirs.sort(),
    };
    await writeFile(path.join(staging, "manifest.json"), JSON.stringify(manifest, null, 2));

    // 5. tar → age → a temporary name; fsync; rename. A kill before the rename leaves only the .partial.
    const packed = tar.create({ cwd: staging, portable: true }, [
      "manifest.json",
      ...files.map((f) => f.path),
    ]);
    const encrypted = await enc.encrypt(
      Readable.toWeb(Readable.from(packed as AsyncIterable<Uint8Array>)) as ReadableStream<Uint8Array>,
    );
    const fh = await open(partial, "wx", 0o600);
    let bytes = 0;
    try {
      for await (const chunk of encrypted as unknown as AsyncIterable<Uint8Array>) {
        await fh.write(chunk);
        bytes += chunk.length;
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(partial, finalName);
    const dirHandle = await open(outDir, "r");
    await dirHandle.sync().finally(() => dirHandle.close());
    log.info({ file: finalName, bytes, files: files.length }, "backup written");
    const removed = opts.keep ? await applyRetention(outDir, opts.keep) : [];
    return { file: finalName, bytes, manifest, removed };
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

function decrypter(keys: BackupKeys): Decrypter {
  const d = new Decrypter();
  for (const i of keys.identities ?? []) d.addIdentity(i);
  if (keys.passphrase) d.addPassphrase(keys.passphrase);
  if (!keys.identities?.length && !keys.passphrase)
    throw new BackupError("give the backup's passphrase or an age identity that can open it");
  return d;
}

/** Decrypts and unpacks an archive into `dir` and checks it against its manifest; returns the manifest. */
async function unpack(file: string, keys: BackupKeys, dir: string): Promise<BackupManifest> {
  if (/\.partial-\d+-[0-9a-f]+$/.test(file))
    throw new BackupError(`${path.basename(file)} is an unfinished backup (the process writing it stopped)`);
  const s = await stat(file).catch(() => null);
  if (!s?.isFile()) throw new BackupError(`${file} is not a file`);
  const dec = decrypter(keys);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    const plain = await dec.decrypt(Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>);
    await pipeline(
      Readable.fromWeb(plain as unknown as import("node:stream/web").ReadableStream<Uint8Array>),
      tar.extract({ cwd: dir, strict: true, preservePaths: false }),
    );
  } catch (err) {
    const msg = (err as Error).message;
    if (/no identity matched|incorrect passphrase|passphrase/i.test(msg))
      throw new BackupError("the passphrase or identity does not open this backup");
    throw new BackupError(`the backup is damaged or not a WorkSynapse backup (${msg})`);
  }
  let manifest: BackupManifest;
  try {
    manifest = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8")) as BackupManifest;
  } catch {
    throw new BackupError("the backup has no readable manifest");
  }
  if (manifest.format !== BACKUP_FORMAT)
    throw new BackupError(`unknown backup format ${String(manifest.format)}`);
  for (const d of manifest.dirs) {
    const full = path.resolve(dir, d);
    if (!full.startsWith(`${dir}${path.sep}`))
      throw new BackupError(`the backup names a folder outside itself: ${d}`);
    await mkdir(full, { recursive: true });
  }
  const listed = new Set(manifest.files.map((f) => f.path));
  for (const p of await listFiles(dir))
    if (p !== "manifest.json" && !listed.has(p))
      throw new BackupError(`the backup holds a file its manifest does not list: ${p}`);
  for (const f of manifest.files) {
    const full = path.join(dir, f.path);
    const st = await lstat(full).catch(() => null);
    if (!st?.isFile() || st.size !== f.size || (await sha256(full)) !== f.sha256)
      throw new BackupError(`the backup is damaged: ${f.path} does not match its checksum`);
  }
  return manifest;
}

/** Decrypts an archive into a temporary folder and checks every file against the manifest; changes nothing. */
export async function verifyBackup(file: string, keys: BackupKeys, tmpDir: string): Promise<BackupManifest> {
  const dir = path.join(tmpDir, `.verify-${tag()}`);
  try {
    return await unpack(file, keys, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Orders release versions by major, minor and patch: negative, zero or positive as a is older, equal or newer. */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) =>
    v
      .split(/[.-]/)
      .slice(0, 3)
      .map((x) => Number.parseInt(x, 10) || 0);
  const [x, y] = [parts(a), parts(b)];
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

async function hasFiles(dir: string): Promise<boolean> {
  try {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (SKIP.has(e.name)) continue;
      if (!e.isDirectory() || (await hasFiles(path.join(dir, e.name)))) return true;
    }
    return false;
  } catch {
    return false;
  }
}

export interface RestoreOptions {
  config: Config;
  file: string;
  keys: BackupKeys;
  log: Logger;
}

/**
 * Restores a backup onto a fresh installation of the same or a newer version (an empty database and data
 * directory), then migrates it to this version. Everything is decrypted and checked first; a refused
 * restore changes nothing.
 */
export async function restoreBackup(opts: RestoreOptions): Promise<BackupManifest> {
  const { config, log } = opts;
  await mkdir(config.dataDir, { recursive: true });
  await removeStale(config.dataDir);
  const dir = path.join(config.dataDir, `.restore-${tag()}`);
  try {
    const manifest = await unpack(opts.file, opts.keys, dir);
    if (compareVersions(manifest.version, VERSION) > 0)
      throw new BackupError(
        `the backup is from version ${manifest.version}, newer than this ${VERSION}; install that version or newer`,
      );
    const targetKind = config.database.url || config.database.ownerUrl ? "postgres" : "pglite";
    if (manifest.database.kind !== targetKind)
      throw new BackupError(
        `the backup holds a ${manifest.database.kind === "postgres" ? "PostgreSQL" : "embedded (PGlite)"} database; configure the same kind (${manifest.database.kind === "postgres" ? "DATABASE_URL" : "no DATABASE_URL"}) to restore it`,
      );
    if (manifest.database.appRole !== config.database.appRole)
      throw new BackupError(
        `the backup's grants are for the application role ${manifest.database.appRole}; set WORKSYNAPSE_DATABASE_APP_ROLE=${manifest.database.appRole}`,
      );
    const master = (await readFile(path.join(dir, "secrets", "master.key"), "utf8")).trim();
    if (config.secrets.masterKey && config.secrets.masterKey !== master)
      throw new BackupError(
        "the configured master key is not the backup's; unset it (the restore installs the backup's key)",
      );
    const folders = dataFolders(config, true);
    for (const f of folders)
      if (await hasFiles(f.dir))
        throw new BackupError(`${f.dir} is not empty: restore onto a fresh installation`);

    // The database: refused unless empty; restored in one transaction.
    if (targetKind === "postgres") {
      const owner = openOwnerDatabase(config);
      try {
        const r = await owner.knex.raw(
          "select count(*)::int as n from pg_tables where schemaname = 'public'",
        );
        if ((r.rows[0] as { n: number }).n > 0)
          throw new BackupError(
            "the database is not empty: restore onto a fresh database (worksynapse db setup)",
          );
        await ensureAppRole(owner.knex, config.database.appRole);
      } finally {
        await owner.close();
      }
      await run(
        config.backup.pgRestoreBin,
        [
          "--no-owner",
          "--single-transaction",
          "--exit-on-error",
          "--no-password",
          `--dbname=${pgEnv(ownerUrl(config) as string).PGDATABASE}`,
          path.join(dir, "database", "postgres.dump"),
        ],
        pgEnv(ownerUrl(config) as string),
      );
    } else {
      if (existsSync(path.join(config.dataDir, "pgdata", "PG_VERSION")))
        throw new BackupError("the embedded database already exists: restore onto a fresh data directory");
      await rm(path.join(config.dataDir, "pgdata"), { recursive: true, force: true });
      await rename(path.join(dir, "database", "pgdata"), path.join(config.dataDir, "pgdata"));
    }

    // Keys, files, configuration.
    const secrets = path.join(config.dataDir, "secrets");
    await mkdir(secrets, { recursive: true, mode: 0o700 });
    await chmod(secrets, 0o700);
    for (const k of ["master.key", "audit.key"]) {
      if (existsSync(path.join(dir, "secrets", k))) {
        await rm(path.join(secrets, k), { force: true });
        await rename(path.join(dir, "secrets", k), path.join(secrets, k));
        await chmod(path.join(secrets, k), 0o600);
      }
    }
    for (const f of folders) {
      const from = path.join(dir, "data", f.name);
      if (!existsSync(from)) continue;
      await rm(f.dir, { recursive: true, force: true });
      await mkdir(path.dirname(f.dir), { recursive: true });
      await rename(from, f.dir).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== "EXDEV") throw err;
        await stageTree(from, f.dir, false);
      });
    }
    const cfgFrom = path.join(dir, "config", "config.yaml");
    if (existsSync(cfgFrom)) {
      const cfgTo = configFilePath();
      const to = existsSync(cfgTo) ? path.join(path.dirname(cfgTo), "config.restored.yaml") : cfgTo;
      await copyFile(cfgFrom, to);
      if (to !== cfgTo)
        log.warn({ file: to }, "a configuration file exists; the backup's is written beside it");
    }

    // Each knowledge-base table back at the version the backup took.
    if (Object.keys(manifest.lance).length) {
      const db = await lancedb.connect(kbDir(config));
      try {
        for (const [name, version] of Object.entries(manifest.lance)) {
          const t = await db.openTable(name);
          if ((await t.version()) !== version) {
            await t.checkout(version);
            await t.restore();
          }
          t.close();
        }
      } finally {
        db.close();
      }
    }

    // Migrated to this version.
    const owner = openOwnerDatabase(config);
    try {
      await runMigrations(owner.knex, config.database.appRole, "latest", log);
      // The backup's own run (and any other under way) was "running" in the snapshot; it ended elsewhere.
      await owner.knex("backup_runs").whereIn("status", ["queued", "running"]).update({
        status: "failed",
        finished_at: owner.knex.fn.now(),
        error:
          "Under way when the backup this installation was restored from was taken; it ended there, not here.",
      });
    } finally {
      await owner.close();
    }
    log.info({ file: opts.file, from: manifest.version, createdAt: manifest.createdAt }, "backup restored");
    return manifest;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
