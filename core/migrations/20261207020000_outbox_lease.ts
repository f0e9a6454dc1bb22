import type { Knex } from "knex";

/**
 * Outbox rows are leased, not locked, while the relay publishes them: the relay claims a batch in one statement
 * (a lease of a few seconds), publishes with no transaction open, then marks the rows published. Before, the
 * relay held a transaction (and on the embedded database its only connection) for as long as the bus took to
 * answer, so a bus outage stalled every request.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("outbox", (t) => t.timestamp("lease_until", { useTz: true }));
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("outbox", (t) => t.dropColumn("lease_until"));
}
