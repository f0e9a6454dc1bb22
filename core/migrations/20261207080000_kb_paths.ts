import type { Knex } from "knex";

/**
 * Documents keep the relative path they were uploaded with (a folder upload: `guides/install/index.md`): a
 * document is identified by its collection and path, so files of one name in different folders are different
 * documents, and the same path again replaces its document. Existing documents' path is their name.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("kb_documents", (t) => t.text("path"));
  await knex.raw("update kb_documents set path = name");
  await knex.raw("alter table kb_documents alter column path set not null");
  await knex.raw("create unique index kb_documents_path on kb_documents (collection_id, path)");
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop index kb_documents_path");
  await knex.schema.alterTable("kb_documents", (t) => t.dropColumn("path"));
}
