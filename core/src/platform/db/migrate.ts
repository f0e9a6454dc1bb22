import { readdirSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";
import type { Knex } from "knex";
import type { Logger } from "../log.js";

/** A migration module: one change, with both directions. */
export interface Migration {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

/** The folder of migrations: core/migrations in source, dist/migrations when built. */
export const MIGRATIONS_DIR = fileURLToPath(new URL("../../../migrations/", import.meta.url));

const isMigrationFile = (f: string) => /^\d{14}_[\w-]+\.(ts|js)$/.test(f) && !f.endsWith(".d.ts");

/** Lists migrations by timestamped file name; the file extension is dropped so source and build agree. */
class FolderSource implements Knex.MigrationSource<string> {
  constructor(private readonly dir: string) {}
  async getMigrations(): Promise<string[]> {
    return readdirSync(this.dir).filter(isMigrationFile).sort();
  }
  getMigrationName(file: string): string {
    return file.replace(/\.(ts|js)$/, "");
  }
  async getMigration(file: string): Promise<Knex.Migration> {
    return (await import(pathToFileURL(path.join(this.dir, file)).href)) as Migration;
  }
}

/** Grants privileges on a table to the application role named for this migration run. */
export async function grantToApp(knex: Knex, table: string, privileges: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(table) || !/^[A-Z, ]+$/.test(privileges)) throw new Error("bad grant");
  const role = (await knex.raw("select current_setting('worksynapse.app_role', true) as r")).rows[0]?.r as
    string | undefined;
  if (!role) throw new Error("worksynapse.app_role is not set; run migrations through runMigrations()");
  await knex.raw(`grant ${privileges} on ${table} to "${role}"`);
  if (privileges.includes("INSERT")) {
    const seqs = await knex.raw(
      `select s.relname from pg_class s join pg_depend d on d.objid = s.oid join pg_class t on d.refobjid = t.oid
       where s.relkind = 'S' and t.relname = ?`,
      [table],
    );
    for (const { relname } of seqs.rows as { relname: string }[]) {
      await knex.raw(`grant usage, select on sequence "${relname}" to "${role}"`);
    }
  }
}

/** The actions of `worksynapse migrate`. */
export type MigrateAction = "latest" | "up" | "down" | "rollback-all" | "status";

/** Status of every migration: name and whether it has run. */
export interface MigrationStatus {
  name: string;
  applied: boolean;
}

/** Runs migrations as the owner; the app role name is passed to grants through a session setting. */
export async function runMigrations(
  knex: Knex,
  appRole: string,
  action: MigrateAction,
  log: Logger,
): Promise<MigrationStatus[]> {
  const { ensureAppRole } = await import("./database.js");
  await ensureAppRole(knex, appRole);
  // Grants read the role name from this setting; session scope, since knex runs each migration in its own transaction.
  await knex.raw("select set_config('worksynapse.app_role', ?, false)", [appRole]);
  const config: Knex.MigratorConfig = { migrationSource: new FolderSource(MIGRATIONS_DIR) };
  const migrator = knex.migrate;
  if (action === "latest") {
    const [, done] = (await migrator.latest(config)) as [number, string[]];
    if (done.length) log.info({ migrations: done }, "migrations applied");
  } else if (action === "up") {
    await migrator.up(config);
  } else if (action === "down") {
    await migrator.down(config);
  } else if (action === "rollback-all") {
    await migrator.rollback(config, true);
  }
  // With a custom source, knex lists pending migrations as the source's own items (file names).
  const [completed, pending] = (await migrator.list(config)) as [{ name: string }[], string[]];
  const names = new FolderSource(MIGRATIONS_DIR);
  return [
    ...completed.map((c) => ({ name: c.name, applied: true })),
    ...pending.map((p) => ({ name: names.getMigrationName(p), applied: false })),
  ];
}

/** The expression every tenant policy compares org_id with: no setting means no rows. */
export const ORG_SETTING = "nullif(current_setting('app.org_id', true), '')::uuid";

/** Enables and forces row-level security on a tenant table, with one policy for reads and writes. */
export async function enableTenantRls(knex: Knex, table: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new Error("bad table name");
  await knex.raw(`alter table ${table} enable row level security`);
  await knex.raw(`alter table ${table} force row level security`);
  await knex.raw(
    `create policy tenant_isolation on ${table} using (org_id = ${ORG_SETTING}) with check (org_id = ${ORG_SETTING})`,
  );
}
