import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

const ts = (t: Knex.CreateTableBuilder, name: string) => t.timestamp(name, { useTz: true });
const created = (t: Knex.CreateTableBuilder, knex: Knex) =>
  ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
const orgRef = (t: Knex.CreateTableBuilder) =>
  t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");

/**
 * Organizations, users, roles, groups, sessions, API keys, invitations, settings, usage and the audit log.
 * The permission catalog is code (modules/catalog.ts), not a table.
 */
export async function up(knex: Knex): Promise<void> {
  const owner = await knex.raw(
    "select rolsuper or rolbypassrls as ok from pg_roles where rolname = current_user",
  );
  if (!(owner.rows[0] as { ok: boolean }).ok) {
    throw new Error(
      "The migration role needs BYPASSRLS (or superuser): it maintains every organization's rows. " +
        "`worksynapse db setup` creates it that way; or run ALTER ROLE <owner> BYPASSRLS as a superuser.",
    );
  }

  await knex.schema.createTable("organizations", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    t.text("name").notNullable();
    t.text("slug").notNullable().unique();
    t.text("plan").notNullable().defaultTo("starter");
    t.jsonb("plan_overrides").notNullable().defaultTo("{}");
    created(t, knex);
  });
  // An organization sees its own row only.
  await knex.raw("alter table organizations enable row level security");
  await knex.raw("alter table organizations force row level security");
  await knex.raw(
    "create policy tenant_isolation on organizations using (id = nullif(current_setting('app.org_id', true), '')::uuid) with check (id = nullif(current_setting('app.org_id', true), '')::uuid)",
  );

  await knex.schema.createTable("users", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgRef(t);
    t.text("email").notNullable();
    t.text("display_name").notNullable();
    t.text("password_hash");
    t.text("status").notNullable().defaultTo("active"); // active | deactivated
    t.boolean("system_admin").notNullable().defaultTo(false);
    t.integer("failed_logins").notNullable().defaultTo(0);
    ts(t, "failed_window_start");
    ts(t, "locked_until");
    ts(t, "password_changed_at");
    ts(t, "last_login_at");
    created(t, knex);
  });
  // One account per address in the installation: sign-in needs no organization picker.
  await knex.raw("create unique index users_email on users (lower(email))");
  await knex.raw("create index users_org on users (org_id)");

  await knex.schema.createTable("roles", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgRef(t);
    t.text("key").notNullable(); // owner, admin, member, guest, auditor, or custom-<slug>
    t.text("name").notNullable();
    t.text("description").notNullable().defaultTo("");
    t.boolean("builtin").notNullable().defaultTo(false);
    t.specificType("permissions", "text[]").notNullable().defaultTo("{}");
    created(t, knex);
    t.unique(["org_id", "key"]);
  });

  await knex.schema.createTable("user_roles", (t) => {
    orgRef(t);
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.uuid("role_id").notNullable().references("id").inTable("roles").onDelete("CASCADE");
    t.primary(["user_id", "role_id"]);
  });

  await knex.schema.createTable("groups", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgRef(t);
    t.text("name").notNullable();
    t.text("description").notNullable().defaultTo("");
    t.text("external_id"); // directory group DN, for SSO mapping
    created(t, knex);
    t.unique(["org_id", "name"]);
  });
  await knex.schema.createTable("group_members", (t) => {
    orgRef(t);
    t.uuid("group_id").notNullable().references("id").inTable("groups").onDelete("CASCADE");
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.primary(["group_id", "user_id"]);
  });
  await knex.schema.createTable("group_roles", (t) => {
    orgRef(t);
    t.uuid("group_id").notNullable().references("id").inTable("groups").onDelete("CASCADE");
    t.uuid("role_id").notNullable().references("id").inTable("roles").onDelete("CASCADE");
    t.primary(["group_id", "role_id"]);
  });

  await knex.schema.createTable("sessions", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgRef(t);
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("token_hash").notNullable().unique();
    t.text("ip");
    t.text("user_agent");
    created(t, knex);
    ts(t, "last_seen_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "expires_at").notNullable();
    ts(t, "revoked_at");
  });
  await knex.raw("create index sessions_user on sessions (user_id)");

  await knex.schema.createTable("api_keys", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgRef(t);
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("name").notNullable();
    t.text("prefix").notNullable().unique();
    t.text("key_hash").notNullable();
    t.specificType("permissions", "text[]").notNullable();
    ts(t, "expires_at");
    ts(t, "last_used_at");
    ts(t, "revoked_at");
    created(t, knex);
  });

  await knex.schema.createTable("invitations", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgRef(t);
    t.text("email").notNullable();
    t.uuid("role_id").notNullable().references("id").inTable("roles").onDelete("CASCADE");
    t.text("token_hash").notNullable().unique();
    t.uuid("created_by").notNullable().references("id").inTable("users").onDelete("CASCADE");
    ts(t, "expires_at").notNullable();
    ts(t, "accepted_at");
    created(t, knex);
  });

  await knex.schema.createTable("tenant_settings", (t) => {
    t.uuid("org_id").primary().references("id").inTable("organizations").onDelete("CASCADE");
    t.jsonb("settings").notNullable().defaultTo("{}");
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable("usage_counters", (t) => {
    orgRef(t);
    t.uuid("user_id"); // null: the organization's total
    t.text("metric").notNullable();
    t.date("day").notNullable();
    t.bigInteger("value").notNullable().defaultTo(0);
  });
  await knex.raw(
    "create unique index usage_counters_key on usage_counters (org_id, coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), metric, day)",
  );

  await knex.schema.createTable("audit_log", (t) => {
    t.bigIncrements("id").primary();
    t.uuid("org_id"); // null: installation-wide records (sign-in with an unknown address, system actions)
    t.bigInteger("seq").notNullable();
    ts(t, "at").notNullable();
    t.text("actor_type").notNullable(); // user | api_key | system | anonymous
    t.text("actor_id");
    t.text("action").notNullable();
    t.text("target_type");
    t.text("target_id");
    t.text("ip");
    t.text("user_agent");
    t.text("outcome").notNullable(); // success | failure | denied
    t.jsonb("details").notNullable().defaultTo("{}");
    t.text("prev_hash").notNullable();
    t.text("hash").notNullable();
  });
  await knex.raw(
    "create unique index audit_chain on audit_log (coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid), seq)",
  );
  await knex.raw("create index audit_org_at on audit_log (org_id, at desc)");

  // Rate-limiter-flexible's store: installation-wide counters keyed by IP or account.
  await knex.schema.createTable("rate_limits", (t) => {
    t.text("key").primary();
    t.integer("points").notNullable().defaultTo(0);
    t.bigInteger("expire");
  });

  for (const table of [
    "users",
    "roles",
    "user_roles",
    "groups",
    "group_members",
    "group_roles",
    "sessions",
    "api_keys",
    "invitations",
    "tenant_settings",
    "usage_counters",
    "audit_log",
  ]) {
    await enableTenantRls(knex, table);
  }

  // The hash of one audit record, chained to the previous one. Used by append and by verify alike.
  await knex.raw(`
    create function audit_row_hash(p_prev text, p_seq bigint, p_org uuid, p_at timestamptz, p_actor_type text,
      p_actor_id text, p_action text, p_target_type text, p_target_id text, p_ip text, p_user_agent text,
      p_outcome text, p_details jsonb) returns text
    language sql immutable set search_path = pg_catalog as $$
      select encode(sha256(convert_to(concat_ws(chr(31), p_prev, p_seq::text, coalesce(p_org::text, '-'),
        to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), p_actor_type, coalesce(p_actor_id, '-'),
        p_action, coalesce(p_target_type, '-'), coalesce(p_target_id, '-'), coalesce(p_ip, '-'),
        coalesce(p_user_agent, '-'), p_outcome, p_details::text), 'UTF8')), 'hex')
    $$`);
  // Appends one record to its organization's chain (or the installation chain), serialized per chain.
  await knex.raw(`
    create function audit_append(p_org uuid, p_actor_type text, p_actor_id text, p_action text, p_target_type text,
      p_target_id text, p_ip text, p_user_agent text, p_outcome text, p_details jsonb) returns bigint
    language plpgsql security definer set search_path = public, pg_temp as $$
    declare
      v_prev text;
      v_seq bigint;
      v_at timestamptz := clock_timestamp();
      v_id bigint;
    begin
      perform pg_advisory_xact_lock(hashtextextended('audit:' || coalesce(p_org::text, '-'), 0));
      select hash, seq into v_prev, v_seq from audit_log
        where org_id is not distinct from p_org order by seq desc limit 1;
      v_seq := coalesce(v_seq, 0) + 1;
      v_prev := coalesce(v_prev, repeat('0', 64));
      insert into audit_log (org_id, seq, at, actor_type, actor_id, action, target_type, target_id, ip, user_agent,
        outcome, details, prev_hash, hash)
      values (p_org, v_seq, v_at, p_actor_type, p_actor_id, p_action, p_target_type, p_target_id, p_ip, p_user_agent,
        p_outcome, coalesce(p_details, '{}'::jsonb), v_prev,
        audit_row_hash(v_prev, v_seq, p_org, v_at, p_actor_type, p_actor_id, p_action, p_target_type, p_target_id,
          p_ip, p_user_agent, p_outcome, coalesce(p_details, '{}'::jsonb)))
      returning id into v_id;
      return v_id;
    end $$`);
  // Lookups that must run before the organization is known: each returns the least it can.
  await knex.raw(`
    create function auth_find_user(p_email text) returns table (user_id uuid, org_id uuid)
    language sql stable security definer set search_path = public, pg_temp as $$
      select id, org_id from users where lower(email) = lower(p_email)
    $$`);
  await knex.raw(`
    create function auth_find_session(p_token_hash text) returns table (session_id uuid, org_id uuid, user_id uuid)
    language sql stable security definer set search_path = public, pg_temp as $$
      select id, org_id, user_id from sessions
      where token_hash = p_token_hash and revoked_at is null and expires_at > now()
    $$`);
  await knex.raw(`
    create function auth_find_api_key(p_prefix text) returns table (key_id uuid, org_id uuid, key_hash text)
    language sql stable security definer set search_path = public, pg_temp as $$
      select id, org_id, key_hash from api_keys where prefix = p_prefix
    $$`);
  await knex.raw(`
    create function auth_find_invitation(p_token_hash text) returns table (invitation_id uuid, org_id uuid)
    language sql stable security definer set search_path = public, pg_temp as $$
      select id, org_id from invitations where token_hash = p_token_hash and accepted_at is null and expires_at > now()
    $$`);
  // For system administrators only (the service checks the flag before calling).
  await knex.raw(`
    create function installation_organizations()
      returns table (id uuid, name text, slug text, plan text, plan_overrides jsonb, created_at timestamptz)
    language sql stable security definer set search_path = public, pg_temp as $$
      select id, name, slug, plan, plan_overrides, created_at from organizations order by created_at
    $$`);
  await knex.raw(`
    create function installation_has_organizations() returns boolean
    language sql stable security definer set search_path = public, pg_temp as $$
      select exists (select 1 from organizations)
    $$`);

  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  for (const fn of [
    "audit_append(uuid, text, text, text, text, text, text, text, text, jsonb)",
    "auth_find_user(text)",
    "auth_find_session(text)",
    "auth_find_api_key(text)",
    "auth_find_invitation(text)",
    "installation_has_organizations()",
    "installation_organizations()",
  ]) {
    await knex.raw(`revoke all on function ${fn} from public`);
    await knex.raw(`grant execute on function ${fn} to "${app}"`);
  }

  await grantToApp(knex, "organizations", "SELECT, INSERT, UPDATE");
  await grantToApp(knex, "users", "SELECT, INSERT, UPDATE, DELETE");
  for (const table of [
    "roles",
    "user_roles",
    "groups",
    "group_members",
    "group_roles",
    "sessions",
    "api_keys",
    "invitations",
    "tenant_settings",
    "usage_counters",
  ]) {
    await grantToApp(knex, table, "SELECT, INSERT, UPDATE, DELETE");
  }
  // The audit log is read by the app and appended to only through audit_append: no insert, update or delete.
  await grantToApp(knex, "audit_log", "SELECT");
  await grantToApp(knex, "rate_limits", "SELECT, INSERT, UPDATE, DELETE");
}

export async function down(knex: Knex): Promise<void> {
  for (const fn of [
    "installation_organizations()",
    "installation_has_organizations()",
    "auth_find_invitation(text)",
    "auth_find_api_key(text)",
    "auth_find_session(text)",
    "auth_find_user(text)",
    "audit_append(uuid, text, text, text, text, text, text, text, text, jsonb)",
    "audit_row_hash(text, bigint, uuid, timestamptz, text, text, text, text, text, text, text, text, jsonb)",
  ]) {
    await knex.raw(`drop function ${fn}`);
  }
  for (const table of [
    "rate_limits",
    "audit_log",
    "usage_counters",
    "tenant_settings",
    "invitations",
    "api_keys",
    "sessions",
    "group_roles",
    "group_members",
    "groups",
    "user_roles",
    "roles",
    "users",
    "organizations",
  ]) {
    await knex.schema.dropTable(table);
  }
}
