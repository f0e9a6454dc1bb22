import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

const orgColumn = (t: Knex.CreateTableBuilder) =>
  t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");
const ts = (t: Knex.CreateTableBuilder, name: string) => t.timestamp(name, { useTz: true });

/**
 * Enterprise sign-in: one SAML and one LDAP provider per organization, the SAML requests in flight (bound to
 * the browser that started them) and the assertion ids already used, users linked to a directory entry, and
 * roles that came from directory groups (replaced at each sign-in and sync; local grants are left alone).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("sso_providers", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.text("kind").notNullable(); // saml | ldap
    t.boolean("enabled").notNullable().defaultTo(false);
    t.text("label").notNullable();
    t.jsonb("config").notNullable().defaultTo("{}");
    // Secrets (LDAP service password), sealed with the installation's master key (AES-256-GCM).
    t.text("secret");
    // [{ group, roleId }]: directory group (DN or SAML group value) to role.
    t.jsonb("group_roles").notNullable().defaultTo("[]");
    t.uuid("default_role_id").references("id").inTable("roles").onDelete("SET NULL");
    t.integer("sync_minutes").notNullable().defaultTo(60);
    ts(t, "next_sync_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "last_sync_at");
    t.jsonb("last_sync").notNullable().defaultTo("{}");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
    t.unique(["org_id", "kind"]);
  });
  await knex.raw(
    "alter table sso_providers add constraint sso_providers_kind check (kind in ('saml', 'ldap'))",
  );

  await knex.schema.createTable("sso_settings", (t) => {
    t.uuid("org_id").primary().references("id").inTable("organizations").onDelete("CASCADE");
    t.boolean("sso_required").notNullable().defaultTo(false);
    // The one person who may still sign in with a password when SSO is required.
    t.uuid("break_glass_user_id").references("id").inTable("users").onDelete("SET NULL");
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable("saml_requests", (t) => {
    t.text("id").primary(); // the AuthnRequest ID, echoed as InResponseTo
    orgColumn(t);
    // sha256 of a random value kept in an HttpOnly cookie of the browser that started the request.
    t.text("binding").notNullable();
    t.text("mode").notNullable().defaultTo("sign_in"); // sign_in | test
    t.text("return_to").notNullable().defaultTo("/");
    t.uuid("tester_id").references("id").inTable("users").onDelete("CASCADE");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "expires_at").notNullable();
    ts(t, "used_at");
  });
  await knex.raw("create index saml_requests_expiry on saml_requests (expires_at)");

  await knex.schema.createTable("saml_replay", (t) => {
    orgColumn(t);
    t.text("assertion_id").notNullable();
    ts(t, "expires_at").notNullable();
    t.primary(["org_id", "assertion_id"]);
  });

  await knex.schema.alterTable("users", (t) => {
    t.text("external_source"); // saml | ldap
    t.text("external_id"); // SAML NameID or the directory entry's entryUUID / objectGUID / DN
  });
  await knex.raw(
    "create unique index users_external on users (org_id, external_source, external_id) where external_source is not null",
  );
  await knex.schema.alterTable("user_roles", (t) => {
    t.text("source").notNullable().defaultTo("local"); // local | sso
  });
  // What single logout needs of a session opened through SAML.
  await knex.schema.alterTable("sessions", (t) => {
    t.uuid("sso_provider_id").references("id").inTable("sso_providers").onDelete("SET NULL");
    t.text("saml_name_id");
    t.text("saml_name_id_format");
    t.text("saml_session_index");
  });

  for (const table of ["sso_providers", "sso_settings", "saml_requests", "saml_replay"]) {
    await enableTenantRls(knex, table);
    await grantToApp(knex, table, "SELECT, INSERT, UPDATE, DELETE");
  }

  // Before the organization is known: the organization of a sign-in URL, and what the sign-in page offers.
  await knex.raw(`
    create function sso_find_org(p_slug text) returns table (org_id uuid, org_name text)
    language sql stable security definer set search_path = public, pg_temp as $$
      select id, name from organizations where slug = p_slug
    $$`);
  await knex.raw(`
    create function sso_sign_in_options() returns table (slug text, org_name text, kind text, label text)
    language sql stable security definer set search_path = public, pg_temp as $$
      select o.slug, o.name, p.kind, p.label from sso_providers p join organizations o on o.id = p.org_id
      where p.enabled order by o.name, p.kind
    $$`);
  // Directory syncs that are due, claimed atomically (several nodes call this; each slot is taken once).
  await knex.raw(`
    create function sso_claim_due_syncs() returns table (org_id uuid, provider_id uuid, slot timestamptz)
    language sql volatile security definer set search_path = public, pg_temp as $$
      with due as (
        select id, next_sync_at from sso_providers
        where kind = 'ldap' and enabled and next_sync_at <= now()
        for update skip locked
      )
      update sso_providers p set next_sync_at = now() + make_interval(mins => p.sync_minutes)
      from due where p.id = due.id
      returning p.org_id, p.id, due.next_sync_at
    $$`);
  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  for (const fn of ["sso_find_org(text)", "sso_sign_in_options()", "sso_claim_due_syncs()"]) {
    await knex.raw(`revoke all on function ${fn} from public`);
    await knex.raw(`grant execute on function ${fn} to "${app}"`);
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const fn of ["sso_claim_due_syncs()", "sso_sign_in_options()", "sso_find_org(text)"]) {
    await knex.raw(`drop function ${fn}`);
  }
  await knex.schema.alterTable("sessions", (t) => {
    t.dropColumn("saml_session_index");
    t.dropColumn("saml_name_id_format");
    t.dropColumn("saml_name_id");
    t.dropColumn("sso_provider_id");
  });
  await knex.schema.alterTable("user_roles", (t) => t.dropColumn("source"));
  await knex.raw("drop index users_external");
  await knex.schema.alterTable("users", (t) => {
    t.dropColumn("external_id");
    t.dropColumn("external_source");
  });
  for (const table of ["saml_replay", "saml_requests", "sso_settings", "sso_providers"]) {
    await knex.schema.dropTable(table);
  }
}
