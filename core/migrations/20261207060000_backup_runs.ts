import type { Knex } from "knex";
import { grantToApp } from "../src/platform/db/migrate.js";

/**
 * Backups the worker takes (on the schedule or asked for in the admin UI) and the ones `worksynapse backup`
 * took: an installation table (no organization), read by system administrators. At most one is queued or
 * running at a time (the partial unique index), whichever node takes it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("backup_runs", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    t.text("trigger").notNullable();
    t.text("status").notNullable();
    t.uuid("requested_by").references("id").inTable("users").onDelete("SET NULL");
    t.text("node");
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp("started_at", { useTz: true });
    t.timestamp("alive_at", { useTz: true });
    t.timestamp("finished_at", { useTz: true });
    t.text("file");
    t.bigInteger("bytes");
    t.integer("files");
    t.text("error");
  });
  await knex.raw(
    "alter table backup_runs add constraint backup_runs_trigger check (trigger in ('schedule', 'manual', 'command'))",
  );
  await knex.raw(
    "alter table backup_runs add constraint backup_runs_status check (status in ('queued', 'running', 'succeeded', 'failed'))",
  );
  await knex.raw(
    "create unique index backup_runs_one_at_a_time on backup_runs ((true)) where status in ('queued', 'running')",
  );
  await knex.raw("create index backup_runs_list on backup_runs (created_at desc)");
  await grantToApp(knex, "backup_runs", "SELECT, INSERT, UPDATE");
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("backup_runs");
}
