// @assistant in chat: a question in a channel or DM gets the assistant's answer as a reply in its thread,
// written as the run streams, acting as the person who asked and asking that person to approve any action.
import type { Knex } from "knex";
import type { Caller } from "../../platform/auth/caller.js";
import { can } from "../../platform/auth/caller.js";
import { withOrg } from "../../platform/db/tenant.js";
import { startRun, type AgentDeps, type Emit } from "../assistant/agent.js";
import { appendMessage, createRun, type Citation } from "../assistant/assistant.service.js";
import { orgModels } from "../ai/models.service.js";
import { admitAiRequest } from "../identity/org.service.js";
import { AppError } from "../../platform/http/errors.js";
import {
  audienceOf,
  messageById,
  storeMessage,
  type ChatMessage,
  type ChatNotifier,
} from "./chat.service.js";

/** A message that asks the assistant. */
export const MENTION = /(^|\s)@assistant\b/i;
/** How often a streaming reply is rewritten (each rewrite is an edit event to the channel's members). */
const FLUSH_MS = 300;

/** Updates the assistant's reply and tells the channel. */
async function rewrite(
  knex: Knex,
  notify: ChatNotifier,
  orgId: string,
  target: { channelId: string; messageId: string },
  patch: { body?: string; ai_pending?: unknown },
): Promise<void> {
  const { message, audience } = await withOrg(knex, orgId, async (trx) => {
    await trx("chat_messages")
      .where({ id: target.messageId, author_kind: "assistant" })
      .update({
        ...(patch.body !== undefined ? { body: patch.body } : {}),
        ...("ai_pending" in patch
          ? { ai_pending: patch.ai_pending ? JSON.stringify(patch.ai_pending) : null }
          : {}),
      });
    return {
      message: await messageById(trx, target.channelId, target.messageId),
      audience: await audienceOf(trx, target.channelId),
    };
  });
  notify(orgId, { type: "message.edited", channelId: target.channelId, audience, message });
}

const sourcesOf = (citations: Citation[]) =>
  citations.length
    ? `\n\nSources: ${citations
        .map(
          (c) =>
            `[[${c.ref}] ${c.document}${c.page ? `, page ${c.page}` : ""}](/kb/documents/${c.documentId}#chunk-${c.chunkIndex})`,
        )
        .join(" · ")}`
    : "";

/**
 * The chat side of a run: tokens are gathered and written into the reply every FLUSH_MS; a pending action is
 * shown on it (only the asker can decide it); the final answer replaces the text.
 */
export function chatSink(knex: Knex, notify: ChatNotifier) {
  return (caller: Caller, target: { channelId: string; messageId: string }): Emit => {
    let text = "";
    let timer: NodeJS.Timeout | undefined;
    let chain: Promise<void> = Promise.resolve();
    const write = (patch: { body?: string; ai_pending?: unknown }) => {
      chain = chain.then(() => rewrite(knex, notify, caller.orgId, target, patch)).catch(() => undefined);
    };
    return (event, data) => {
      if (event === "token") {
        text += (data as { text: string }).text;
        timer ??= setTimeout(() => {
          timer = undefined;
          write({ body: text });
        }, FLUSH_MS);
      } else if (event === "approval") {
        clearTimeout(timer);
        timer = undefined;
        const a = (
          data as {
            approval: { id: string; tool: string; summary: string; arguments: unknown; expiresAt: string };
          }
        ).approval;
        write({
          body: `${text ? `${text}\n\n` : ""}Waiting for approval: ${a.summary}`,
          ai_pending: {
            id: a.id,
            tool: a.tool,
            summary: a.summary,
            arguments: a.arguments,
            expiresAt: a.expiresAt,
          },
        });
      } else if (event === "done") {
        clearTimeout(timer);
        timer = undefined;
        const m = (data as { message: { content: string; citations: Citation[] } }).message;
        write({ body: m.content + sourcesOf(m.citations), ai_pending: null });
      } else if (event === "error") {
        clearTimeout(timer);
        write({
          body: `${text}\n\n(The assistant failed: ${(data as { error: { message: string } }).error.message})`,
          ai_pending: null,
        });
      }
    };
  };
}

/**
 * Starts the assistant's answer to a chat message that mentions it: a reply in the message's thread, a
 * conversation in the asker's assistant list, and a run as the asker. Quietly does nothing for people who may
 * not use the assistant or when no chat model is installed.
 */
export async function askInChat(
  agent: AgentDeps,
  notify: ChatNotifier,
  caller: Caller,
  asked: ChatMessage,
): Promise<void> {
  if (!can(caller, "assistant.use")) return;
  const question = asked.body.replace(MENTION, " ").trim() || asked.body;
  const threadOf = asked.parentId ?? asked.id;
  let setup;
  try {
    setup = await withOrg(agent.knex, caller.orgId, async (trx) => {
      const model = (await orgModels(trx, caller.orgId)).chat;
      if (!model) return null;
      // The same admission as every AI request: counted against the plan's daily requests and tokens.
      await admitAiRequest({ caller, trx });
      const threadId = threadOf;
      const { message: reply, audience } = await storeMessage(
        trx,
        caller,
        asked.channelId,
        "…",
        threadId,
        true,
      );
      const [conv] = (await trx("ai_conversations")
        .insert({ org_id: caller.orgId, user_id: caller.userId, title: `Chat: ${question.slice(0, 70)}` })
        .returning("id")) as { id: string }[];
      const userMessage = await appendMessage(trx, conv?.id as string, { role: "user", content: question });
      const runId = await createRun(
        { caller, trx },
        { conversationId: conv?.id as string, model: model.name, question },
      );
      await trx("chat_messages").where({ id: reply.id }).update({ ai_run_id: runId });
      return {
        model,
        runId,
        conversationId: conv?.id as string,
        userMessageId: userMessage.id,
        replyId: reply.id,
        reply,
        parent: await messageById(trx, asked.channelId, threadId),
        audience,
      };
    });
  } catch (err) {
    if (!(err instanceof AppError) || err.status !== 429) throw err;
    // Refused by the plan's quota: the asker sees why in the thread, and nothing else is stored.
    const { message, audience } = await withOrg(agent.knex, caller.orgId, (trx) =>
      storeMessage(
        trx,
        caller,
        asked.channelId,
        `(The assistant cannot answer: ${err.message})`,
        threadOf,
        true,
      ),
    );
    notify(caller.orgId, { type: "message", channelId: asked.channelId, audience, message });
    return;
  }
  if (!setup) return;
  notify(caller.orgId, {
    type: "message",
    channelId: asked.channelId,
    audience: setup.audience,
    message: setup.reply,
  });
  notify(caller.orgId, {
    type: "message.edited",
    channelId: asked.channelId,
    audience: setup.audience,
    message: setup.parent,
  });
  await startRun(
    agent,
    caller,
    {
      runId: setup.runId,
      conversationId: setup.conversationId,
      userMessageId: setup.userMessageId,
      question,
      model: setup.model,
      grounded: can(caller, "kb.read"),
      chat: { channelId: asked.channelId, messageId: setup.replyId },
    },
    () => undefined,
    new AbortController().signal,
  );
}

/** What a post does after it is stored: an @assistant question starts the answer once the post commits. */
export type AfterPost = (scope: { caller: Caller; trx: Knex.Transaction }, message: ChatMessage) => void;

/** The after-post hook shared by the HTTP route and the socket's post frame. */
export function assistantOnMention(
  agent: () => AgentDeps | null,
  notify: ChatNotifier,
  log: { error: (o: object, m: string) => void },
): AfterPost {
  return (scope, message) => {
    const deps = agent();
    if (!deps || !MENTION.test(message.body)) return;
    scope.trx.executionPromise
      .then(() => askInChat(deps, notify, scope.caller, message))
      .catch((err: unknown) => log.error({ err }, "the assistant could not answer in chat"));
  };
}

/**
 * Asks the assistant once, as a person, outside the web UI (an integration's slash command): the question and
 * the answer are kept in the person's assistant conversations, the run is admitted and logged like any other,
 * and the answer's text (with its sources) is returned. A step that needs approval ends the answer with where
 * to approve it.
 */
export async function askOnce(
  agent: AgentDeps,
  caller: Caller,
  question: string,
  source: string,
): Promise<string> {
  if (!can(caller, "assistant.use")) return "(You may not use the assistant.)";
  const setup = await withOrg(agent.knex, caller.orgId, async (trx) => {
    const model = (await orgModels(trx, caller.orgId)).chat;
    if (!model) return null;
    await admitAiRequest({ caller, trx });
    const [conv] = (await trx("ai_conversations")
      .insert({ org_id: caller.orgId, user_id: caller.userId, title: `${source}: ${question.slice(0, 70)}` })
      .returning("id")) as { id: string }[];
    const userMessage = await appendMessage(trx, conv?.id as string, { role: "user", content: question });
    const runId = await createRun(
      { caller, trx },
      { conversationId: conv?.id as string, model: model.name, question },
    );
    return { model, runId, conversationId: conv?.id as string, userMessageId: userMessage.id };
  });
  if (!setup) return "(No chat model is installed.)";
  let answer = "";
  const emit: Emit = (event, data) => {
    if (event === "done") {
      const m = (data as { message: { content: string; citations: Citation[] } }).message;
      answer = m.content + sourcesOf(m.citations);
    } else if (event === "approval") {
      const a = (data as { approval: { summary: string } }).approval;
      answer = `Waiting for approval in WorkSynapse: ${a.summary}`;
    } else if (event === "error") {
      answer = `(The assistant failed: ${(data as { error: { message: string } }).error.message})`;
    }
  };
  await startRun(
    agent,
    caller,
    { ...setup, question, grounded: can(caller, "kb.read") },
    emit,
    new AbortController().signal,
  );
  return answer || "(No answer.)";
}
