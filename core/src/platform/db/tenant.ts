import type { Knex } from "knex";

/** Runs `fn` in a transaction scoped to one organization for row-level security. */
export async function withOrg<T>(
  knex: Knex,
  orgId: string,
  fn: (trx: Knex.Transaction) => Promise<T>,
): Promise<T> {
  return knex.transaction(async (trx) => {
    // is_local = true: the setting ends with the transaction, so a pooled connection never carries it over.
    await trx.raw("select set_config('app.org_id', ?, true)", [orgId]);
    return fn(trx);
  });
}

/**
 * Runs `fn` in the same transaction as another organization (system administration), then restores the
 * caller's organization. A second connection would deadlock the single-connection embedded database.
 */
export async function asOtherOrg<T>(
  trx: Knex.Transaction,
  callerOrg: string,
  otherOrg: string,
  fn: (trx: Knex.Transaction) => Promise<T>,
): Promise<T> {
  await trx.raw("select set_config('app.org_id', ?, true)", [otherOrg]);
  try {
    return await fn(trx);
  } finally {
    await trx.raw("select set_config('app.org_id', ?, true)", [callerOrg]);
  }
}
