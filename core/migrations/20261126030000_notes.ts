import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

const orgColumn = (t: Knex.CreateTableBuilder) =>
  t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");

/** Notes with folders, tags, shares, per-user marks and version history; and the log of AI tool calls. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("note_folders", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("owner_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.uuid("parent_id").references("id").inTable("note_folders").onDelete("CASCADE");
    t.text("name").notNullable();
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index note_folders_owner on note_folders (owner_id)");

  await knex.schema.createTable("notes", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("owner_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.uuid("folder_id").references("id").inTable("note_folders").onDelete("SET NULL");
    t.text("title").notNullable();
    t.text("body").notNullable();
    // The optimistic-concurrency token: every content save increments it.
    t.integer("version").notNullable().defaultTo(1);
    t.uuid("updated_by").references("id").inTable("users").onDelete("SET NULL");
    t.timestamp("trashed_at", { useTz: true });
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp("updated_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(
    `alter table notes add column search tsvector generated always as
     (setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', body), 'B')) stored`,
  );
  await knex.raw("create index notes_search on notes using gin (search)");
  await knex.raw("create index notes_owner on notes (owner_id, updated_at desc)");

  await knex.schema.createTable("note_tags", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.text("name").notNullable();
  });
  await knex.raw("create unique index note_tags_name on note_tags (org_id, lower(name))");

  await knex.schema.createTable("note_tag_mapping", (t) => {
    orgColumn(t);
    t.uuid("note_id").notNullable().references("id").inTable("notes").onDelete("CASCADE");
    t.uuid("tag_id").notNullable().references("id").inTable("note_tags").onDelete("CASCADE");
    t.primary(["note_id", "tag_id"]);
  });
  await knex.raw("create index note_tag_mapping_tag on note_tag_mapping (tag_id)");

  await knex.schema.createTable("note_shares", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("note_id").notNullable().references("id").inTable("notes").onDelete("CASCADE");
    t.text("grantee_type").notNullable(); // user | group | role
    t.uuid("grantee_id").notNullable();
    t.text("access").notNullable(); // view | edit
    t.uuid("created_by").references("id").inTable("users").onDelete("SET NULL");
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(["note_id", "grantee_type", "grantee_id"]);
  });
  await knex.raw("create index note_shares_grantee on note_shares (grantee_type, grantee_id)");
  await knex.raw(
    "alter table note_shares add constraint note_shares_kind check (grantee_type in ('user','group','role') and access in ('view','edit'))",
  );

  // Stars and pins are each reader's own: a colleague starring a shared note changes nothing for the owner.
  await knex.schema.createTable("note_marks", (t) => {
    orgColumn(t);
    t.uuid("note_id").notNullable().references("id").inTable("notes").onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.boolean("starred").notNullable().defaultTo(false);
    t.boolean("pinned").notNullable().defaultTo(false);
    t.primary(["note_id", "user_id"]);
  });

  await knex.schema.createTable("note_versions", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("note_id").notNullable().references("id").inTable("notes").onDelete("CASCADE");
    t.integer("version").notNullable();
    t.text("title").notNullable();
    t.text("body").notNullable();
    t.uuid("author_id").references("id").inTable("users").onDelete("SET NULL");
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp("updated_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index note_versions_note on note_versions (note_id, version desc)");

  // The roles a user holds directly and through groups: one definition, used by sign-in and by note sharing.
  await knex.raw(`create function user_role_ids(p_user uuid) returns setof uuid language sql stable as $$
    select ur.role_id from user_roles ur where ur.user_id = p_user
    union select gr.role_id from group_roles gr join group_members gm on gm.group_id = gr.group_id
    where gm.user_id = p_user $$`);
  // Whether a grant to a user, group or role reaches a user (directly, by group membership, or by role).
  await knex.raw(`create function grantee_includes(p_type text, p_id uuid, p_user uuid) returns boolean
    language sql stable as $$
    select case p_type when 'user' then p_id = p_user
      when 'group' then exists (select 1 from group_members gm where gm.group_id = p_id and gm.user_id = p_user)
      when 'role' then p_id in (select user_role_ids(p_user)) else false end $$`);
  // What a user may do with a note: owner, edit, view, or null (nothing). Security invoker, so RLS applies.
  await knex.raw(`create function note_access(p_note uuid, p_owner uuid, p_user uuid) returns text
    language sql stable as $$
    select case when p_owner = p_user then 'owner' else (
      select case when bool_or(s.access = 'edit') then 'edit' when count(*) > 0 then 'view' end
      from note_shares s
      where s.note_id = p_note and grantee_includes(s.grantee_type, s.grantee_id, p_user)) end $$`);

  // Every tool call an AI run makes, with its outcome (the assistant adds its runs on top).
  await knex.schema.createTable("ai_tool_calls", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("user_id").references("id").inTable("users").onDelete("SET NULL");
    t.uuid("run_id");
    t.text("tool").notNullable();
    t.jsonb("input").notNullable();
    t.jsonb("output");
    t.text("status").notNullable(); // ok | error | denied | approval_required
    t.text("error");
    t.integer("duration_ms").notNullable().defaultTo(0);
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index ai_tool_calls_org on ai_tool_calls (org_id, created_at desc)");

  for (const table of [
    "note_folders",
    "notes",
    "note_tags",
    "note_tag_mapping",
    "note_shares",
    "note_marks",
    "note_versions",
  ]) {
    await enableTenantRls(knex, table);
    await grantToApp(knex, table, "SELECT, INSERT, UPDATE, DELETE");
  }
  await enableTenantRls(knex, "ai_tool_calls");
  // The log is append-only for the application.
  await grantToApp(knex, "ai_tool_calls", "SELECT, INSERT");
}

export async function down(knex: Knex): Promise<void> {
  for (const table of [
    "ai_tool_calls",
    "note_versions",
    "note_marks",
    "note_shares",
    "note_tag_mapping",
    "note_tags",
    "notes",
    "note_folders",
  ]) {
    await knex.schema.dropTable(table);
  }
  await knex.raw("drop function note_access(uuid, uuid, uuid)");
  await knex.raw("drop function grantee_includes(text, uuid, uuid)");
  await knex.raw("drop function user_role_ids(uuid)");
}
