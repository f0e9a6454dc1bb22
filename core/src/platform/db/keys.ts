import type { Knex } from "knex";

/**
 * The installation's audit key (see platform/secrets.ts `auditRootKey`), by database handle. Records that must
 * be keyed with a secret the database never sees (the audit chain's MACs) are written through any handle of the
 * process: the knex instance and every transaction opened from it share one client configuration object, which
 * is the key here.
 */
const keys = new WeakMap<object, string>();

const configOf = (db: Knex | Knex.Transaction) =>
  (db as unknown as { client: { config: object } }).client.config;

/** Binds the audit key to a database handle (done once, where the handle is opened). */
export function bindAuditKey(db: Knex, auditKey: string): void {
  keys.set(configOf(db), auditKey);
}

/** The audit key bound to a handle or one of its transactions; throws when none was bound. */
export function auditKeyOf(db: Knex | Knex.Transaction): string {
  const key = keys.get(configOf(db));
  if (!key) throw new Error("no audit key is bound to this database handle (see platform/db/keys.ts)");
  return key;
}
