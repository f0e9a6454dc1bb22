import type { Knex } from "knex";

/**
 * Documents stuck in a non-terminal state: the worker's watchdog finds those with no progress for a while (in
 * every organization, through a security-definer function that returns ids only), queues them again a few
 * times, then fails them with a reason. `stall_retries` counts the re-queues of the current generation.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("kb_documents", (t) => t.integer("stall_retries").notNullable().defaultTo(0));
  await knex.raw(`
    create function kb_stalled_documents(p_seconds double precision) returns table (org_id uuid, id uuid, generation int, stall_retries int)
    language sql stable security definer set search_path = public, pg_temp as $$
      select d.org_id, d.id, d.generation, d.stall_retries from kb_documents d
      where d.status not in ('indexed', 'failed') and d.updated_at < now() - make_interval(secs => p_seconds)
      order by d.updated_at limit 500
    $$`);
  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  await knex.raw("revoke all on function kb_stalled_documents(double precision) from public");
  await knex.raw(`grant execute on function kb_stalled_documents(double precision) to "${app}"`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function kb_stalled_documents(double precision)");
  await knex.schema.alterTable("kb_documents", (t) => t.dropColumn("stall_retries"));
}
