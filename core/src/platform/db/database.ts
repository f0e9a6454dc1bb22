import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import knexPkg, { type Knex } from "knex";
import ClientPgLite from "knex-pglite";
import type { Config } from "../../config/schema.js";
import { silentLogger, type Logger } from "../log.js";
import { auditRootKey } from "../secrets.js";
import { bindAuditKey } from "./keys.js";
import { runMigrations } from "./migrate.js";

/** Knex instance type used throughout core. */
export type Db = Knex;

/** An open database of the running server, connected as the application role. */
export interface Database {
  knex: Knex;
  kind: "postgres" | "pglite";
  /** Throws when the database does not answer. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** Creates the application role if missing (NOLOGIN, NOBYPASSRLS) and lets the owner switch to it. */
export async function ensureAppRole(knex: Knex, appRole: string): Promise<void> {
  const found = await knex.raw("select rolbypassrls, rolsuper from pg_roles where rolname = ?", [appRole]);
  const row = found.rows[0] as { rolbypassrls: boolean; rolsuper: boolean } | undefined;
  if (!row) {
    try {
      await knex.raw(`create role ${quoteIdent(appRole)} nologin nobypassrls`);
    } catch (err) {
      // Two processes migrating at once may both try; the role existing is what matters.
      if ((err as { code?: string }).code !== "42710" && (err as { code?: string }).code !== "23505")
        throw err;
    }
  } else if (row.rolbypassrls || row.rolsuper) {
    throw new Error(
      `Database role ${appRole} is a superuser or has BYPASSRLS; the server refuses to run as it.`,
    );
  }
  const member = await knex.raw("select pg_has_role(current_user, ?, 'MEMBER') as ok", [appRole]);
  if (!(member.rows[0] as { ok: boolean }).ok) {
    await knex.raw(`grant ${quoteIdent(appRole)} to current_user`);
  }
}

/** Checks that the current role of a connection cannot bypass row-level security. */
async function assertSafeRole(knex: Knex): Promise<void> {
  const r = await knex.raw(
    "select current_user as name, rolsuper, rolbypassrls from pg_roles where rolname = current_user",
  );
  const row = r.rows[0] as { name: string; rolsuper: boolean; rolbypassrls: boolean };
  if (row.rolsuper || row.rolbypassrls) {
    throw new Error(
      `The server's database role ${row.name} can bypass row-level security; refusing to start.`,
    );
  }
}

/** Holds <dir>.lock with our pid so two processes never open one PGlite directory. */
function lockDir(dir: string): () => void {
  const lock = `${dir}.lock`;
  if (existsSync(lock)) {
    const pid = Number(readFileSync(lock, "utf8"));
    let alive = false;
    if (pid === process.pid) alive = true;
    else if (pid > 0) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch {
        alive = false;
      }
    }
    if (alive) {
      throw new Error(
        `The embedded database at ${dir} is in use by process ${pid}. Stop it first (PGlite allows one process).`,
      );
    }
    rmSync(lock, { force: true });
  }
  const fd = openSync(lock, "wx");
  writeSync(fd, String(process.pid));
  closeSync(fd);
  return () => rmSync(lock, { force: true });
}

/** Opens an embedded PGlite database in the data directory as its superuser (owner). */
function openPglite(config: Config): { knex: Knex; unlock: () => void } {
  const dir = path.join(config.dataDir, "pgdata");
  mkdirSync(config.dataDir, { recursive: true });
  const unlock = lockDir(dir);
  const knex = knexPkg.knex({ client: ClientPgLite, dialect: "postgres", connection: { filename: dir } });
  return { knex, unlock };
}

/** Opens a PostgreSQL pool; `sessionSql` runs on every new connection (role switch, settings). */
function openPostgres(url: string, poolMax: number, sessionSql?: string): Knex {
  return knexPkg.knex({
    client: "pg",
    connection: url,
    pool: {
      min: 0,
      max: poolMax,
      afterCreate: (
        conn: { query: (sql: string, cb: (err: Error | null) => void) => void },
        done: (err: Error | null, conn: unknown) => void,
      ) => {
        if (!sessionSql) return done(null, conn);
        conn.query(sessionSql, (err) => done(err, conn));
      },
    },
    acquireConnectionTimeout: 10000,
  });
}

/** Opens a database as its owner, for migrations and installer commands. */
export function openOwnerDatabase(config: Config): {
  knex: Knex;
  kind: "postgres" | "pglite";
  close(): Promise<void>;
} {
  const auditKey = auditRootKey(config, silentLogger());
  if (!config.database.url && !config.database.ownerUrl) {
    const { knex, unlock } = openPglite(config);
    bindAuditKey(knex, auditKey);
    return {
      knex,
      kind: "pglite",
      close: async () => {
        await knex.destroy();
        unlock();
      },
    };
  }
  const roleLiteral = `'${config.database.appRole}'`; // the schema restricts it to [a-z0-9_]
  const knex = openPostgres(
    (config.database.ownerUrl ?? config.database.url) as string,
    2,
    `select set_config('worksynapse.app_role', ${roleLiteral}, false)`,
  );
  bindAuditKey(knex, auditKey);
  return { knex, kind: "postgres", close: () => knex.destroy() };
}

export interface OpenOptions {
  /** Run pending migrations (as the owner) before serving. */
  migrate: boolean;
  log: Logger;
}

/** Opens the server's database: migrates if asked, then connects as the application role. */
export async function openDatabase(config: Config, opts: OpenOptions): Promise<Database> {
  const appRole = config.database.appRole;
  if (!config.database.url) {
    opts.log.warn(
      { dataDir: config.dataDir },
      "using the embedded PGlite database: single node only, one process; set DATABASE_URL for PostgreSQL",
    );
    const owner = openOwnerDatabase(config);
    const knex = owner.knex;
    try {
      if (opts.migrate) await runMigrations(knex, appRole, "latest", opts.log);
      await ensureAppRole(knex, appRole);
      // One connection only: switching it to the app role makes every later query run as that role.
      await knex.raw(`set role ${quoteIdent(appRole)}`);
      await assertSafeRole(knex);
    } catch (err) {
      await owner.close();
      throw err;
    }
    return {
      knex,
      kind: "pglite",
      ping: async () => {
        await knex.raw("select 1");
      },
      close: owner.close,
    };
  }
  if (opts.migrate) {
    const owner = openOwnerDatabase(config);
    try {
      await runMigrations(owner.knex, appRole, "latest", opts.log);
    } finally {
      await owner.close();
    }
  }
  const knex = openPostgres(config.database.url, config.database.poolMax, `set role ${quoteIdent(appRole)}`);
  bindAuditKey(knex, auditRootKey(config, opts.log));
  try {
    await assertSafeRole(knex);
  } catch (err) {
    await knex.destroy();
    throw err;
  }
  return {
    knex,
    kind: "postgres",
    ping: async () => {
      await knex.raw("select 1");
    },
    close: () => knex.destroy(),
  };
}
