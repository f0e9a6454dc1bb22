import type { Knex } from "knex";
import { grantToApp } from "../src/platform/db/migrate.js";

/**
 * A model may hold several roles (chat and embedding) without its file being imported twice: `role` becomes
 * `roles`, at least one of chat, embedding. System administrators change a model's roles (UPDATE).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("ai_models", (t) => {
    t.specificType("roles", "text[]").notNullable().defaultTo("{}");
  });
  await knex.raw("update ai_models set roles = array[role]");
  await knex.schema.alterTable("ai_models", (t) => t.dropColumn("role"));
  await knex.raw(
    "alter table ai_models add constraint ai_models_roles check (cardinality(roles) > 0 and roles <@ array['chat', 'embedding'])",
  );
  await grantToApp(knex, "ai_models", "UPDATE");
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("alter table ai_models drop constraint ai_models_roles");
  await knex.schema.alterTable("ai_models", (t) => t.text("role"));
  await knex.raw("update ai_models set role = roles[1]");
  await knex.raw("alter table ai_models alter column role set not null");
  await knex.schema.alterTable("ai_models", (t) => t.dropColumn("roles"));
  const app = (await knex.raw("select current_setting('worksynapse.app_role', true) as r")).rows[0]
    ?.r as string;
  if (app) await knex.raw(`revoke update on ai_models from "${app}"`);
}
