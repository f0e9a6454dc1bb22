import type { Knex } from "knex";

/**
 * Adding to today's usage counters (the organization's and the person's), the organization's new total
 * returned: the one upsert of usage, in or outside a transaction. The function enters the organization
 * (app.org_id, to the end of the transaction: the statement's own when outside one), so after a generation,
 * outside the request's transaction, this is one round trip where it was four (begin, set the organization,
 * upsert, commit). It runs as the caller (the application role): row-level security applies.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function usage_add(p_org uuid, p_user uuid, p_metric text, p_amount bigint) returns bigint
    language plpgsql as $$
    declare
      total bigint;
    begin
      perform set_config('app.org_id', p_org::text, true);
      with up as (
        insert into usage_counters (org_id, user_id, metric, day, value)
          values (p_org, null, p_metric, current_date, p_amount), (p_org, p_user, p_metric, current_date, p_amount)
          on conflict (org_id, coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), metric, day)
          do update set value = usage_counters.value + excluded.value
          returning user_id, value)
      select value into total from up where user_id is null;
      return total;
    end $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function usage_add(uuid, uuid, text, bigint)");
}
