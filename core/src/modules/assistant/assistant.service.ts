import type { Knex } from "knex";
import type { Caller } from "../../platform/auth/caller.js";
import { AppError } from "../../platform/http/errors.js";
import type { ToolRegistry } from "../../platform/tools/registry.js";
import { actorOf, audit } from "../identity/audit.js";
import type { RunState } from "./agent.js";

/** An authenticated service call: who asks, in which org-scoped transaction. */
export interface Svc {
  caller: Caller;
  trx: Knex.Transaction;
}

export type Policy = "allow" | "ask" | "deny";

/** A passage an answer cites, with what the UI needs to open it. */
export interface Citation {
  ref: number;
  documentId: string;
  document: string;
  collection: string;
  chunkIndex: number;
  page: number | null;
  heading: string;
  text: string;
}

/** One tool call of a run as the conversation shows it. */
export interface ToolCallCard {
  n: number;
  tool: string;
  arguments: unknown;
  outcome: string;
  summary: string;
}

/** A conversation message as the API returns it. */
export interface MessageOut {
  id: string;
  seq: number;
  role: "user" | "assistant";
  content: string;
  citations: Citation[];
  toolCalls: ToolCallCard[];
  usage: { promptTokens: number; completionTokens: number; totalTokens: number } | null;
  runId: string | null;
  status: "complete" | "stopped" | "failed";
  createdAt: string;
}

interface MessageRow {
  id: string;
  seq: number;
  role: "user" | "assistant";
  content: string;
  citations: Citation[];
  tool_calls: ToolCallCard[];
  usage: MessageOut["usage"];
  run_id: string | null;
  status: MessageOut["status"];
  created_at: Date;
}

const messageOut = (r: MessageRow): MessageOut => ({
  id: r.id,
  seq: r.seq,
  role: r.role,
  content: r.content,
  citations: r.citations,
  toolCalls: r.tool_calls,
  usage: r.usage,
  runId: r.run_id,
  status: r.status,
  createdAt: new Date(r.created_at).toISOString(),
});

const DEFAULT_TITLE = "New conversation";

/** The organization's per-tool policies. */
export async function loadPolicies(trx: Knex.Transaction): Promise<Map<string, Policy>> {
  const rows = (await trx("ai_tool_policies").select("tool", "policy")) as { tool: string; policy: Policy }[];
  return new Map(rows.map((r) => [r.tool, r.policy]));
}

/** Appends a message to a conversation (numbered under the conversation row's lock). */
export async function appendMessage(
  trx: Knex.Transaction,
  conversationId: string,
  m: {
    role: "user" | "assistant";
    content: string;
    citations?: Citation[];
    toolCalls?: ToolCallCard[];
    usage?: MessageOut["usage"];
    runId?: string | null;
    status?: MessageOut["status"];
  },
): Promise<MessageOut> {
  const [conv] = (await trx("ai_conversations")
    .where({ id: conversationId })
    .update({ last_seq: trx.raw("last_seq + 1"), updated_at: trx.fn.now() })
    .returning(["org_id", "last_seq"])) as { org_id: string; last_seq: number }[];
  if (!conv) throw AppError.notFound("No such conversation.");
  const [row] = (await trx("ai_messages")
    .insert({
      org_id: conv.org_id,
      conversation_id: conversationId,
      seq: conv.last_seq,
      role: m.role,
      content: m.content,
      citations: JSON.stringify(m.citations ?? []),
      tool_calls: JSON.stringify(m.toolCalls ?? []),
      usage: m.usage ? JSON.stringify(m.usage) : null,
      run_id: m.runId ?? null,
      status: m.status ?? "complete",
    })
    .returning("*")) as MessageRow[];
  return messageOut(row as MessageRow);
}

interface ConversationRow {
  id: string;
  user_id: string;
  title: string;
  summary: string;
  summary_upto: number;
  last_seq: number;
  created_at: Date;
  updated_at: Date;
}

const conversationOut = (r: ConversationRow, snippet?: string | null) => ({
  id: r.id,
  title: r.title,
  createdAt: new Date(r.created_at).toISOString(),
  updatedAt: new Date(r.updated_at).toISOString(),
  ...(snippet !== undefined ? { snippet: snippet ?? null } : {}),
});

/** The caller's own conversation (anyone else's, or another organization's, is not found). */
export async function ownConversation(
  { caller, trx }: Svc,
  id: string,
  lock = false,
): Promise<ConversationRow> {
  const q = trx("ai_conversations").where({ id, user_id: caller.userId }).first();
  const row = (await (lock ? q.forUpdate() : q)) as ConversationRow | undefined;
  if (!row) throw AppError.notFound("No such conversation.");
  return row;
}

/** The caller's conversations, newest first; `q` searches titles and messages (full text). */
export async function listConversations(
  { caller, trx }: Svc,
  opts: { q?: string; limit: number; offset: number },
) {
  const q = trx("ai_conversations as c").where("c.user_id", caller.userId);
  const text = opts.q;
  if (text) {
    const like = `%${text.replace(/[\\%_]/g, "\\$&")}%`;
    q.where((w) =>
      w
        .whereILike("c.title", like)
        .orWhereExists((e) =>
          e
            .select(trx.raw("1"))
            .from("ai_messages as m")
            .whereRaw("m.conversation_id = c.id")
            .whereRaw("m.search @@ websearch_to_tsquery('english', ?)", [text]),
        ),
    );
  }
  const rows = (await q
    .clone()
    .select(
      "c.*",
      opts.q
        ? trx.raw(
            `(select ts_headline('english', m.content, websearch_to_tsquery('english', ?), 'MaxWords=20, MinWords=5, StartSel="", StopSel=""')
              from ai_messages m where m.conversation_id = c.id and m.search @@ websearch_to_tsquery('english', ?)
              order by m.seq desc limit 1) as snippet`,
            [opts.q, opts.q],
          )
        : trx.raw("null as snippet"),
    )
    .orderBy("c.updated_at", "desc")
    .limit(opts.limit)
    .offset(opts.offset)) as (ConversationRow & { snippet: string | null })[];
  const [{ n }] = (await q.clone().count({ n: "*" })) as [{ n: string }];
  return { data: rows.map((r) => conversationOut(r, opts.q ? r.snippet : undefined)), total: Number(n) };
}

export async function createConversation({ caller, trx }: Svc, title?: string) {
  const [row] = (await trx("ai_conversations")
    .insert({ org_id: caller.orgId, user_id: caller.userId, title: title?.trim() || DEFAULT_TITLE })
    .returning("*")) as ConversationRow[];
  return conversationOut(row as ConversationRow);
}

export async function renameConversation(svc: Svc, id: string, title: string) {
  await ownConversation(svc, id);
  const [row] = (await svc
    .trx("ai_conversations")
    .where({ id })
    .update({ title: title.trim(), updated_at: svc.trx.fn.now() })
    .returning("*")) as ConversationRow[];
  return conversationOut(row as ConversationRow);
}

export async function deleteConversation(svc: Svc, id: string): Promise<void> {
  await ownConversation(svc, id);
  // Its runs stay in the execution log, unlinked; a pending action can no longer be approved.
  await svc
    .trx("ai_approvals")
    .whereIn("run_id", svc.trx("ai_runs").select("id").where({ conversation_id: id }))
    .andWhere({ status: "pending" })
    .update({ status: "expired" });
  await svc
    .trx("ai_runs")
    .where({ conversation_id: id, status: "awaiting_approval" })
    .update({ status: "cancelled", finished_at: svc.trx.fn.now() });
  await svc.trx("ai_conversations").where({ id }).delete();
}

/** A pending action of a conversation, as the approval card shows it. */
export interface PendingApproval {
  id: string;
  runId: string;
  tool: string;
  arguments: unknown;
  summary: string;
  expiresAt: string;
}

/** A conversation with its messages and its pending action, if any. Runs left running by a dead process end here. */
export async function getConversation(svc: Svc, id: string, maxRunMs: number) {
  const conv = await ownConversation(svc, id);
  await svc
    .trx("ai_runs")
    .where({ conversation_id: id, status: "running" })
    .andWhere("updated_at", "<", svc.trx.raw("now() - make_interval(secs => ?)", [maxRunMs / 1000 + 60]))
    .update({ status: "interrupted", finished_at: svc.trx.fn.now() });
  const messages = (
    (await svc.trx("ai_messages").where({ conversation_id: id }).orderBy("seq")) as MessageRow[]
  ).map(messageOut);
  const pending = (await svc
    .trx("ai_approvals as a")
    .join("ai_runs as r", "r.id", "a.run_id")
    .where({ "r.conversation_id": id, "r.status": "awaiting_approval", "a.status": "pending" })
    .andWhere("a.expires_at", ">", svc.trx.fn.now())
    .orderBy("a.created_at", "desc")
    .first("a.id", "a.run_id", "a.tool", "a.arguments", "a.summary", "a.expires_at")) as
    | { id: string; run_id: string; tool: string; arguments: unknown; summary: string; expires_at: Date }
    | undefined;
  return {
    conversation: conversationOut(conv),
    messages,
    pending: pending
      ? {
          id: pending.id,
          runId: pending.run_id,
          tool: pending.tool,
          arguments: pending.arguments,
          summary: pending.summary,
          expiresAt: new Date(pending.expires_at).toISOString(),
        }
      : null,
  };
}

/** A conversation as Markdown or JSON, for download. */
export async function exportConversation(
  svc: Svc,
  id: string,
  format: "markdown" | "json",
  maxRunMs: number,
) {
  const { conversation, messages } = await getConversation(svc, id, maxRunMs);
  if (format === "json") return JSON.stringify({ conversation, messages }, null, 2);
  const lines = [`# ${conversation.title}`, "", `Exported ${new Date().toISOString()}`, ""];
  for (const m of messages) {
    lines.push(`## ${m.role === "user" ? "You" : "Assistant"} (${m.createdAt})`, "", m.content, "");
    for (const c of m.toolCalls)
      lines.push(`- Tool ${c.tool}: ${c.outcome}${c.summary ? `, ${c.summary}` : ""}`);
    for (const c of m.citations)
      lines.push(
        `[${c.ref}]: ${c.document}${c.page ? `, page ${c.page}` : ""}${c.heading ? `, ${c.heading}` : ""}`,
      );
    if (m.toolCalls.length || m.citations.length) lines.push("");
  }
  return lines.join("\n");
}

/**
 * Prepares the question of a new run: a new message, or (regenerate) the last question again, or (edit) the
 * last question changed. Answers after it are removed; a run still waiting for approval is cancelled.
 */
export async function prepareTurn(
  svc: Svc,
  id: string,
  input: { mode: "new" | "regenerate" | "edit"; content?: string },
): Promise<{ userMessageId: string; question: string }> {
  const conv = await ownConversation(svc, id, true);
  const { trx } = svc;
  await trx("ai_approvals")
    .whereIn(
      "run_id",
      trx("ai_runs").select("id").where({ conversation_id: id, status: "awaiting_approval" }),
    )
    .andWhere({ status: "pending" })
    .update({ status: "expired" });
  await trx("ai_runs")
    .where({ conversation_id: id, status: "awaiting_approval" })
    .update({ status: "cancelled", error: "superseded by a new question", finished_at: trx.fn.now() });
  if (input.mode === "new") {
    const content = input.content as string;
    if (conv.title === DEFAULT_TITLE)
      await trx("ai_conversations")
        .where({ id })
        .update({ title: content.replace(/\s+/g, " ").trim().slice(0, 80) });
    const m = await appendMessage(trx, id, { role: "user", content });
    return { userMessageId: m.id, question: content };
  }
  const last = (await trx("ai_messages")
    .where({ conversation_id: id, role: "user" })
    .orderBy("seq", "desc")
    .first()) as MessageRow | undefined;
  if (!last) throw AppError.conflict("There is no question to answer again.");
  await trx("ai_messages").where({ conversation_id: id }).andWhere("seq", ">", last.seq).delete();
  if (input.mode === "edit") {
    await trx("ai_messages").where({ id: last.id }).update({ content: input.content });
    return { userMessageId: last.id, question: input.content as string };
  }
  return { userMessageId: last.id, question: last.content };
}

/** Creates the run row of a new run. */
export async function createRun(
  { caller, trx }: Svc,
  input: { conversationId: string; model: string; question: string },
): Promise<string> {
  const [row] = (await trx("ai_runs")
    .insert({
      org_id: caller.orgId,
      user_id: caller.userId,
      conversation_id: input.conversationId,
      status: "running",
      model: input.model,
      question: input.question.slice(0, 2000),
    })
    .returning("id")) as { id: string }[];
  return (row as { id: string }).id;
}

/**
 * Claims a pending action for its person's decision: the run goes from awaiting to running in this statement,
 * so two decisions on one action cannot both proceed. Another person's approval is not found.
 */
export async function claimApproval(
  { caller, trx }: Svc,
  approvalId: string,
): Promise<{ runId: string; state: RunState; model: string }> {
  const a = (await trx("ai_approvals").where({ id: approvalId, user_id: caller.userId }).first()) as
    { id: string; run_id: string; status: string; expires_at: Date; args_hash: string } | undefined;
  if (!a) throw AppError.notFound("No such pending action.");
  if (a.status !== "pending") throw AppError.conflict(`This action was already ${a.status}.`);
  if (new Date(a.expires_at).getTime() <= Date.now()) {
    await trx("ai_approvals").where({ id: a.id }).update({ status: "expired" });
    await trx("ai_runs")
      .where({ id: a.run_id, status: "awaiting_approval" })
      .update({ status: "cancelled", error: "approval expired", finished_at: trx.fn.now() });
    throw new AppError(409, "approval_expired", "This action waited too long for approval and has expired.");
  }
  const [run] = (await trx("ai_runs")
    .where({ id: a.run_id, status: "awaiting_approval" })
    .update({ status: "running", updated_at: trx.fn.now() })
    .returning(["id", "state", "model"])) as { id: string; state: RunState; model: string }[];
  if (!run || run.state.pending?.approvalId !== a.id || run.state.pending.hash !== a.args_hash)
    throw AppError.conflict("This action is no longer waiting for a decision.");
  return { runId: run.id, state: run.state, model: run.model };
}

// ----- memory -----

interface MemoryRow {
  id: string;
  text: string;
  created_at: Date;
  updated_at: Date;
}
const memoryOut = (r: MemoryRow) => ({
  id: r.id,
  text: r.text,
  createdAt: new Date(r.created_at).toISOString(),
  updatedAt: new Date(r.updated_at).toISOString(),
});

export async function listMemories({ caller, trx }: Svc) {
  return (
    (await trx("ai_memories").where({ user_id: caller.userId }).orderBy("updated_at", "desc")) as MemoryRow[]
  ).map(memoryOut);
}

export async function addMemory({ caller, trx }: Svc, text: string) {
  const count = Number(
    ((await trx("ai_memories").where({ user_id: caller.userId }).count({ n: "*" })) as [{ n: string }])[0].n,
  );
  if (count >= 200) throw AppError.conflict("You have 200 memory facts; delete some first.");
  const [row] = (await trx("ai_memories")
    .insert({ org_id: caller.orgId, user_id: caller.userId, text: text.trim() })
    .returning("*")) as MemoryRow[];
  return memoryOut(row as MemoryRow);
}

export async function updateMemory({ caller, trx }: Svc, id: string, text: string) {
  const [row] = (await trx("ai_memories")
    .where({ id, user_id: caller.userId })
    .update({ text: text.trim(), updated_at: trx.fn.now() })
    .returning("*")) as MemoryRow[];
  if (!row) throw AppError.notFound("No such memory.");
  return memoryOut(row);
}

export async function deleteMemory({ caller, trx }: Svc, id: string): Promise<void> {
  const n = await trx("ai_memories").where({ id, user_id: caller.userId }).delete();
  if (!n) throw AppError.notFound("No such memory.");
}

// ----- tool policies -----

/** Every tool with its effect, permission and this organization's policy for it. */
export async function listPolicies({ trx }: Svc, tools: ToolRegistry) {
  const policies = await loadPolicies(trx);
  return tools.all().map((t) => ({
    name: t.name,
    description: t.description,
    permission: t.permission,
    effect: t.effect,
    policy: policies.get(t.name) ?? (t.effect === "read" ? "allow" : "ask"),
    custom: policies.has(t.name),
  }));
}

export async function setPolicy(svc: Svc, tools: ToolRegistry, tool: string, policy: Policy): Promise<void> {
  if (!tools.get(tool)) throw AppError.notFound(`There is no tool named ${tool}.`);
  await svc
    .trx("ai_tool_policies")
    .insert({ org_id: svc.caller.orgId, tool, policy })
    .onConflict(["org_id", "tool"])
    .merge({ policy, updated_at: svc.trx.fn.now() });
  await audit(svc.trx, {
    ...actorOf(svc.caller),
    action: "ai.tool_policy",
    targetType: "tool",
    outcome: "success",
    details: { tool, policy },
  });
}

// ----- execution log -----

interface RunRow {
  id: string;
  user_id: string | null;
  user_email?: string | null;
  conversation_id: string | null;
  status: string;
  model: string;
  question: string;
  steps: number;
  prompt_tokens: number;
  completion_tokens: number;
  elapsed_ms: number;
  error: string | null;
  started_at: Date;
  finished_at: Date | null;
}
const runOut = (r: RunRow) => ({
  id: r.id,
  userId: r.user_id,
  userEmail: r.user_email ?? null,
  conversationId: r.conversation_id,
  status: r.status,
  model: r.model,
  question: r.question,
  steps: r.steps,
  promptTokens: r.prompt_tokens,
  completionTokens: r.completion_tokens,
  elapsedMs: r.elapsed_ms,
  error: r.error,
  startedAt: new Date(r.started_at).toISOString(),
  finishedAt: r.finished_at ? new Date(r.finished_at).toISOString() : null,
});

/** Runs of the organization, newest first (administrators and auditors). */
export async function listRuns(
  { trx }: Svc,
  opts: { status?: string; userId?: string; limit: number; offset: number },
) {
  const q = trx("ai_runs as r").leftJoin("users as u", "u.id", "r.user_id");
  if (opts.status) q.where("r.status", opts.status);
  if (opts.userId) q.where("r.user_id", opts.userId);
  const rows = (await q
    .clone()
    .select("r.*", "u.email as user_email")
    .orderBy("r.started_at", "desc")
    .limit(opts.limit)
    .offset(opts.offset)) as RunRow[];
  const [{ n }] = (await q.clone().count({ n: "*" })) as [{ n: string }];
  return { data: rows.map(runOut), total: Number(n) };
}

/** One run with its steps, tool calls and approvals. */
export async function getRun({ trx }: Svc, id: string) {
  const run = (await trx("ai_runs as r")
    .leftJoin("users as u", "u.id", "r.user_id")
    .where("r.id", id)
    .first("r.*", "u.email as user_email")) as RunRow | undefined;
  if (!run) throw AppError.notFound("No such run.");
  const steps = (await trx("ai_run_steps").where({ run_id: id }).orderBy(["n", "created_at"])) as {
    n: number;
    kind: string;
    tool: string | null;
    arguments: unknown;
    outcome: string;
    summary: string;
    raw: string | null;
    prompt_tokens: number;
    completion_tokens: number;
    latency_ms: number;
    approval_id: string | null;
    created_at: Date;
  }[];
  const approvals = (await trx("ai_approvals").where({ run_id: id }).orderBy("created_at")) as {
    id: string;
    tool: string;
    arguments: unknown;
    summary: string;
    status: string;
    expires_at: Date;
    decided_at: Date | null;
  }[];
  const calls = (await trx("ai_tool_calls").where({ run_id: id }).orderBy("created_at")) as {
    tool: string;
    status: string;
    error: string | null;
    duration_ms: number;
    created_at: Date;
  }[];
  return {
    ...runOut(run),
    stepLog: steps.map((s) => ({
      n: s.n,
      kind: s.kind,
      tool: s.tool,
      arguments: s.arguments,
      outcome: s.outcome,
      summary: s.summary,
      raw: s.raw,
      promptTokens: s.prompt_tokens,
      completionTokens: s.completion_tokens,
      latencyMs: s.latency_ms,
      approvalId: s.approval_id,
      at: new Date(s.created_at).toISOString(),
    })),
    approvals: approvals.map((a) => ({
      id: a.id,
      tool: a.tool,
      arguments: a.arguments,
      summary: a.summary,
      status: a.status,
      expiresAt: new Date(a.expires_at).toISOString(),
      decidedAt: a.decided_at ? new Date(a.decided_at).toISOString() : null,
    })),
    toolCalls: calls.map((c) => ({
      tool: c.tool,
      status: c.status,
      error: c.error,
      durationMs: c.duration_ms,
      at: new Date(c.created_at).toISOString(),
    })),
  };
}
