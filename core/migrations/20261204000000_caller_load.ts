import type { Knex } from "knex";

/**
 * Loading the caller of a signed-in request in one statement: each function enters the credential's
 * organization (sets app.org_id for row-level security, to the end of the transaction), checks that the
 * session or key is still valid, returns the user with every role they hold (directly or through groups) as
 * JSON (null when no longer valid), and records the use at most once per 30 s (sessions) or 60 s (keys).
 * Before, a request spent two round trips on this (set the organization, then load). They run as the caller
 * (the application role), so row-level security applies to all of it.
 */
const userJson = (extra = "") => `json_build_object('id', u.id, 'email', u.email, 'status', u.status,
  'system_admin', u.system_admin${extra},
  'roles', coalesce((select json_agg(json_build_object('key', r.key, 'builtin', r.builtin, 'permissions', r.permissions))
    from roles r where r.id in (select user_role_ids(u.id))), '[]'::json))`;

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function auth_session_caller(p_org uuid, p_session uuid, p_idle_minutes int) returns json
    language plpgsql as $$
    declare
      found json;
      stale boolean;
    begin
      perform set_config('app.org_id', p_org::text, true);
      select ${userJson()}, s.last_seen_at < now() - interval '30 seconds' into found, stale
        from sessions s join users u on u.id = s.user_id
        where s.id = p_session and s.revoked_at is null and s.expires_at > now()
          and s.last_seen_at > now() - make_interval(mins => p_idle_minutes);
      if stale then update sessions set last_seen_at = now() where id = p_session; end if;
      return found;
    end $$`);
  await knex.raw(`
    create function auth_key_caller(p_org uuid, p_key uuid) returns json
    language plpgsql as $$
    declare
      found json;
      stale boolean;
    begin
      perform set_config('app.org_id', p_org::text, true);
      select ${userJson(", 'key_permissions', k.permissions")},
             k.last_used_at is null or k.last_used_at < now() - interval '60 seconds'
        into found, stale
        from api_keys k join users u on u.id = k.user_id
        where k.id = p_key and k.revoked_at is null and (k.expires_at is null or k.expires_at > now());
      if stale then update api_keys set last_used_at = now() where id = p_key; end if;
      return found;
    end $$`);
  await knex.raw(`
    create function auth_token_caller(p_org uuid, p_key uuid, p_user uuid) returns json
    language plpgsql as $$
    begin
      perform set_config('app.org_id', p_org::text, true);
      return (select ${userJson()} from api_keys k join users u on u.id = k.user_id
        where k.id = p_key and u.id = p_user and k.revoked_at is null);
    end $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function auth_token_caller(uuid, uuid, uuid)");
  await knex.raw("drop function auth_key_caller(uuid, uuid)");
  await knex.raw("drop function auth_session_caller(uuid, uuid, int)");
}
