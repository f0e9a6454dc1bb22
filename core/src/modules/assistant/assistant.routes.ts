import type { Context } from "koa";
import { z } from "zod";
import type { Config } from "../../config/schema.js";
import { can } from "../../platform/auth/caller.js";
import type { Api, Scope } from "../../platform/http/api.js";
import { afterCommit, dataOf } from "../../platform/http/api.js";
import { AppError } from "../../platform/http/errors.js";
import { openEventStream } from "../../platform/http/sse.js";
import type { Logger } from "../../platform/log.js";
import type { ToolRegistry } from "../../platform/tools/registry.js";
import { idParams, pageQuery } from "../identity/identity.schemas.js";
import { admitAiRequest } from "../identity/org.service.js";
import { listModels, requireChatModel } from "../ai/models.service.js";
import { resumeRun, startRun, type AgentDeps } from "./agent.js";
import * as svc from "./assistant.service.js";
import {
  askBody,
  conversationDetailSchema,
  conversationSchema,
  decisionBody,
  memorySchema,
  policySchema,
  regenerateBody,
  runDetailSchema,
  runSchema,
} from "./assistant.schemas.js";

const RUN_EVENTS =
  "Server-sent events: run (ids), step (a tool call card), token (answer text), approval (a pending action), done (the stored answer), error";

/** Registers the assistant: conversations, runs streamed over SSE, approvals, memory, policies, execution log. */
export function registerAssistantRoutes(
  api: Api,
  deps: {
    config: Config;
    tools: ToolRegistry;
    /** The loop's dependencies; null on a process without a database or inference (answers 503). */
    agent: AgentDeps | null;
    log: Pick<Logger, "error" | "warn">;
  },
): void {
  const tags = ["assistant"];
  const use = "assistant.use";
  const need = (): AgentDeps => {
    if (!deps.agent) throw AppError.unavailable("The assistant is not running on this process.");
    return deps.agent;
  };

  const chatModel = (scope: Scope) => requireChatModel(scope.trx, scope.caller.orgId);

  /** A tool the person picked must be one they may use and the organization does not deny. */
  async function checkToolChoice(scope: Scope, tool?: string): Promise<void> {
    if (!tool) return;
    const def = deps.tools.get(tool);
    if (!def || !can(scope.caller, def.permission))
      throw new AppError(400, "unknown_tool", `You cannot use a tool named ${tool}.`);
    if ((await svc.loadPolicies(scope.trx)).get(tool) === "deny")
      throw AppError.forbidden(`Your organization does not allow the assistant to use ${tool}.`);
  }

  /** Opens the event stream after the request's transaction commits and runs `work` on it. */
  function streamRun(
    ctx: Context,
    work: (emit: (e: string, d: unknown) => void, signal: AbortSignal) => Promise<void>,
  ) {
    const { stream, send, signal } = openEventStream(ctx);
    return afterCommit(async () => {
      void work((e, d) => send(e, d), signal)
        .catch((err: unknown) => {
          deps.log.error({ err }, "assistant run failed to start");
          const e =
            err instanceof AppError ? err : new AppError(500, "assistant_failed", "The assistant failed.");
          send("error", { error: { code: e.code, message: e.message } });
        })
        .finally(() => stream.end());
      return stream;
    });
  }

  async function ask(
    ctx: Context,
    scope: Scope,
    id: string,
    input: { mode: "new" | "regenerate" | "edit"; content?: string; grounded: boolean; tool?: string },
  ) {
    const agent = need();
    await svc.ownConversation(scope, id);
    const model = await chatModel(scope);
    await checkToolChoice(scope, input.tool);
    await admitAiRequest(scope);
    const turn = await svc.prepareTurn(scope, id, input);
    const runId = await svc.createRun(scope, {
      conversationId: id,
      model: model.name,
      question: turn.question,
    });
    const caller = scope.caller;
    return streamRun(ctx, (emit, signal) =>
      startRun(
        agent,
        caller,
        {
          runId,
          conversationId: id,
          userMessageId: turn.userMessageId,
          question: turn.question,
          model,
          grounded: input.grounded,
          toolChoice: input.tool,
        },
        emit,
        signal,
      ),
    );
  }

  api.route({
    method: "get",
    path: "/api/assistant/conversations",
    operationId: "listAssistantConversations",
    summary: "Your conversations with the assistant, newest first; q searches titles and messages",
    tags,
    permission: use,
    query: pageQuery.extend({ q: z.string().trim().max(200).optional() }),
    response: z.object({ data: z.array(conversationSchema), total: z.number() }),
    handler: (_ctx, { query }, scope) => svc.listConversations(scope, query),
  });

  api.route({
    method: "post",
    path: "/api/assistant/conversations",
    operationId: "createAssistantConversation",
    summary: "Start a conversation",
    tags,
    permission: use,
    body: z.strictObject({ title: z.string().trim().max(200).optional() }),
    status: 201,
    response: dataOf(conversationSchema),
    handler: async (_ctx, { body }, scope) => ({ data: await svc.createConversation(scope, body.title) }),
  });

  api.route({
    method: "get",
    path: "/api/assistant/conversations/:id",
    operationId: "getAssistantConversation",
    summary: "A conversation with its messages and the action waiting for your approval, if any",
    tags,
    permission: use,
    params: idParams,
    response: dataOf(conversationDetailSchema),
    handler: async (_ctx, { params }, scope) => ({
      data: await svc.getConversation(scope, params.id, deps.config.assistant.maxRunMs),
    }),
  });

  api.route({
    method: "patch",
    path: "/api/assistant/conversations/:id",
    operationId: "renameAssistantConversation",
    summary: "Rename a conversation",
    tags,
    permission: use,
    params: idParams,
    body: z.strictObject({ title: z.string().trim().min(1).max(200) }),
    response: dataOf(conversationSchema),
    handler: async (_ctx, { params, body }, scope) => ({
      data: await svc.renameConversation(scope, params.id, body.title),
    }),
  });

  api.route({
    method: "delete",
    path: "/api/assistant/conversations/:id",
    operationId: "deleteAssistantConversation",
    summary: "Delete a conversation (its runs stay in the execution log)",
    tags,
    permission: use,
    params: idParams,
    status: 204,
    handler: (_ctx, { params }, scope) => svc.deleteConversation(scope, params.id),
  });

  api.route({
    method: "get",
    path: "/api/assistant/conversations/:id/export",
    operationId: "exportAssistantConversation",
    summary: "Download a conversation as Markdown or JSON",
    tags,
    permission: use,
    params: idParams,
    query: z.object({ format: z.enum(["markdown", "json"]).default("markdown") }),
    response: z.string(),
    responseType: "text/markdown",
    handler: async (ctx, { params, query }, scope) => {
      const body = await svc.exportConversation(
        scope,
        params.id,
        query.format,
        deps.config.assistant.maxRunMs,
      );
      ctx.type = query.format === "json" ? "application/json" : "text/markdown; charset=utf-8";
      ctx.set(
        "Content-Disposition",
        `attachment; filename="conversation-${params.id}.${query.format === "json" ? "json" : "md"}"`,
      );
      return body;
    },
  });

  api.route({
    method: "post",
    path: "/api/assistant/conversations/:id/messages",
    operationId: "askAssistant",
    summary: `Ask a question; the run streams. ${RUN_EVENTS}`,
    tags,
    permission: use,
    params: idParams,
    body: askBody,
    response: z.string(),
    responseType: "text/event-stream",
    errors: [409, 429, 503],
    handler: (ctx, { params, body }, scope) =>
      ask(ctx, scope, params.id, {
        mode: "new",
        content: body.content,
        grounded: body.grounded,
        tool: body.tool,
      }),
  });

  api.route({
    method: "post",
    path: "/api/assistant/conversations/:id/regenerate",
    operationId: "regenerateAssistantAnswer",
    summary: `Answer the last question again, or (with content) edit it and answer that. ${RUN_EVENTS}`,
    tags,
    permission: use,
    params: idParams,
    body: regenerateBody,
    response: z.string(),
    responseType: "text/event-stream",
    errors: [409, 429, 503],
    handler: (ctx, { params, body }, scope) =>
      ask(ctx, scope, params.id, {
        mode: body.content ? "edit" : "regenerate",
        content: body.content,
        grounded: body.grounded,
        tool: body.tool,
      }),
  });

  api.route({
    method: "post",
    path: "/api/assistant/approvals/:id",
    operationId: "decideAssistantAction",
    summary: `Approve or deny the action a run is waiting for; the run continues as a stream. ${RUN_EVENTS}`,
    tags,
    permission: use,
    params: idParams,
    body: decisionBody,
    response: z.string(),
    responseType: "text/event-stream",
    errors: [409, 503],
    handler: async (ctx, { params, body }, scope) => {
      const agent = need();
      const claimed = await svc.claimApproval(scope, params.id);
      const model = (await listModels(scope.trx)).find(
        (m) => m.name === claimed.model || m.id === claimed.state.modelId,
      );
      if (!model) throw new AppError(409, "no_model", "The model this run used is no longer installed.");
      const caller = scope.caller;
      return streamRun(ctx, (emit, signal) =>
        resumeRun(
          agent,
          caller,
          { id: claimed.runId, state: claimed.state, model },
          body.decision,
          emit,
          signal,
        ),
      );
    },
  });

  // ----- memory -----
  api.route({
    method: "get",
    path: "/api/assistant/memories",
    operationId: "listAssistantMemories",
    summary: "The facts the assistant remembers about you",
    tags,
    permission: use,
    response: dataOf(z.array(memorySchema)),
    handler: async (_ctx, _in, scope) => ({ data: await svc.listMemories(scope) }),
  });
  const memoryBody = z.strictObject({ text: z.string().trim().min(1).max(500) });
  api.route({
    method: "post",
    path: "/api/assistant/memories",
    operationId: "addAssistantMemory",
    summary: "Add a fact for the assistant to remember",
    tags,
    permission: use,
    body: memoryBody,
    status: 201,
    response: dataOf(memorySchema),
    handler: async (_ctx, { body }, scope) => ({ data: await svc.addMemory(scope, body.text) }),
  });
  api.route({
    method: "patch",
    path: "/api/assistant/memories/:id",
    operationId: "updateAssistantMemory",
    summary: "Change a memory fact",
    tags,
    permission: use,
    params: idParams,
    body: memoryBody,
    response: dataOf(memorySchema),
    handler: async (_ctx, { params, body }, scope) => ({
      data: await svc.updateMemory(scope, params.id, body.text),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/assistant/memories/:id",
    operationId: "deleteAssistantMemory",
    summary: "Forget a memory fact",
    tags,
    permission: use,
    params: idParams,
    status: 204,
    handler: (_ctx, { params }, scope) => svc.deleteMemory(scope, params.id),
  });

  // ----- tool policies -----
  api.route({
    method: "get",
    path: "/api/assistant/policies",
    operationId: "listAssistantToolPolicies",
    summary: "Every assistant tool with its effect and this organization's policy (allow, ask, deny)",
    tags,
    permission: use,
    response: dataOf(z.array(policySchema)),
    handler: async (_ctx, _in, scope) => ({ data: await svc.listPolicies(scope, deps.tools) }),
  });
  api.route({
    method: "put",
    path: "/api/assistant/policies",
    operationId: "setAssistantToolPolicy",
    summary: "Set whether the assistant may use a tool freely, must ask first, or may not use it",
    tags,
    permission: "admin.settings",
    body: z.strictObject({ tool: z.string().max(200), policy: z.enum(["allow", "ask", "deny"]) }),
    status: 204,
    handler: (_ctx, { body }, scope) => svc.setPolicy(scope, deps.tools, body.tool, body.policy),
  });

  // ----- execution log -----
  api.route({
    method: "get",
    path: "/api/assistant/runs",
    operationId: "listAssistantRuns",
    summary: "The organization's assistant runs, newest first (administrators and auditors)",
    tags,
    permission: "assistant.runs.read",
    query: pageQuery.extend({
      status: z
        .enum([
          "running",
          "awaiting_approval",
          "completed",
          "cancelled",
          "failed",
          "budget_exceeded",
          "interrupted",
        ])
        .optional(),
      userId: z.uuid().optional(),
    }),
    response: z.object({ data: z.array(runSchema), total: z.number() }),
    handler: (_ctx, { query }, scope) => svc.listRuns(scope, query),
  });
  api.route({
    method: "get",
    path: "/api/assistant/runs/:id",
    operationId: "getAssistantRun",
    summary: "One run: its steps with tokens and latency, tool calls and approvals",
    tags,
    permission: "assistant.runs.read",
    params: idParams,
    response: dataOf(runDetailSchema),
    handler: async (_ctx, { params }, scope) => ({ data: await svc.getRun(scope, params.id) }),
  });
}
