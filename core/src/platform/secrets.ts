import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Config } from "../config/schema.js";
import type { Knex } from "knex";
import type { Logger } from "./log.js";
import { openSecret, sealSecret } from "./crypto.js";

/** The installation's master key: configured, or kept in <data dir>/secrets/master.key (created on first start, mode 0600). */
export function ensureMasterKey(config: Config, log: Logger): string {
  if (config.secrets.masterKey) return config.secrets.masterKey;
  const dir = path.join(config.dataDir, "secrets");
  const file = path.join(dir, "master.key");
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(file, randomBytes(48).toString("base64url") + "\n", { mode: 0o600, flag: "wx" });
    chmodSync(file, 0o600);
    log.info({ file }, "created the installation's master key; back it up with the database");
  }
  return readFileSync(file, "utf8").trim();
}

const secretsDir = (config: Config) => path.join(config.dataDir, "secrets");

/**
 * The key the audit chain's MACs and checkpoint signatures derive from: the installation's first master key.
 * `worksynapse secrets rotate` keeps it in secrets/audit.key, so records and checkpoints written before a
 * rotation stay verifiable; until a rotation it is the master key itself.
 */
export function auditRootKey(config: Config, log: Logger): string {
  const file = path.join(secretsDir(config), "audit.key");
  return existsSync(file) ? readFileSync(file, "utf8").trim() : ensureMasterKey(config, log);
}

/** A column holding values sealed with `platform/crypto.ts`: its purpose, and the column that is its context. */
export interface SealedColumn {
  table: string;
  column: string;
  purpose: string;
  /** The column the value was sealed against (a unique key of the row). */
  context: string;
}

/**
 * Re-seals every value of these columns from `oldKey` to `newKey`, organization by organization (row-level
 * security applies to the owner too), in the caller's transaction. A value that already opens with the new key
 * (a rotation interrupted after its commit and run again) is left as it is. Returns how many were re-sealed.
 */
export async function resealAll(
  trx: Knex.Transaction,
  columns: SealedColumn[],
  oldKey: string,
  newKey: string,
): Promise<{ resealed: number; alreadyNew: number }> {
  let resealed = 0;
  let alreadyNew = 0;
  const orgs = (await trx("organizations").pluck("id")) as string[];
  for (const orgId of orgs) {
    await trx.raw("select set_config('app.org_id', ?, true)", [orgId]);
    for (const c of columns) {
      const rows = (await trx(c.table)
        .whereNotNull(c.column)
        .select(`${c.context} as ctx`, `${c.column} as v`)) as {
        ctx: string;
        v: string;
      }[];
      for (const { ctx, v } of rows) {
        let plain: string;
        try {
          plain = openSecret(oldKey, c.purpose, v, String(ctx));
        } catch {
          openSecret(newKey, c.purpose, v, String(ctx)); // throws when neither key opens it
          alreadyNew += 1;
          continue;
        }
        await trx(c.table)
          .where(c.context, ctx)
          .update({ [c.column]: sealSecret(newKey, c.purpose, plain, String(ctx)) });
        resealed += 1;
      }
    }
  }
  return { resealed, alreadyNew };
}

/** The files of a rotation: the key in use, the next one (present only while a rotation is unfinished). */
export function keyFiles(config: Config) {
  const dir = secretsDir(config);
  return {
    dir,
    master: path.join(dir, "master.key"),
    next: path.join(dir, "master.key.next"),
    audit: path.join(dir, "audit.key"),
  };
}

/** Refuses to start a server while a rotation is unfinished (which key opens the stored secrets is unknown). */
export function assertNoPendingRotation(config: Config): void {
  if (existsSync(keyFiles(config).next))
    throw new Error(
      "secrets/master.key.next exists: a `worksynapse secrets rotate` was interrupted; run it again to finish it",
    );
}
