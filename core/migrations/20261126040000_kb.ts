import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

const orgColumn = (t: Knex.CreateTableBuilder) =>
  t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");

/** Knowledge base: collections with access grants, documents and their ingestion state. Chunks live in LanceDB. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("kb_collections", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("owner_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("name").notNullable();
    t.text("description").notNullable().defaultTo("");
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create unique index kb_collections_name on kb_collections (org_id, lower(name))");

  await knex.schema.createTable("kb_collection_shares", (t) => {
    orgColumn(t);
    t.uuid("collection_id").notNullable().references("id").inTable("kb_collections").onDelete("CASCADE");
    t.text("grantee_type").notNullable(); // user | group | role
    t.uuid("grantee_id").notNullable();
    t.text("access").notNullable(); // view | manage
    t.primary(["collection_id", "grantee_type", "grantee_id"]);
  });
  await knex.raw(
    "alter table kb_collection_shares add constraint kb_shares_kind check (grantee_type in ('user','group','role') and access in ('view','manage'))",
  );

  await knex.schema.createTable("kb_documents", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("collection_id").notNullable().references("id").inTable("kb_collections").onDelete("CASCADE");
    t.text("name").notNullable();
    t.text("kind").notNullable(); // pdf | docx | txt | md | html | csv
    t.text("mime").notNullable();
    t.bigInteger("size_bytes").notNullable();
    t.text("sha256").notNullable();
    // Bumped by every re-upload and re-index: chunks of older generations are not served.
    t.integer("generation").notNullable().defaultTo(1);
    // The generation search serves: the last one fully indexed (the previous stays searchable until then).
    t.integer("indexed_generation");
    // LanceDB may hold chunks of other generations than the served one (being written, or not yet removed).
    t.boolean("stale").notNullable().defaultTo(false);
    t.text("status").notNullable().defaultTo("queued"); // queued | extracting | chunking | embedding | indexed | failed
    t.integer("progress").notNullable().defaultTo(0);
    t.text("error");
    t.integer("pages");
    t.integer("chunk_count").notNullable().defaultTo(0);
    t.boolean("has_vectors").notNullable().defaultTo(false);
    t.uuid("uploaded_by").references("id").inTable("users").onDelete("SET NULL");
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp("updated_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp("indexed_at", { useTz: true });
    t.unique(["collection_id", "sha256"]);
  });
  await knex.raw("create index kb_documents_collection on kb_documents (collection_id, name)");
  // The documents a search must check hit by hit: not yet indexed, being replaced, or with old chunks left.
  await knex.raw(
    "create index kb_documents_unsettled on kb_documents (org_id) where stale or indexed_generation is distinct from generation",
  );

  // Deleted documents whose chunks the worker has not removed yet: search leaves them out meanwhile.
  await knex.schema.createTable("kb_document_tombstones", (t) => {
    t.uuid("document_id").primary();
    orgColumn(t);
    t.timestamp("deleted_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  // Which embedding model the organization's index was built with (null: full text only).
  await knex.schema.createTable("kb_index_state", (t) => {
    t.uuid("org_id").primary().references("id").inTable("organizations").onDelete("CASCADE");
    t.uuid("embedding_model_id").references("id").inTable("ai_models").onDelete("SET NULL");
    t.integer("dimension");
    t.timestamp("updated_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  // What a user may do with a collection: owner, manage, view, or null. Security invoker, so RLS applies.
  await knex.raw(`create function kb_collection_access(p_collection uuid, p_owner uuid, p_user uuid) returns text
    language sql stable as $$
    select case when p_owner = p_user then 'owner' else (
      select case when bool_or(s.access = 'manage') then 'manage' when count(*) > 0 then 'view' end
      from kb_collection_shares s
      where s.collection_id = p_collection and grantee_includes(s.grantee_type, s.grantee_id, p_user)) end $$`);

  for (const table of [
    "kb_collections",
    "kb_collection_shares",
    "kb_documents",
    "kb_document_tombstones",
    "kb_index_state",
  ]) {
    await enableTenantRls(knex, table);
    await grantToApp(knex, table, "SELECT, INSERT, UPDATE, DELETE");
  }
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function kb_collection_access(uuid, uuid, uuid)");
  for (const table of [
    "kb_index_state",
    "kb_document_tombstones",
    "kb_documents",
    "kb_collection_shares",
    "kb_collections",
  ]) {
    await knex.schema.dropTable(table);
  }
}
