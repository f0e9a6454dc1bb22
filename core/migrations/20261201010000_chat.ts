import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

const orgColumn = (t: Knex.CreateTableBuilder) =>
  t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");
const ts = (t: Knex.CreateTableBuilder, name: string) => t.timestamp(name, { useTz: true });

/**
 * Internal chat: channels (public, private, direct), their members with a read position, and messages. Each
 * channel numbers its messages (seq, assigned under the channel row's lock), so a client knows exactly what
 * it has missed after a reconnect, whatever node it reconnects to.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("chat_channels", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.text("kind").notNullable(); // public | private | direct
    t.text("name"); // null for direct messages
    t.text("topic").notNullable().defaultTo("");
    // For direct messages: the sorted member ids, so one pair (or group) has one conversation.
    t.text("direct_key");
    t.bigInteger("last_seq").notNullable().defaultTo(0);
    t.uuid("created_by").references("id").inTable("users").onDelete("SET NULL");
    ts(t, "archived_at");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(
    "alter table chat_channels add constraint chat_channels_kind check (kind in ('public', 'private', 'direct'))",
  );
  await knex.raw(
    "create unique index chat_channels_name on chat_channels (org_id, lower(name)) where kind <> 'direct'",
  );
  await knex.raw(
    "create unique index chat_channels_direct on chat_channels (org_id, direct_key) where kind = 'direct'",
  );

  await knex.schema.createTable("chat_members", (t) => {
    orgColumn(t);
    t.uuid("channel_id").notNullable().references("id").inTable("chat_channels").onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("role").notNullable().defaultTo("member"); // owner | member
    t.bigInteger("last_read_seq").notNullable().defaultTo(0);
    ts(t, "joined_at").notNullable().defaultTo(knex.fn.now());
    t.primary(["channel_id", "user_id"]);
  });
  await knex.raw("create index chat_members_user on chat_members (user_id)");

  await knex.schema.createTable("chat_messages", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("channel_id").notNullable().references("id").inTable("chat_channels").onDelete("CASCADE");
    t.bigInteger("seq").notNullable();
    t.uuid("user_id").references("id").inTable("users").onDelete("SET NULL");
    // A reply in a thread names the message it answers (threads are one level deep).
    t.uuid("parent_id").references("id").inTable("chat_messages").onDelete("CASCADE");
    t.text("body").notNullable();
    ts(t, "edited_at");
    ts(t, "deleted_at");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    t.unique(["channel_id", "seq"]);
  });
  await knex.raw(
    "alter table chat_messages add column search tsvector generated always as (to_tsvector('english', body)) stored",
  );
  await knex.raw("create index chat_messages_search on chat_messages using gin (search)");
  await knex.raw(
    "create index chat_messages_parent on chat_messages (parent_id) where parent_id is not null",
  );

  await knex.schema.createTable("chat_reactions", (t) => {
    orgColumn(t);
    t.uuid("message_id").notNullable().references("id").inTable("chat_messages").onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("emoji").notNullable();
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    t.primary(["message_id", "user_id", "emoji"]);
  });

  // Files shared in a message: stored under the chat directory, served only to people who can read it.
  await knex.schema.createTable("chat_attachments", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("channel_id").notNullable().references("id").inTable("chat_channels").onDelete("CASCADE");
    t.uuid("message_id").notNullable().references("id").inTable("chat_messages").onDelete("CASCADE");
    t.text("name").notNullable();
    t.text("mime").notNullable();
    t.bigInteger("size_bytes").notNullable();
    t.text("sha256").notNullable();
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index chat_attachments_message on chat_attachments (message_id)");

  for (const table of [
    "chat_channels",
    "chat_members",
    "chat_messages",
    "chat_reactions",
    "chat_attachments",
  ]) {
    await enableTenantRls(knex, table);
    await grantToApp(knex, table, "SELECT, INSERT, UPDATE, DELETE");
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const table of [
    "chat_attachments",
    "chat_reactions",
    "chat_messages",
    "chat_members",
    "chat_channels",
  ]) {
    await knex.schema.dropTable(table);
  }
}
