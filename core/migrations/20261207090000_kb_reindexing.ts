import type { Knex } from "knex";

/**
 * An organization's index being rebuilt in place (a re-index whose embedding model has the old one's vector
 * size): the old passages stay searchable by full text until every document's new passages are in.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("kb_index_state", (t) =>
    t.boolean("reindexing").notNullable().defaultTo(false),
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("kb_index_state", (t) => t.dropColumn("reindexing"));
}
