import type { Knex } from "knex";
import { enableTenantRls, grantToApp } from "../src/platform/db/migrate.js";

const orgColumn = (t: Knex.CreateTableBuilder) =>
  t.uuid("org_id").notNullable().references("id").inTable("organizations").onDelete("CASCADE");
const ts = (t: Knex.CreateTableBuilder, name: string) => t.timestamp(name, { useTz: true });

/**
 * The AI assistant: each person's conversations and messages, their memory facts, and the execution log of
 * every run (its steps and the actions it asked a person to approve). Runs outlive the conversation they
 * belonged to: the log is for auditors, so deleting a conversation only unlinks its runs.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("ai_conversations", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("title").notNullable();
    // The running summary of the turns up to summary_upto (message seq), which no longer fit the context.
    t.text("summary").notNullable().defaultTo("");
    t.integer("summary_upto").notNullable().defaultTo(0);
    t.integer("last_seq").notNullable().defaultTo(0);
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index ai_conversations_user on ai_conversations (org_id, user_id, updated_at desc)");

  await knex.schema.createTable("ai_runs", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("user_id").references("id").inTable("users").onDelete("SET NULL");
    t.uuid("conversation_id").references("id").inTable("ai_conversations").onDelete("SET NULL");
    // running | awaiting_approval | completed | cancelled | failed | budget_exceeded | interrupted
    t.text("status").notNullable();
    t.text("model").notNullable();
    t.text("question").notNullable();
    t.integer("steps").notNullable().defaultTo(0);
    t.integer("prompt_tokens").notNullable().defaultTo(0);
    t.integer("completion_tokens").notNullable().defaultTo(0);
    t.integer("elapsed_ms").notNullable().defaultTo(0);
    t.text("error");
    // What a paused run needs to resume: the transcript of its steps, the passages it may cite, budgets used.
    t.jsonb("state").notNullable().defaultTo("{}");
    ts(t, "started_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "finished_at");
  });
  await knex.raw("create index ai_runs_org on ai_runs (org_id, started_at desc)");
  await knex.raw("create index ai_runs_conversation on ai_runs (conversation_id)");

  await knex.schema.createTable("ai_messages", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("conversation_id").notNullable().references("id").inTable("ai_conversations").onDelete("CASCADE");
    t.integer("seq").notNullable();
    t.text("role").notNullable(); // user | assistant
    t.text("content").notNullable();
    t.jsonb("citations").notNullable().defaultTo("[]");
    t.jsonb("tool_calls").notNullable().defaultTo("[]");
    t.jsonb("usage");
    t.uuid("run_id").references("id").inTable("ai_runs").onDelete("SET NULL");
    t.text("status").notNullable().defaultTo("complete"); // complete | stopped | failed
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    t.unique(["conversation_id", "seq"]);
  });
  await knex.raw(
    "alter table ai_messages add column search tsvector generated always as (to_tsvector('english', content)) stored",
  );
  await knex.raw("create index ai_messages_search on ai_messages using gin (search)");
  await knex.raw(
    "alter table ai_messages add constraint ai_messages_role check (role in ('user', 'assistant'))",
  );

  await knex.schema.createTable("ai_run_steps", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("run_id").notNullable().references("id").inTable("ai_runs").onDelete("CASCADE");
    t.integer("n").notNullable();
    // retrieval (the loop searched first) | tool | answer | invalid (a decision outside what was offered)
    t.text("kind").notNullable();
    t.text("tool");
    t.jsonb("arguments");
    // ok | error | denied | blocked | approval_required | approved | rejected | answered
    t.text("outcome").notNullable();
    t.text("summary").notNullable().defaultTo("");
    t.text("raw");
    t.integer("prompt_tokens").notNullable().defaultTo(0);
    t.integer("completion_tokens").notNullable().defaultTo(0);
    t.integer("latency_ms").notNullable().defaultTo(0);
    t.uuid("approval_id");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index ai_run_steps_run on ai_run_steps (run_id, n)");

  await knex.schema.createTable("ai_approvals", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.uuid("run_id").notNullable().references("id").inTable("ai_runs").onDelete("CASCADE");
    t.text("tool").notNullable();
    t.jsonb("arguments").notNullable();
    t.text("args_hash").notNullable();
    t.text("summary").notNullable();
    t.text("status").notNullable().defaultTo("pending"); // pending | approved | denied | expired | used
    ts(t, "expires_at").notNullable();
    ts(t, "decided_at");
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index ai_approvals_run on ai_approvals (run_id)");

  await knex.schema.createTable("ai_memories", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    orgColumn(t);
    t.uuid("user_id").notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.text("text").notNullable();
    ts(t, "created_at").notNullable().defaultTo(knex.fn.now());
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw("create index ai_memories_user on ai_memories (org_id, user_id)");

  await knex.schema.createTable("ai_tool_policies", (t) => {
    orgColumn(t);
    t.text("tool").notNullable();
    t.text("policy").notNullable(); // allow | ask | deny
    ts(t, "updated_at").notNullable().defaultTo(knex.fn.now());
    t.primary(["org_id", "tool"]);
  });
  await knex.raw(
    "alter table ai_tool_policies add constraint ai_tool_policies_policy check (policy in ('allow', 'ask', 'deny'))",
  );

  for (const table of ["ai_conversations", "ai_messages", "ai_memories", "ai_tool_policies"]) {
    await enableTenantRls(knex, table);
    await grantToApp(knex, table, "SELECT, INSERT, UPDATE, DELETE");
  }
  // The execution log is never deleted by the application: runs and approvals change state, steps only grow.
  await enableTenantRls(knex, "ai_runs");
  await grantToApp(knex, "ai_runs", "SELECT, INSERT, UPDATE");
  await enableTenantRls(knex, "ai_approvals");
  await grantToApp(knex, "ai_approvals", "SELECT, INSERT, UPDATE");
  await enableTenantRls(knex, "ai_run_steps");
  await grantToApp(knex, "ai_run_steps", "SELECT, INSERT");
}

export async function down(knex: Knex): Promise<void> {
  for (const table of [
    "ai_tool_policies",
    "ai_memories",
    "ai_approvals",
    "ai_run_steps",
    "ai_messages",
    "ai_runs",
    "ai_conversations",
  ]) {
    await knex.schema.dropTable(table);
  }
}
