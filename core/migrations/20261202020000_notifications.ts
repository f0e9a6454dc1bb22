import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

/**
 * The in-app notification center every module writes to (chat mentions now; reminders and workflow events
 * later): one row per recipient, stored in the same transaction as what caused it, read or not.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("notifications", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("kind").notNullable(); // e.g. chat.mention
    t.text("title").notNullable();
    t.text("body").notNullable().defaultTo("");
    // A path inside the app (never another host).
    t.text("link").notNullable();
    t.uuid("actor_id").references("id").inTable("users").onDelete("SET NULL");
    t.text("source_type");
    t.uuid("source_id");
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp("read_at", { useTz: true });
  });
  await knex.raw("create index notifications_user on notifications (org_id, user_id, created_at desc)");
  await knex.raw("create index notifications_unread on notifications (user_id) where read_at is null");
  await knex.raw("alter table notifications add constraint notifications_local_link check (link ~ '^/[^/]')");
  await enableTenantRls(knex, "notifications");
  await grantToApp(knex, "notifications", "SELECT, INSERT, UPDATE, DELETE");
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable("notifications");
}
