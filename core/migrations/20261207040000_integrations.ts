import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

const orgColumn = (t: Knex.CreateTableBuilder) =>
  t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");
const ts = (t: Knex.CreateTableBuilder, name: string) => t.timestamp(name, { useTz: true });

const TABLES = [
  "plugin_settings",
  "integration_connections",
  "oauth_states",
  "webhook_deliveries",
  "integration_events",
];

/**
 * Integrations: which plugins an organization enabled; its connections (credentials and webhook secret sealed
 * with keys derived from the master key, never readable as text by the database); OAuth authorizations in
 * flight; inbound webhook deliveries (one row per provider delivery, which is what makes a replay a no-op); and
 * the events plugins keep for the admin page.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("plugin_settings", (t) => {
    orgColumn(t);
    t.text("plugin_id").notNullable();
    t.boolean("enabled").notNullable().defaultTo(false);
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
    t.primary(["org_id", "plugin_id"]);
  });

  await knex.schema.createTable("integration_connections", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.text("plugin_id").notNullable();
    t.text("name").notNullable();
    t.text("base_url").notNullable();
    t.text("auth_kind").notNullable();
    /** Sealed JSON of the secrets (token, password, client secret, OAuth tokens). */
    t.text("credentials");
    /** What is not secret about the authorization: endpoints, client id, scopes, expiry. */
    t.jsonb("auth_info").notNullable().defaultTo("{}");
    t.text("webhook_secret");
    t.jsonb("settings").notNullable().defaultTo("{}");
    t.boolean("enabled").notNullable().defaultTo(true);
    t.jsonb("last_test");
    ts(t, "last_test_at");
    t.uuid("created_by").references("id").inTable("users").onDelete("SET NULL");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(
    "create unique index integration_connections_name on integration_connections (org_id, lower(name))",
  );
  await knex.raw(
    "alter table integration_connections add constraint integration_connections_auth check (auth_kind in ('none', 'token', 'basic', 'oauth2', 'client_credentials'))",
  );

  await knex.schema.createTable("oauth_states", (t) => {
    t.text("state").primary();
    orgColumn(t);
    t.uuid("connection_id")
      .notNullable()
      .references("id")
      .inTable("integration_connections")
      .onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("verifier").notNullable();
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable("webhook_deliveries", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("connection_id")
      .notNullable()
      .references("id")
      .inTable("integration_connections")
      .onDelete("CASCADE");
    /** The provider's delivery id, or a digest of the signed body: unique per connection. */
    t.text("delivery_key").notNullable();
    t.text("event").notNullable();
    t.jsonb("headers").notNullable();
    t.text("content_type").notNullable();
    t.text("body").notNullable();
    t.text("status").notNullable().defaultTo("queued");
    t.integer("attempts").notNullable().defaultTo(0);
    t.text("error");
    ts(t, "received_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "processed_at");
    t.unique(["connection_id", "delivery_key"]);
  });
  await knex.raw(
    "alter table webhook_deliveries add constraint webhook_deliveries_status check (status in ('queued', 'processed', 'failed'))",
  );
  await knex.raw(
    "create index webhook_deliveries_list on webhook_deliveries (connection_id, received_at desc)",
  );

  await knex.schema.createTable("integration_events", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("connection_id")
      .notNullable()
      .references("id")
      .inTable("integration_connections")
      .onDelete("CASCADE");
    t.uuid("delivery_id").references("id").inTable("webhook_deliveries").onDelete("SET NULL");
    t.text("type").notNullable();
    t.text("summary").notNullable();
    t.jsonb("payload");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(
    "create index integration_events_list on integration_events (connection_id, created_at desc)",
  );

  for (const table of TABLES) {
    await enableTenantRls(knex, table);
    await grantToApp(knex, table, "SELECT, INSERT, UPDATE, DELETE");
  }

  // A webhook arrives before its organization is known: the organization of a connection id, nothing more.
  await knex.raw(`
    create function integration_hook_org(p_connection uuid) returns uuid
    language sql stable security definer set search_path = public, pg_temp as $$
      select org_id from integration_connections where id = p_connection
    $$`);
  // Retention, across organizations: processed deliveries and recorded events older than the cut-off.
  await knex.raw(`
    create function integration_prune(p_before timestamptz) returns integer
    language sql volatile security definer set search_path = public, pg_temp as $$
      with d as (delete from webhook_deliveries where status = 'processed' and received_at < p_before returning 1),
           e as (delete from integration_events where created_at < p_before returning 1)
      select ((select count(*) from d) + (select count(*) from e))::integer
    $$`);
  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  for (const fn of ["integration_hook_org(uuid)", "integration_prune(timestamptz)"]) {
    await knex.raw(`revoke all on function ${fn} from public`);
    await knex.raw(`grant execute on function ${fn} to "${app}"`);
  }
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function if exists integration_hook_org(uuid)");
  await knex.raw("drop function if exists integration_prune(timestamptz)");
  for (const table of [...TABLES].reverse()) await knex.schema.dropTableIfExists(table);
}
