import type { Knex } from "knex";

/**
 * Adding to today's usage counters (the organization's and the person's) in one statement outside any
 * transaction: the function enters the organization (app.org_id, to the end of the statement's own
 * transaction) and upserts both counters. After a generation this was four round trips (begin, set the
 * organization, upsert, commit). It runs as the caller (the application role): row-level security applies.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function usage_add(p_org uuid, p_user uuid, p_metric text, p_amount bigint) returns void
    language plpgsql as $$
    begin
      perform set_config('app.org_id', p_org::text, true);
      insert into usage_counters (org_id, user_id, metric, day, value)
        values (p_org, null, p_metric, current_date, p_amount), (p_org, p_user, p_metric, current_date, p_amount)
        on conflict (org_id, coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), metric, day)
        do update set value = usage_counters.value + excluded.value;
    end $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function usage_add(uuid, uuid, text, bigint)");
}
