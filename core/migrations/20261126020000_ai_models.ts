import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

/** Local models installed on this server (installation-wide) and each organization's default choices. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("ai_models", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    t.text("name").notNullable().unique();
    t.text("sha256").notNullable().unique();
    t.bigInteger("size_bytes").notNullable();
    t.text("role").notNullable(); // chat | embedding
    t.text("architecture").notNullable();
    t.bigInteger("parameter_count");
    t.text("quantization");
    t.integer("context_length");
    t.integer("embedding_length");
    t.boolean("has_chat_template").notNullable().defaultTo(false);
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.schema.createTable("ai_org_models", (t) => {
    t.uuid("org_id").primary().references("id").inTable("organizations").onDelete("CASCADE");
    t.uuid("chat_model_id").references("id").inTable("ai_models").onDelete("SET NULL");
    t.uuid("embedding_model_id").references("id").inTable("ai_models").onDelete("SET NULL");
  });
  await enableTenantRls(knex, "ai_org_models");
  // The catalog is shared by every organization; imports and removals are system-administrator actions.
  await grantToApp(knex, "ai_models", "SELECT, INSERT, DELETE");
  await grantToApp(knex, "ai_org_models", "SELECT, INSERT, UPDATE, DELETE");
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable("ai_org_models");
  await knex.schema.dropTable("ai_models");
}
