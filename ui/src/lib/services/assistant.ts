import { api, ApiError } from "$lib/api/client";
import type { components } from "$lib/api/schema";
import { readEventStream } from "./sse";

export type Conversation = components["schemas"]["AssistantConversation"];
export type AssistantMessage = components["schemas"]["AssistantMessage"];
export type Citation = components["schemas"]["AssistantCitation"];
export type ToolCall = components["schemas"]["AssistantToolCall"];
export type PendingAction = components["schemas"]["AssistantPendingAction"];
export type Memory = components["schemas"]["AssistantMemory"];

/** What a run reports while it streams. */
export interface RunHandlers {
  onToken(text: string): void;
  onStep(call: ToolCall): void;
  onApproval(action: PendingAction): void;
  onDone(message: AssistantMessage): void;
}

function dispatch(h: RunHandlers) {
  return ({ event, data }: { event: string; data: unknown }) => {
    if (event === "token") h.onToken((data as { text: string }).text);
    else if (event === "step") h.onStep(data as ToolCall);
    else if (event === "approval") h.onApproval((data as { approval: PendingAction }).approval);
    else if (event === "done") h.onDone((data as { message: AssistantMessage }).message);
    else if (event === "error") {
      const e = (data as { error: { code: string; message: string } }).error;
      throw new ApiError(500, e.code, e.message);
    }
  };
}

/** Follows a run's event stream to its end. */
const follow = async (
  call: Promise<{ data?: unknown; error?: unknown; response: Response }>,
  h: RunHandlers,
) => readEventStream(await call, dispatch(h));

/** Asks a question in a conversation and follows the run. */
export const ask = (
  conversationId: string,
  body: { content: string; grounded: boolean; tool?: string },
  h: RunHandlers,
  signal: AbortSignal,
) =>
  follow(
    api.POST("/api/assistant/conversations/{id}/messages", {
      params: { path: { id: conversationId } },
      body,
      parseAs: "stream",
      signal,
    }),
    h,
  );

/** Answers the last question again, or (with content) the edited last question. */
export const regenerate = (
  conversationId: string,
  body: { content?: string; grounded: boolean },
  h: RunHandlers,
  signal: AbortSignal,
) =>
  follow(
    api.POST("/api/assistant/conversations/{id}/regenerate", {
      params: { path: { id: conversationId } },
      body,
      parseAs: "stream",
      signal,
    }),
    h,
  );

/** Approves or denies a pending action; the run continues. */
export const decide = (
  approvalId: string,
  decision: "approve" | "deny",
  h: RunHandlers,
  signal: AbortSignal,
) =>
  follow(
    api.POST("/api/assistant/approvals/{id}", {
      params: { path: { id: approvalId } },
      body: { decision },
      parseAs: "stream",
      signal,
    }),
    h,
  );
