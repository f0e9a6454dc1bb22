import type { Knex } from "knex";

const APPEND_ARGS = "uuid, text, text, text, text, text, text, text, text, jsonb";

/** audit_append's body from the identity migration (chain per organization, serialized by an advisory lock). */
const appendBody = (returns: string, ret: string) => `
    create function audit_append(p_org uuid, p_actor_type text, p_actor_id text, p_action text, p_target_type text,
      p_target_id text, p_ip text, p_user_agent text, p_outcome text, p_details jsonb) returns ${returns}
    language plpgsql security definer set search_path = public, pg_temp as $$
    declare
      v_prev text;
      v_seq bigint;
      v_at timestamptz := clock_timestamp();
      v_id bigint;
      v_hash text;
    begin
      perform pg_advisory_xact_lock(hashtextextended('audit:' || coalesce(p_org::text, '-'), 0));
      select a.hash, a.seq into v_prev, v_seq from audit_log a
        where a.org_id is not distinct from p_org order by a.seq desc limit 1;
      v_seq := coalesce(v_seq, 0) + 1;
      v_prev := coalesce(v_prev, repeat('0', 64));
      v_hash := audit_row_hash(v_prev, v_seq, p_org, v_at, p_actor_type, p_actor_id, p_action, p_target_type,
        p_target_id, p_ip, p_user_agent, p_outcome, coalesce(p_details, '{}'::jsonb));
      insert into audit_log (org_id, seq, at, actor_type, actor_id, action, target_type, target_id, ip, user_agent,
        outcome, details, prev_hash, hash)
      values (p_org, v_seq, v_at, p_actor_type, p_actor_id, p_action, p_target_type, p_target_id, p_ip, p_user_agent,
        p_outcome, coalesce(p_details, '{}'::jsonb), v_prev, v_hash)
      returning audit_log.id into v_id;
      ${ret}
    end $$`;

/**
 * A keyed audit chain. The unkeyed hash chain (audit_row_hash) lets whoever owns the database recompute every
 * hash after an edit; each record now also carries a MAC: HMAC-SHA256 of its chain hash under a key derived
 * from the installation's master key, which never enters the database. The server computes it right after the
 * append, in the same transaction, and seals it with audit_seal (a record's MAC is set once, never changed).
 * audit_heads() gives the worker each chain's head for the signed checkpoints kept outside the database.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("audit_log", (t) => t.text("mac"));
  await knex.raw(`drop function audit_append(${APPEND_ARGS})`);
  await knex.raw(appendBody("table (id bigint, hash text)", "return query select v_id, v_hash;"));
  await knex.raw(`
    create function audit_seal(p_id bigint, p_mac text) returns void
    language plpgsql security definer set search_path = public, pg_temp as $$
    begin
      update audit_log set mac = p_mac where id = p_id and mac is null;
      if not found then raise exception 'audit record % is unknown or already sealed', p_id; end if;
    end $$`);
  await knex.raw(`
    create function audit_heads() returns table (org_id uuid, seq bigint, hash text, mac text)
    language sql stable security definer set search_path = public, pg_temp as $$
      select distinct on (coalesce(a.org_id, '00000000-0000-0000-0000-000000000000'::uuid)) a.org_id, a.seq, a.hash, a.mac
      from audit_log a
      order by coalesce(a.org_id, '00000000-0000-0000-0000-000000000000'::uuid), a.seq desc
    $$`);
  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  for (const fn of [`audit_append(${APPEND_ARGS})`, "audit_seal(bigint, text)", "audit_heads()"]) {
    await knex.raw(`revoke all on function ${fn} from public`);
    await knex.raw(`grant execute on function ${fn} to "${app}"`);
  }
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function audit_heads()");
  await knex.raw("drop function audit_seal(bigint, text)");
  await knex.raw(`drop function audit_append(${APPEND_ARGS})`);
  await knex.raw(appendBody("bigint", "return v_id;"));
  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  await knex.raw(`revoke all on function audit_append(${APPEND_ARGS}) from public`);
  await knex.raw(`grant execute on function audit_append(${APPEND_ARGS}) to "${app}"`);
  await knex.schema.alterTable("audit_log", (t) => t.dropColumn("mac"));
}
