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
