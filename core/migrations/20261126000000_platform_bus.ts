import type { Knex } from "knex";
import { grantToApp } from "../src/platform/db/migrate.js";

/** Outbox, idempotency records and dead letters of the bus (system tables, no organization). */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("outbox", (t) => {
    t.bigIncrements("id").primary();
    t.text("subject").notNullable();
    t.jsonb("payload").notNullable();
    t.text("msg_id").notNullable().unique();
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp("published_at", { useTz: true });
  });
  await knex.raw("create index outbox_unpublished on outbox (id) where published_at is null");
  await knex.schema.createTable("processed_jobs", (t) => {
    t.text("job_id").primary();
    t.text("queue").notNullable();
    t.timestamp("processed_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.schema.createTable("dead_letters", (t) => {
    t.bigIncrements("id").primary();
    t.text("queue").notNullable();
    t.text("job_id").notNullable();
    t.jsonb("payload").notNullable();
    t.text("error").notNullable();
    t.integer("deliveries").notNullable();
    t.timestamp("created_at", { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(["queue", "job_id"]);
  });
  await grantToApp(knex, "outbox", "SELECT, INSERT, UPDATE, DELETE");
  await grantToApp(knex, "processed_jobs", "SELECT, INSERT");
  await grantToApp(knex, "dead_letters", "SELECT, INSERT");
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable("dead_letters");
  await knex.schema.dropTable("processed_jobs");
  await knex.schema.dropTable("outbox");
}
