import type { Knex } from "knex";

/**
 * Webhook ingest in one round trip: a group of verified deliveries of one organization is stored and its
 * processing jobs are put in the outbox by one statement (its own transaction). The function runs as the
 * caller (not security definer): row-level security holds, under the organization it sets for the
 * transaction. Returns the deliveries it stored; one already stored (a replay) is not returned.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function webhook_ingest(p_org uuid, p_subject text, p_items jsonb)
    returns table (connection_id uuid, delivery_key text, id uuid)
    language plpgsql volatile as $$
    begin
      perform set_config('app.org_id', p_org::text, true);
      return query
      with stored as (
        insert into public.webhook_deliveries as w
          (org_id, connection_id, delivery_key, event, headers, content_type, body)
        select p_org, (x->>'c')::uuid, x->>'k', x->>'e', x->'h', x->>'t', x->>'b'
        from jsonb_array_elements(p_items) as x
        on conflict on constraint webhook_deliveries_connection_id_delivery_key_unique do nothing
        returning w.id, w.connection_id, w.delivery_key
      ), numbered as (
        select s.id, (row_number() over (order by s.id) - 1) / 100 as part from stored s
      ), jobs as (
        insert into public.outbox (subject, payload, msg_id)
        select p_subject,
               jsonb_build_object('orgId', p_org, 'deliveryIds', jsonb_agg(n.id order by n.id)),
               'webhooks:' || (array_agg(n.id order by n.id))[1] || ':0'
        from numbered n group by n.part
        on conflict (msg_id) do nothing
      )
      select s.connection_id, s.delivery_key, s.id from stored s;
    end
    $$`);
  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  await knex.raw("revoke all on function webhook_ingest(uuid, text, jsonb) from public");
  await knex.raw(`grant execute on function webhook_ingest(uuid, text, jsonb) to "${app}"`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function if exists webhook_ingest(uuid, text, jsonb)");
}
