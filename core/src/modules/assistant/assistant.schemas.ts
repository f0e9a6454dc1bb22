import { z } from "zod";

const id = z.uuid();
const when = z.string();

export const conversationSchema = z
  .object({
    id,
    title: z.string(),
    createdAt: when,
    updatedAt: when,
    snippet: z.string().nullable().optional(),
  })
  .meta({ id: "AssistantConversation" });

export const citationSchema = z
  .object({
    ref: z.number(),
    documentId: id,
    document: z.string(),
    collection: z.string(),
    chunkIndex: z.number(),
    page: z.number().nullable(),
    heading: z.string(),
    text: z.string(),
  })
  .meta({ id: "AssistantCitation" });

export const toolCallSchema = z
  .object({
    n: z.number(),
    tool: z.string(),
    arguments: z.unknown(),
    outcome: z.string(),
    summary: z.string(),
  })
  .meta({ id: "AssistantToolCall" });

export const messageSchema = z
  .object({
    id,
    seq: z.number(),
    role: z.enum(["user", "assistant"]),
    content: z.string(),
    citations: z.array(citationSchema),
    toolCalls: z.array(toolCallSchema),
    usage: z
      .object({ promptTokens: z.number(), completionTokens: z.number(), totalTokens: z.number() })
      .nullable(),
    runId: id.nullable(),
    status: z.enum(["complete", "stopped", "failed"]),
    createdAt: when,
  })
  .meta({ id: "AssistantMessage" });

export const pendingSchema = z
  .object({ id, runId: id, tool: z.string(), arguments: z.unknown(), summary: z.string(), expiresAt: when })
  .meta({ id: "AssistantPendingAction" });

export const conversationDetailSchema = z
  .object({
    conversation: conversationSchema,
    messages: z.array(messageSchema),
    pending: pendingSchema.nullable(),
  })
  .meta({ id: "AssistantConversationDetail" });

export const memorySchema = z
  .object({ id, text: z.string(), createdAt: when, updatedAt: when })
  .meta({ id: "AssistantMemory" });

export const policySchema = z
  .object({
    name: z.string(),
    description: z.string(),
    permission: z.string(),
    effect: z.enum(["read", "write", "external"]),
    policy: z.enum(["allow", "ask", "deny"]),
    custom: z.boolean(),
  })
  .meta({ id: "AssistantToolPolicy" });

export const runSchema = z
  .object({
    id,
    userId: id.nullable(),
    userEmail: z.string().nullable(),
    conversationId: id.nullable(),
    status: z.string(),
    model: z.string(),
    question: z.string(),
    steps: z.number(),
    promptTokens: z.number(),
    completionTokens: z.number(),
    elapsedMs: z.number(),
    error: z.string().nullable(),
    startedAt: when,
    finishedAt: when.nullable(),
  })
  .meta({ id: "AssistantRun" });

export const runDetailSchema = runSchema
  .extend({
    steps: z.number(),
    stepLog: z.array(
      z.object({
        n: z.number(),
        kind: z.string(),
        tool: z.string().nullable(),
        arguments: z.unknown(),
        outcome: z.string(),
        summary: z.string(),
        raw: z.string().nullable(),
        promptTokens: z.number(),
        completionTokens: z.number(),
        latencyMs: z.number(),
        approvalId: id.nullable(),
        at: when,
      }),
    ),
    approvals: z.array(
      z.object({
        id,
        tool: z.string(),
        arguments: z.unknown(),
        summary: z.string(),
        status: z.string(),
        expiresAt: when,
        decidedAt: when.nullable(),
      }),
    ),
    toolCalls: z.array(
      z.object({
        tool: z.string(),
        status: z.string(),
        error: z.string().nullable(),
        durationMs: z.number(),
        at: when,
      }),
    ),
  })
  .meta({ id: "AssistantRunDetail" });

const content = z.string().trim().min(1, "Write a question first.").max(20_000);
const toolName = z.string().regex(/^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$/, "Not a tool name.");

export const askBody = z
  .strictObject({
    content,
    /** Search the knowledge base with the question before the first step (default on). */
    grounded: z.boolean().default(true),
    /** Make the first step call this tool (the person picked it). */
    tool: toolName.optional(),
  })
  .meta({ id: "AssistantAsk" });

export const regenerateBody = z
  .strictObject({
    /** The last question changed (edit); without it, the same question again. */
    content: content.optional(),
    grounded: z.boolean().default(true),
    tool: toolName.optional(),
  })
  .meta({ id: "AssistantRegenerate" });

export const decisionBody = z.strictObject({ decision: z.enum(["approve", "deny"]) }).meta({
  id: "AssistantDecision",
});
