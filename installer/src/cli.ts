import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  createReadStream,
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  statfsSync,
  writeFileSync,
  chmodSync,
} from "node:fs";
import net from "node:net";
import { pipeline } from "node:stream/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Argument, Command, Option } from "commander";
import pg from "pg";
import { upgrade } from "./upgrade.js";
import * as tar from "tar";
import { stringify as toYaml } from "yaml";
import { connect } from "@nats-io/transport-node";
import {
  ConfigError,
  configFilePath,
  createOrganization,
  needsSetup,
  verifyAuditChains,
  checkpointFile,
  checkpointKeys,
  ensureMasterKey,
  auditRootKey,
  keyFiles,
  resealAll,
  MODULES,
  readCheckpoints,
  sinkOf,
  writeCheckpoints,
  AiRuntime,
  createPack,
  importPack,
  trustedPackKeys,
  generateSigningKey,
  verifyFile,
  createBackup,
  recordCommandBackup,
  restoreBackup,
  verifyBackup,
  importModel,
  listModels,
  removeModel,
  findNatsServer,
  loadConfig,
  natsServerVersion,
  openOwnerDatabase,
  redactConfig,
  runMigrations,
  silentLogger,
  VERSION,
  type Config,
  type MigrateAction,
} from "@worksynapse/core";

const CORE_MAIN = fileURLToPath(import.meta.resolve("@worksynapse/core")).replace(/index\.js$/, "main.js");

/** One line of `doctor`'s table. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

function config(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** Renders rows as an aligned plain-text table. */
export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

const portFree = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });

/** Runs every installation check; nothing is changed. */
export async function doctor(cfg: Config): Promise<Check[]> {
  const checks: Check[] = [];
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  checks.push({
    name: "Node.js",
    ok: major > 20 || (major === 20 && minor >= 19),
    detail: `${process.versions.node} (need 20.19 or newer)`,
  });

  try {
    mkdirSync(cfg.dataDir, { recursive: true });
    accessSync(cfg.dataDir, constants.W_OK);
    checks.push({ name: "Data directory", ok: true, detail: `${cfg.dataDir} is writable` });
  } catch (err) {
    checks.push({ name: "Data directory", ok: false, detail: `${cfg.dataDir}: ${(err as Error).message}` });
  }
  try {
    const fs = statfsSync(existsSync(cfg.dataDir) ? cfg.dataDir : ".");
    const freeGiB = (fs.bavail * fs.bsize) / 2 ** 30;
    checks.push({
      name: "Free disk",
      ok: freeGiB >= 2,
      detail: `${freeGiB.toFixed(1)} GiB free (need 2 GiB)`,
    });
  } catch (err) {
    checks.push({ name: "Free disk", ok: false, detail: (err as Error).message });
  }

  if (cfg.database.url) {
    const client = new pg.Client({ connectionString: cfg.database.url, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
      const v = await client.query("show server_version");
      const version = String((v.rows[0] as { server_version: string }).server_version);
      const ok = Number(version.split(".")[0]) >= 14;
      checks.push({
        name: "Database",
        ok,
        detail: `PostgreSQL ${version}${ok ? "" : " (need 14 or newer)"}`,
      });
    } catch (err) {
      checks.push({ name: "Database", ok: false, detail: `cannot connect: ${(err as Error).message}` });
    } finally {
      await client.end().catch(() => undefined);
    }
  } else {
    checks.push({
      name: "Database",
      ok: true,
      detail: "embedded PGlite in the data directory (single node only)",
    });
  }

  if (cfg.nats.url) {
    try {
      const nc = await connect({
        servers: cfg.nats.url,
        token: cfg.nats.token,
        timeout: 5000,
        maxReconnectAttempts: 0,
      });
      const info = nc.info;
      await nc.close();
      const js = info?.jetstream === true;
      checks.push({
        name: "Bus",
        ok: js,
        detail: `NATS ${info?.version ?? "?"} at ${cfg.nats.url}${js ? " with JetStream" : " WITHOUT JetStream (enable -js)"}`,
      });
    } catch (err) {
      checks.push({
        name: "Bus",
        ok: false,
        detail: `cannot connect to ${cfg.nats.url}: ${(err as Error).message}`,
      });
    }
  } else {
    const bin = findNatsServer(cfg.nats.serverBin);
    checks.push(
      bin
        ? { name: "Bus", ok: true, detail: `local nats-server ${natsServerVersion(bin)} at ${bin}` }
        : {
            name: "Bus",
            ok: false,
            detail: "no nats-server binary: apt-get install nats-server, or set NATS_URL",
          },
    );
  }

  if (cfg.roles.includes("web")) {
    const free = await portFree(cfg.http.host, cfg.http.port);
    checks.push({
      name: "HTTP port",
      ok: free,
      detail: `${cfg.http.host}:${cfg.http.port} ${free ? "is free" : "is in use (set WORKSYNAPSE_HTTP_PORT)"}`,
    });
  }
  return checks;
}

function writeSecret(file: string, value: string): void {
  writeFileSync(file, value + "\n", { mode: 0o600 });
  chmodSync(file, 0o600);
}

/** Creates the data directory, a config file and generated secrets (mode 0600); never prints a secret. */
export function init(dataDir: string, out: (s: string) => void): void {
  const dir = path.resolve(dataDir);
  const secrets = path.join(dir, "secrets");
  mkdirSync(secrets, { recursive: true, mode: 0o700 });
  chmodSync(secrets, 0o700);
  const keyFile = path.join(secrets, "master.key");
  if (existsSync(keyFile)) out(`kept      ${keyFile} (already there)`);
  else {
    writeSecret(keyFile, randomBytes(48).toString("base64url"));
    out(`created   ${keyFile} (mode 0600)`);
  }
  const configFile = path.join(dir, "config.yaml");
  if (existsSync(configFile)) out(`kept      ${configFile} (already there)`);
  else {
    const body = [
      "# WorkSynapse configuration. Every setting and its variable: docs/configuration.md",
      "# Secrets belong in files referenced by *_FILE variables, not here.",
      toYaml({ http: { port: 8080 }, log: { level: "info" } }).trim(),
      "# database:",
      "#   url: postgres://worksynapse_app@db-host/worksynapse   # unset: embedded PGlite",
      "# nats:",
      "#   url: nats://bus-host:4222                              # unset: local nats-server",
      "",
    ].join("\n");
    writeFileSync(configFile, body, { mode: 0o640 });
    out(`created   ${configFile}`);
  }
  out(`\nNext: WORKSYNAPSE_DATA_DIR=${dir} worksynapse doctor, then worksynapse start.`);
}

const ident = (s: string) => {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(s)) throw new Error(`not a safe identifier: ${s}`);
  return s;
};

/** Creates the owner role, the application role and the database on PostgreSQL, with generated passwords. */
export async function dbSetup(opts: {
  adminUrl: string;
  database: string;
  owner: string;
  app: string;
  dataDir: string;
  out: (s: string) => void;
}): Promise<void> {
  const database = ident(opts.database);
  const owner = ident(opts.owner);
  const app = ident(opts.app);
  const client = new pg.Client({ connectionString: opts.adminUrl });
  await client.connect();
  const secrets = path.join(path.resolve(opts.dataDir), "secrets");
  mkdirSync(secrets, { recursive: true, mode: 0o700 });
  try {
    const exists = async (role: string) =>
      ((await client.query("select 1 from pg_roles where rolname = $1", [role])).rowCount ?? 0) > 0;
    const passwords: Record<string, string> = {};
    for (const [role, extra] of [
      [owner, "login createrole bypassrls"],
      [app, "login nobypassrls nosuperuser nocreatedb nocreaterole"],
    ] as const) {
      const pw = randomBytes(24).toString("base64url");
      passwords[role] = pw;
      const verb = (await exists(role)) ? "alter" : "create";
      // Passwords cannot be bind parameters in DDL; base64url has no quote characters.
      await client.query(`${verb} role ${role} with ${extra} password '${pw}'`);
      opts.out(`${verb === "create" ? "created" : "updated"}   role ${role}`);
    }
    await client.query(`grant ${app} to ${owner}`);
    const db = await client.query("select 1 from pg_database where datname = $1", [database]);
    if (db.rowCount === 0) {
      await client.query(`create database ${database} owner ${owner}`);
      opts.out(`created   database ${database} owned by ${owner}`);
    }
    const base = new URL(opts.adminUrl);
    const urlFor = (role: string) => {
      const u = new URL(base.toString());
      u.username = role;
      u.password = passwords[role] as string;
      u.pathname = `/${database}`;
      return u.toString();
    };
    writeSecret(path.join(secrets, "database-owner.url"), urlFor(owner));
    writeSecret(path.join(secrets, "database.url"), urlFor(app));
    opts.out(`wrote     ${path.join(secrets, "database-owner.url")} and database.url (mode 0600)`);
    opts.out(
      `\nSet DATABASE_URL_FILE=${path.join(secrets, "database.url")} and ` +
        `DATABASE_OWNER_URL_FILE=${path.join(secrets, "database-owner.url")}, then run worksynapse migrate up.`,
    );
  } finally {
    await client.end();
  }
  // The public schema of the new database belongs to the owner; nobody else may create objects in it.
  const dbClient = new pg.Client({
    connectionString: Object.assign(new URL(opts.adminUrl), { pathname: `/${database}` }).toString(),
  });
  await dbClient.connect();
  try {
    await dbClient.query(`alter schema public owner to ${owner}`);
    await dbClient.query("revoke create on schema public from public");
  } finally {
    await dbClient.end();
  }
}

/**
 * Reads a bundle (a .tar.gz) once and checks every file in it against the SHA256SUMS it carries: none missing,
 * none extra, none changed. Returns the number of files.
 */
export async function verifyBundleContents(file: string): Promise<number> {
  const hashes = new Map<string, string>();
  let sums: string | undefined;
  await pipeline(
    createReadStream(file),
    new tar.Parser({
      onReadEntry: (entry) => {
        const rel = entry.path.split("/").slice(1).join("/");
        if (entry.type !== "File") return entry.resume();
        if (rel === "SHA256SUMS") {
          const chunks: Buffer[] = [];
          entry.on("data", (c: Buffer) => chunks.push(c));
          entry.on("end", () => (sums = Buffer.concat(chunks).toString()));
          return;
        }
        const h = createHash("sha256");
        entry.on("data", (c: Buffer) => h.update(c));
        entry.on("end", () => hashes.set(rel, h.digest("hex")));
      },
    }),
  );
  if (!sums) throw new Error("the bundle has no SHA256SUMS");
  const listed = new Map(
    sums
      .trim()
      .split("\n")
      .map((l) => [l.slice(66), l.slice(0, 64)] as const),
  );
  for (const [p, h] of listed) {
    const got = hashes.get(p);
    if (!got) throw new Error(`the bundle lacks ${p}, which SHA256SUMS lists`);
    if (got !== h) throw new Error(`${p} does not match SHA256SUMS`);
  }
  for (const p of hashes.keys())
    if (!listed.has(p)) throw new Error(`${p} is in the bundle but not in SHA256SUMS`);
  return listed.size;
}

/** Builds the `worksynapse` command. */
export function program(): Command {
  const cmd = new Command("worksynapse").description("Install and run WorkSynapse").version(VERSION);
  const out = (s: string) => process.stdout.write(s + "\n");

  cmd
    .command("doctor")
    .description("check this machine and the configuration; exits 1 when a check fails")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }) => {
      const checks = await doctor(config());
      if (o.json) out(JSON.stringify(checks, null, 2));
      else
        out(
          table([
            ["CHECK", "RESULT", "DETAIL"],
            ...checks.map((c) => [c.name, c.ok ? "pass" : "FAIL", c.detail]),
          ]),
        );
      process.exitCode = checks.every((c) => c.ok) ? 0 : 1;
    });

  cmd
    .command("init")
    .description("create the data directory, a config file and secrets")
    .option("--data-dir <dir>", "data directory", process.env.WORKSYNAPSE_DATA_DIR ?? "./data")
    .action((o: { dataDir: string }) => init(o.dataDir, out));

  cmd
    .command("migrate")
    .description("database migrations, run as the owner role")
    .addArgument(
      new Argument("[action]", "up (all pending), down (the last one), status")
        .choices(["up", "down", "status"])
        .default("status"),
    )
    .action(async (action: "up" | "down" | "status") => {
      const cfg = config();
      const owner = openOwnerDatabase(cfg);
      try {
        const map: Record<string, MigrateAction> = { up: "latest", down: "down", status: "status" };
        const list = await runMigrations(
          owner.knex,
          cfg.database.appRole,
          map[action] as MigrateAction,
          silentLogger(),
        );
        out(table([["MIGRATION", "STATE"], ...list.map((m) => [m.name, m.applied ? "applied" : "pending"])]));
      } finally {
        await owner.close();
      }
    });

  cmd
    .command("start")
    .description("start the server (same as node core/dist/src/main.js)")
    .addOption(new Option("--roles <roles>", "web, worker or web,worker"))
    .action((o: { roles?: string }) => {
      const child = spawn(process.execPath, [CORE_MAIN, ...(o.roles ? ["--roles", o.roles] : [])], {
        stdio: "inherit",
        // A libuv pool thread per inference context, and spare ones for files and crypto (docs/ai.md).
        env: { UV_THREADPOOL_SIZE: "16", ...process.env },
      });
      for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => child.kill(sig));
      child.on("exit", (code) => process.exit(code ?? 1));
    });

  const configCmd = cmd.command("config").description("configuration");
  configCmd
    .command("print")
    .description("print the effective configuration with secrets redacted")
    .option("--json", "print JSON")
    .action((o: { json?: boolean }) => {
      const redacted = redactConfig(config());
      out(`# from ${configFilePath()} and the environment`);
      out(o.json ? JSON.stringify(redacted, null, 2) : toYaml(redacted).trim());
    });

  const adminCmd = cmd.command("admin").description("organizations and administrators");
  adminCmd
    .command("create")
    .description("create an organization and its owner (the first one becomes a system administrator)")
    .requiredOption("--org <name>", "organization name")
    .requiredOption("--email <email>", "owner's email address")
    .requiredOption("--name <name>", "owner's display name")
    .option("--password-file <file>", "file holding the owner's password (else WORKSYNAPSE_ADMIN_PASSWORD)")
    .action(async (o: { org: string; email: string; name: string; passwordFile?: string }) => {
      const password = o.passwordFile
        ? readFileSync(o.passwordFile, "utf8").trim()
        : process.env.WORKSYNAPSE_ADMIN_PASSWORD;
      if (!password) throw new Error("Give the password in --password-file or WORKSYNAPSE_ADMIN_PASSWORD.");
      const cfg = config();
      const owner = openOwnerDatabase(cfg);
      try {
        await runMigrations(owner.knex, cfg.database.appRole, "latest", silentLogger());
        const first = await needsSetup(owner.knex);
        const { orgId } = await createOrganization(
          owner.knex,
          {
            name: o.org,
            ownerEmail: o.email,
            ownerName: o.name,
            ownerPassword: password,
            systemAdmin: first,
          },
          { actorType: "system", actorId: "cli" },
        );
        out(
          `created   organization ${o.org} (${orgId}) with owner ${o.email}${first ? " (system administrator)" : ""}`,
        );
      } finally {
        await owner.close();
      }
    });

  const modelsCmd = cmd.command("models").description("local AI models (GGUF files; nothing is downloaded)");
  const withModels = async <T>(
    fn: (owner: ReturnType<typeof openOwnerDatabase>, runtime: AiRuntime, cfg: Config) => Promise<T>,
  ) => {
    const cfg = config();
    const owner = openOwnerDatabase(cfg);
    const runtime = new AiRuntime({ ...cfg, ai: { ...cfg.ai, gpu: "off" } }, silentLogger());
    try {
      await runMigrations(owner.knex, cfg.database.appRole, "latest", silentLogger());
      return await fn(owner, runtime, cfg);
    } finally {
      await runtime.close();
      await owner.close();
    }
  };
  const modelRows = (list: Awaited<ReturnType<typeof listModels>>) =>
    table([
      ["NAME", "ROLES", "ARCH", "PARAMS", "QUANT", "CONTEXT", "EMBED", "CHAT TEMPLATE", "SIZE", "SHA256"],
      ...list.map((m) => [
        m.name,
        m.roles.join(","),
        m.metadata.architecture,
        String(m.metadata.parameterCount),
        m.metadata.quantization,
        String(m.metadata.contextLength),
        String(m.metadata.embeddingLength),
        m.metadata.hasChatTemplate ? "yes" : "no",
        `${(m.metadata.sizeBytes / 2 ** 20).toFixed(1)} MiB`,
        m.sha256.slice(0, 12),
      ]),
    ]);
  modelsCmd
    .command("import <file>")
    .description(
      "check a GGUF file or a signed model pack (a .wsmodel folder), copy the model into the data directory and register it",
    )
    .option("--name <name>", "name shown to users and used by API clients (default: the file name)")
    .addOption(
      new Option("--role <role>", "what it is used for").choices(["chat", "embedding"]).default("chat"),
    )
    .option("--pubkey <file>", "a pack publisher's minisign.pub to trust, besides ai.packKeys")
    .action(async (file: string, o: { name?: string; role: "chat" | "embedding"; pubkey?: string }) => {
      await withModels(async (owner, runtime, cfg) => {
        const isPack = existsSync(file) && statSync(file).isDirectory();
        const m = isPack
          ? await importPack(
              owner.knex,
              await runtime.llama(),
              cfg,
              file,
              trustedPackKeys(cfg, o.pubkey ? [readKeyFile(o.pubkey, "public key")] : []),
            )
          : await importModel(owner.knex, await runtime.llama(), cfg, {
              file,
              name: o.name,
              role: o.role,
            });
        out(`imported  ${m.name}\n`);
        out(modelRows([m]));
      });
    });
  modelsCmd
    .command("pack <file.gguf>")
    .description("make a signed model pack (a .wsmodel folder) of a GGUF file, to carry to a site")
    .requiredOption("--name <name>", "the model's name")
    .requiredOption("--licence <licence>", "its licence (e.g. Apache-2.0, Llama 3.1 Community)")
    .requiredOption("--key <file>", "the signing key (worksynapse bundle keygen)")
    .addOption(
      new Option("--role <role>", "what it is used for").choices(["chat", "embedding"]).default("chat"),
    )
    .option("--out <dir>", "where the pack folder goes", ".")
    .action(
      async (
        file: string,
        o: { name: string; licence: string; key: string; role: "chat" | "embedding"; out: string },
      ) => {
        const cfg = config();
        const runtime = new AiRuntime({ ...cfg, ai: { ...cfg.ai, gpu: "off" } }, silentLogger());
        try {
          const dir = await createPack({
            llama: await runtime.llama(),
            gguf: file,
            name: o.name,
            role: o.role,
            licence: o.licence,
            privatePem: readKeyFile(o.key, "signing key"),
            outDir: o.out,
          });
          out(`wrote     ${dir}`);
        } finally {
          await runtime.close();
        }
      },
    );
  modelsCmd
    .command("list")
    .description("installed models")
    .action(async () => {
      await withModels(async (owner) => out(modelRows(await listModels(owner.knex))));
    });
  modelsCmd
    .command("remove <name>")
    .description("remove a model and its file")
    .action(async (name: string) => {
      await withModels(async (owner, _runtime, cfg) => {
        const m = (await listModels(owner.knex)).find((x) => x.name === name || x.id === name);
        if (!m) throw new Error(`No model named ${name}.`);
        await removeModel(owner.knex, cfg, m.id);
        out(`removed   ${m.name}`);
      });
    });

  const auditCmd = cmd.command("audit").description("audit log");
  auditCmd
    .command("verify")
    .description(
      "recompute every audit chain (hashes and keyed MACs) and compare it with the signed checkpoints; exit 1 naming the first problem",
    )
    .option(
      "--checkpoints <file>",
      "a checkpoint file to compare with (a copy from the SIEM or another node); default: the data directory's",
    )
    .action(async (o: { checkpoints?: string }) => {
      const cfg = config();
      const masterKey = auditRootKey(cfg, silentLogger());
      const file = o.checkpoints ?? checkpointFile(cfg.dataDir);
      if (o.checkpoints && !existsSync(file)) {
        process.stderr.write(`--checkpoints: no such file: ${file}\n`);
        process.exit(2);
      }
      const checkpoints = readCheckpoints(file, checkpointKeys(masterKey).publicKey);
      const owner = openOwnerDatabase(cfg);
      try {
        const v = await verifyAuditChains(owner.knex, { masterKey, checkpoints });
        const cps = `${v.checkpoints.valid} signed checkpoints of ${v.checkpoints.chains} chains`;
        if (v.ok)
          out(
            `audit log intact: ${v.checked} records checked (${v.legacy} from before the chain was keyed), ${cps} match`,
          );
        else {
          const b = v.firstBroken;
          const where = `organization ${b?.orgId ?? "installation"}, sequence ${b?.seq}`;
          out(
            `audit log BROKEN${b?.id ? ` at record id ${b.id}` : ""} (${where}): ${b?.reason}. ${v.checked} records before it are intact.`,
          );
          process.exitCode = 1;
        }
      } finally {
        await owner.close();
      }
    });
  auditCmd
    .command("export")
    .description("write audit records as JSON lines, each with its chain proof (prevHash, hash, mac)")
    .option("--since <time>", "only records at or after this ISO 8601 time")
    .option("--org <id>", "only this organization's chain")
    .action(async (o: { since?: string; org?: string }) => {
      if (o.since && Number.isNaN(Date.parse(o.since))) {
        process.stderr.write(`--since: not an ISO 8601 time: ${o.since}\n`);
        process.exit(2);
      }
      const cfg = config();
      const owner = openOwnerDatabase(cfg);
      try {
        const rows = await owner
          .knex("audit_log")
          .modify((q) => {
            if (o.since) q.where("at", ">=", new Date(o.since));
            if (o.org) q.where("org_id", o.org);
          })
          .orderByRaw("coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid), seq")
          .select("*");
        for (const r of rows as Record<string, unknown>[]) {
          process.stdout.write(
            JSON.stringify({
              org: r.org_id,
              seq: Number(r.seq),
              at: (r.at as Date).toISOString(),
              actorType: r.actor_type,
              actorId: r.actor_id,
              action: r.action,
              targetType: r.target_type,
              targetId: r.target_id,
              ip: r.ip,
              userAgent: r.user_agent,
              outcome: r.outcome,
              details: r.details,
              proof: { prevHash: r.prev_hash, hash: r.hash, mac: r.mac },
            }) + "\n",
          );
        }
      } finally {
        await owner.close();
      }
    });
  auditCmd
    .command("checkpoint")
    .description(
      "write a signed checkpoint of every audit chain's head now (the worker does it periodically)",
    )
    .action(async () => {
      const cfg = config();
      const masterKey = auditRootKey(cfg, silentLogger());
      const owner = openOwnerDatabase(cfg);
      try {
        const n = await writeCheckpoints(owner.knex, {
          dataDir: cfg.dataDir,
          masterKey,
          sink: sinkOf(cfg.audit.sink),
          log: silentLogger(),
        });
        out(`${n} checkpoints written to ${checkpointFile(cfg.dataDir)}`);
      } finally {
        await owner.close();
      }
    });
  auditCmd
    .command("public-key")
    .description("print the public key that verifies audit checkpoints (PEM), for a SIEM")
    .action(() => {
      const cfg = config();
      out(
        checkpointKeys(auditRootKey(cfg, silentLogger()))
          .publicKey.export({ type: "spki", format: "pem" })
          .toString()
          .trim(),
      );
    });

  const secretsCmd = cmd.command("secrets").description("the master key and the secrets sealed with it");
  secretsCmd
    .command("rotate")
    .description(
      "replace the master key and re-seal every stored credential with it (stop the servers first; run again if interrupted)",
    )
    .option(
      "--new-key-file <file>",
      "the new key (at least 32 characters), needed when the key comes from the configuration rather than secrets/master.key",
    )
    .action(async (o: { newKeyFile?: string }) => {
      const cfg = config();
      const files = keyFiles(cfg);
      const oldKey = ensureMasterKey(cfg, silentLogger());
      const inFile = existsSync(files.master) && readFileSync(files.master, "utf8").trim() === oldKey;
      let newKey: string;
      if (existsSync(files.next)) newKey = readFileSync(files.next, "utf8").trim();
      else if (o.newKeyFile) newKey = readFileSync(o.newKeyFile, "utf8").trim();
      else if (inFile) newKey = randomBytes(48).toString("base64url");
      else {
        process.stderr.write(
          "The master key comes from the configuration: write a new key to a file and pass --new-key-file.\n",
        );
        process.exit(2);
      }
      if (newKey.length < 32 || newKey === oldKey) {
        process.stderr.write("The new key must be at least 32 characters and differ from the current one.\n");
        process.exit(2);
      }
      // The audit chain keeps the key it was written with (secrets/audit.key), so it stays verifiable.
      mkdirSync(files.dir, { recursive: true, mode: 0o700 });
      if (!existsSync(files.audit)) writeFileSync(files.audit, oldKey + "\n", { mode: 0o600, flag: "wx" });
      // The next key is on disk before the database changes: an interrupted rotation is finished by running
      // this again (values already sealed with it are recognised and left alone).
      if (inFile && !existsSync(files.next))
        writeFileSync(files.next, newKey + "\n", { mode: 0o600, flag: "wx" });
      const owner = openOwnerDatabase(cfg);
      let result: { resealed: number; alreadyNew: number };
      try {
        const columns = MODULES.flatMap((m) => m.sealed ?? []);
        result = await owner.knex.transaction((trx) => resealAll(trx, columns, oldKey, newKey));
      } finally {
        await owner.close();
      }
      if (inFile) renameSync(files.next, files.master);
      out(
        `re-sealed ${result.resealed} secrets with the new master key${result.alreadyNew ? ` (${result.alreadyNew} already were)` : ""}.`,
      );
      out(
        inFile
          ? `The new key is in ${files.master}; back it up with the database. Start the servers again.`
          : "Now set the new key in the configuration (as the file you passed), then start the servers.",
      );
    });

  const readKeyFile = (file: string, what: string) => {
    if (!existsSync(file)) throw new Error(`${what} file ${file} does not exist`);
    return readFileSync(file, "utf8").trim();
  };
  const collect = (v: string, prev: string[]) => [...prev, v];
  cmd
    .command("backup")
    .description(
      "write an encrypted backup of the database, knowledge-base index, files, configuration and master key (online with PostgreSQL; stop the server first with the embedded database)",
    )
    .option("--out <dir>", "where the archive goes (default: backup.dir, or <data dir>/backups)")
    .option("--passphrase-file <file>", "encrypt with the passphrase in this file")
    .option(
      "--recipient <age1...>",
      "encrypt to this age public key (repeatable; default: backup.recipients)",
      collect,
      [],
    )
    .option("--no-models", "leave model files out (they can be imported again)")
    .option("--keep <n>", "then delete all but the n newest archives in the folder (retention)", (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error("--keep must be a whole number of at least 1");
      return n;
    })
    .action(
      async (o: {
        out?: string;
        passphraseFile?: string;
        recipient: string[];
        models: boolean;
        keep?: number;
      }) => {
        const cfg = config();
        const recipients = o.recipient.length ? o.recipient : cfg.backup.recipients;
        const passphrase = o.passphraseFile
          ? readKeyFile(o.passphraseFile, "passphrase")
          : cfg.backup.passphrase;
        const backup = () =>
          createBackup({
            config: cfg,
            outDir: o.out,
            keys: o.passphraseFile ? { passphrase } : recipients.length ? { recipients } : { passphrase },
            includeModels: o.models,
            keep: o.keep,
            log: silentLogger(),
          });
        // On PostgreSQL the backup is recorded as a run the admin page lists (the embedded database is locked
        // by the backup itself, so it is not).
        let r: Awaited<ReturnType<typeof createBackup>>;
        if (cfg.database.url || cfg.database.ownerUrl) {
          const owner = openOwnerDatabase(cfg);
          try {
            r = await recordCommandBackup(owner.knex, silentLogger(), backup);
          } finally {
            await owner.close();
          }
        } else r = await backup();
        for (const f of r.removed) out(`removed   ${f} (retention: ${o.keep} kept)`);
        out(`wrote     ${r.file} (${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${r.manifest.files.length} files)`);
        out(
          `database  ${r.manifest.database.kind}, ${r.manifest.database.migrations.length} migrations; knowledge-base tables: ${Object.keys(r.manifest.lance).length}`,
        );
      },
    );
  cmd
    .command("restore <file>")
    .description(
      "restore a backup onto a fresh installation (empty database and data directory) of the same or a newer version, then migrate",
    )
    .option("--passphrase-file <file>", "the backup's passphrase (default: backup.passphrase)")
    .option(
      "--identity-file <file>",
      "an age identity file (AGE-SECRET-KEY-1...) for a backup made to recipients",
    )
    .option("--check", "only decrypt and check every file against the manifest; change nothing")
    .action(async (file: string, o: { passphraseFile?: string; identityFile?: string; check?: boolean }) => {
      const cfg = config();
      const keys = {
        passphrase: o.passphraseFile ? readKeyFile(o.passphraseFile, "passphrase") : cfg.backup.passphrase,
        identities: o.identityFile
          ? readKeyFile(o.identityFile, "identity")
              .split("\n")
              .map((l) => l.trim())
              .filter((l) => l.startsWith("AGE-SECRET-KEY-"))
          : [],
      };
      const m = o.check
        ? await verifyBackup(file, keys, cfg.dataDir)
        : await restoreBackup({ config: cfg, file, keys, log: silentLogger() });
      out(
        `${o.check ? "checked " : "restored"}  ${file}: version ${m.version} of ${m.createdAt}, ${m.files.length} files`,
      );
      if (!o.check) out("Run `worksynapse audit verify`, then start the server.");
    });

  const bundleCmd = cmd.command("bundle").description("offline bundles (docs/install.md)");
  bundleCmd
    .command("verify <file>")
    .description(
      "check a bundle's minisign signature, then every file in it against its SHA256SUMS; exit 1 naming the first problem",
    )
    .option(
      "--pubkey <file>",
      "the publisher's minisign public key (default: minisign.pub beside the bundle)",
    )
    .option("--sig <file>", "the signature (default: <file>.minisig)")
    .action(async (file: string, o: { pubkey?: string; sig?: string }) => {
      const pub = readKeyFile(o.pubkey ?? path.join(path.dirname(file), "minisign.pub"), "public key");
      const sig = readKeyFile(o.sig ?? `${file}.minisig`, "signature");
      const comment = await verifyFile(file, `${sig}\n`, pub);
      out(`signature ok: ${comment}`);
      const n = await verifyBundleContents(file);
      out(`contents  ok: ${n} files match SHA256SUMS`);
    });
  bundleCmd
    .command("keygen")
    .description(
      "create a signing key for bundles and model packs (keep it offline) and its minisign public key",
    )
    .requiredOption("--out <dir>", "where signing.key (mode 0600) and minisign.pub are written")
    .action((o: { out: string }) => {
      mkdirSync(o.out, { recursive: true });
      const k = generateSigningKey();
      writeFileSync(path.join(o.out, "signing.key"), k.privatePem, { mode: 0o600, flag: "wx" });
      writeFileSync(path.join(o.out, "minisign.pub"), k.publicKey, { flag: "wx" });
      out(`wrote     ${path.join(o.out, "signing.key")} (secret) and minisign.pub`);
    });

  cmd
    .command("upgrade")
    .description(
      "install a newer bundle: verify, back up, switch versions, migrate, start and health-check; roll back when that fails",
    )
    .requiredOption("--bundle <file>", "the new bundle (.tar.gz, with its .minisig beside it)")
    .option("--pubkey <file>", "the publisher's minisign.pub (default: minisign.pub beside the bundle)")
    .option("--prefix <dir>", "where WorkSynapse is installed", "/opt/worksynapse")
    .option("--health-url <url>", "what must answer 200 after the start", "http://127.0.0.1:8080/readyz")
    .option("--health-timeout <seconds>", "how long to wait for it", "120")
    .option("--stop-command <cmd>", "how the service is stopped", "systemctl stop worksynapse")
    .option("--start-command <cmd>", "how the service is started", "systemctl start worksynapse")
    .option("--backup-args <args>", "arguments of the backup taken first (e.g. '--recipient age1...')", "")
    .option("--no-backup", "upgrade without a backup (not advised)")
    .action(
      async (o: {
        bundle: string;
        pubkey?: string;
        prefix: string;
        healthUrl: string;
        healthTimeout: string;
        stopCommand: string;
        startCommand: string;
        backupArgs: string;
        backup: boolean;
      }) => {
        const result = await upgrade({
          bundle: o.bundle,
          pubkey: o.pubkey ?? path.join(path.dirname(o.bundle), "minisign.pub"),
          prefix: o.prefix,
          healthUrl: o.healthUrl,
          healthTimeoutMs: Number(o.healthTimeout) * 1000,
          stopCommand: o.stopCommand,
          startCommand: o.startCommand,
          backupArgs: o.backup ? o.backupArgs.split(/\s+/).filter(Boolean) : null,
          out,
          verifyContents: verifyBundleContents,
        });
        if (result === "rolled back") process.exitCode = 1;
      },
    );

  const dbCmd = cmd.command("db").description("database administration");
  dbCmd
    .command("setup")
    .description("create the owner and application roles and the database on PostgreSQL")
    .requiredOption("--admin-url <url>", "URL of a PostgreSQL superuser (used once, not stored)")
    .option("--database <name>", "database name", "worksynapse")
    .option("--owner-role <name>", "owner role (runs migrations)", "worksynapse_owner")
    .option("--app-role <name>", "application role (the server)", "worksynapse_app")
    .option(
      "--data-dir <dir>",
      "where the generated URLs are written",
      process.env.WORKSYNAPSE_DATA_DIR ?? "./data",
    )
    .action(
      async (o: {
        adminUrl: string;
        database: string;
        ownerRole: string;
        appRole: string;
        dataDir: string;
      }) => {
        await dbSetup({
          adminUrl: o.adminUrl,
          database: o.database,
          owner: o.ownerRole,
          app: o.appRole,
          dataDir: o.dataDir,
          out,
        });
      },
    );

  return cmd;
}
