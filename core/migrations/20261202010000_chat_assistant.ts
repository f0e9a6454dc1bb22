import type { Knex } from "knex";

/**
 * @assistant in chat: the assistant's replies are chat messages of their own kind, answering the person who
 * asked (asked_by), linked to the run that wrote them, and carrying the action waiting for that person's
 * approval while there is one.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("chat_messages", (t) => {
    t.text("author_kind").notNullable().defaultTo("user"); // user | assistant
    t.uuid("asked_by").references("id").inTable("users").onDelete("SET NULL");
    t.uuid("ai_run_id").references("id").inTable("ai_runs").onDelete("SET NULL");
    t.jsonb("ai_pending");
  });
  await knex.raw(
    "alter table chat_messages add constraint chat_messages_author_kind check (author_kind in ('user', 'assistant'))",
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("alter table chat_messages drop constraint chat_messages_author_kind");
  await knex.schema.alterTable("chat_messages", (t) => {
    t.dropColumn("ai_pending");
    t.dropColumn("ai_run_id");
    t.dropColumn("asked_by");
    t.dropColumn("author_kind");
  });
}
