import { rm } from "node:fs/promises";
import path from "node:path";
import type { Knex } from "knex";
import { z } from "zod";
import type { Config } from "../../config/schema.js";
import type { Api } from "../../platform/http/api.js";
import { afterCommit, dataOf } from "../../platform/http/api.js";
import { withOrg } from "../../platform/db/tenant.js";
import { AppError } from "../../platform/http/errors.js";
import { receiveFiles, sendDownload } from "../../platform/http/uploads.js";
import * as chat from "./chat.service.js";
import { assistantOnMention } from "./chat.assistant.js";
import type { AgentDeps } from "../assistant/agent.js";
import type { Logger } from "../../platform/log.js";
import * as s from "./chat.schemas.js";

const tags = ["chat"];

/** Registers the chat routes; live events go over the WebSocket at /ws (chat.socket.ts). */
export function registerChatRoutes(
  api: Api,
  notify: chat.ChatNotifier,
  deps: {
    knex: Knex | null;
    config: Config;
    /** The assistant's loop, for @assistant questions (null: no assistant on this process). */
    agent: () => AgentDeps | null;
    log: Pick<Logger, "error">;
  },
): void {
  /** After the question's transaction commits, the assistant answers in its thread. */
  const maybeAsk = assistantOnMention(deps.agent, notify, deps.log);
  const knex = () => {
    if (!deps.knex) throw AppError.unavailable("Chat is not configured on this process.");
    return deps.knex;
  };
  const read = "chat.read";
  const write = "chat.write";
  api.route({
    method: "get",
    path: "/api/chat/channels",
    operationId: "listChatChannels",
    summary:
      "Channels and direct conversations the caller belongs to, public channels to join, unread counts",
    tags,
    permission: read,
    response: dataOf(z.array(s.channelSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await chat.listChannels(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/chat/channels",
    operationId: "createChatChannel",
    summary: "Start a public or private channel",
    tags,
    permission: write,
    body: s.createChannelBody,
    status: 201,
    response: dataOf(s.channelSchema),
    errors: [404, 409],
    handler: async (_ctx, { body }, scope) => ({ data: await chat.createChannel(scope, notify, body) }),
  });
  api.route({
    method: "post",
    path: "/api/chat/direct",
    operationId: "openDirectConversation",
    summary: "The direct conversation with these people (started the first time)",
    tags,
    permission: write,
    body: s.directBody,
    response: dataOf(s.channelSchema),
    errors: [404],
    handler: async (_ctx, { body }, scope) => ({ data: await chat.openDirect(scope, notify, body.userIds) }),
  });
  api.route({
    method: "get",
    path: "/api/chat/search",
    operationId: "searchChatMessages",
    summary: "Full-text search over the messages the caller can read",
    tags,
    permission: read,
    query: s.searchQuery,
    response: dataOf(z.array(s.messageSchema)),
    handler: async (_ctx, { query }, scope) => ({
      data: await chat.searchMessages(scope, query.q, query.limit),
    }),
  });
  api.route({
    method: "get",
    path: "/api/chat/channels/:id",
    operationId: "getChatChannel",
    summary: "One channel",
    tags,
    permission: read,
    params: s.channelParams,
    response: dataOf(s.channelSchema),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await chat.getChannel(scope, params.id) }),
  });
  api.route({
    method: "patch",
    path: "/api/chat/channels/:id",
    operationId: "updateChatChannel",
    summary: "Change the topic (members), rename or archive (the owner)",
    tags,
    permission: write,
    params: s.channelParams,
    body: s.updateChannelBody,
    response: dataOf(s.channelSchema),
    errors: [404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await chat.updateChannel(scope, notify, params.id, body),
    }),
  });
  api.route({
    method: "post",
    path: "/api/chat/channels/:id/join",
    operationId: "joinChatChannel",
    summary: "Join a public channel",
    tags,
    permission: read,
    params: s.channelParams,
    response: dataOf(s.channelSchema),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await chat.joinChannel(scope, notify, params.id) }),
  });
  api.route({
    method: "delete",
    path: "/api/chat/channels/:id/membership",
    operationId: "leaveChatChannel",
    summary: "Leave a channel",
    tags,
    permission: read,
    params: s.channelParams,
    status: 204,
    errors: [404],
    handler: async (_ctx, { params }, scope) => chat.leaveChannel(scope, params.id),
  });
  api.route({
    method: "post",
    path: "/api/chat/channels/:id/members",
    operationId: "addChatMembers",
    summary: "Add people to a channel you belong to",
    tags,
    permission: write,
    params: s.channelParams,
    body: s.membersBody,
    response: dataOf(s.channelSchema),
    errors: [404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await chat.addMembers(scope, notify, params.id, body.userIds),
    }),
  });
  api.route({
    method: "get",
    path: "/api/chat/channels/:id/messages",
    operationId: "listChatMessages",
    summary: "Messages in order: the latest, those before a number (scroll back) or after one (catch up)",
    tags,
    permission: read,
    params: s.channelParams,
    query: s.messagesQuery,
    response: dataOf(z.array(s.messageSchema)),
    errors: [404],
    handler: async (_ctx, { params, query }, scope) => ({
      data: await chat.listMessages(scope, params.id, query),
    }),
  });
  api.route({
    method: "post",
    path: "/api/chat/channels/:id/messages",
    operationId: "postChatMessage",
    summary: "Post a message (Markdown), or a reply in a thread; members receive it over /ws",
    tags,
    permission: write,
    params: s.channelParams,
    body: s.postBody,
    status: 201,
    response: dataOf(s.messageSchema),
    errors: [404, 409],
    handler: async (_ctx, { params, body }, scope) => {
      const message = await chat.postMessage(scope, notify, params.id, body.body, body.parentId);
      maybeAsk(scope, message);
      return { data: message };
    },
  });
  api.route({
    method: "patch",
    path: "/api/chat/channels/:id/messages/:messageId",
    operationId: "editChatMessage",
    summary: "Edit your own message (marked edited)",
    tags,
    permission: write,
    params: s.messageParams,
    body: s.editBody,
    response: dataOf(s.messageSchema),
    errors: [404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await chat.editMessage(scope, notify, params.id, params.messageId, body.body),
    }),
  });
  api.route({
    method: "post",
    path: "/api/chat/channels/:id/messages/:messageId/reactions",
    operationId: "reactToChatMessage",
    summary: "Add or remove your reaction on a message",
    tags,
    permission: write,
    params: s.messageParams,
    body: s.reactBody,
    response: dataOf(s.messageSchema),
    errors: [404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await chat.react(scope, notify, params.id, params.messageId, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/chat/channels/:id/messages/:messageId",
    operationId: "deleteChatMessage",
    summary: "Delete a message (its author or the channel's owner)",
    tags,
    permission: write,
    params: s.messageParams,
    status: 204,
    errors: [404, 409],
    handler: async (_ctx, { params }, scope) =>
      chat.deleteMessage(scope, notify, params.id, params.messageId, deps.config),
  });
  api.route({
    method: "post",
    path: "/api/chat/channels/:id/files",
    operationId: "postChatFiles",
    summary: "Share files in a message (multipart/form-data: `files`, and an optional `body`)",
    tags,
    permission: write,
    params: s.channelParams,
    multipart: s.filesForm,
    status: 201,
    response: dataOf(s.messageSchema),
    errors: [403, 404, 409, 413, 415],
    handler: async (ctx, { params }, scope) => {
      await chat.getChannel(scope, params.id);
      // The body streams to disk after this transaction has committed (no connection held meanwhile).
      return afterCommit(async () => {
        const fields: Record<string, string> = {};
        const files = await receiveFiles(
          ctx,
          path.join(chat.chatDir(deps.config), "tmp"),
          {
            maxUploadBytes: deps.config.chat.maxFileBytes * deps.config.chat.maxFilesPerMessage,
            maxFileBytes: deps.config.chat.maxFileBytes,
            maxFiles: deps.config.chat.maxFilesPerMessage,
          },
          fields,
        );
        try {
          const message = await withOrg(knex(), scope.caller.orgId, (trx) =>
            chat.postFiles(
              { caller: scope.caller, trx },
              notify,
              deps.config,
              params.id,
              files,
              fields.body ?? "",
            ),
          );
          return { data: message };
        } finally {
          await Promise.all(files.map((f) => rm(f.tmp, { force: true })));
        }
      });
    },
  });
  api.route({
    method: "get",
    path: "/api/chat/channels/:id/files/:fileId",
    operationId: "downloadChatFile",
    summary: "A file shared in a channel the caller can read (always as a download)",
    tags,
    permission: read,
    params: s.fileParams,
    responseType: "application/octet-stream",
    response: z.string().meta({ format: "binary" }),
    errors: [404],
    handler: async (ctx, { params }, scope) => {
      return sendDownload(ctx, await chat.openAttachment(scope, deps.config, params.id, params.fileId));
    },
  });
  api.route({
    method: "post",
    path: "/api/chat/channels/:id/read",
    operationId: "markChatRead",
    summary: "Move your read position in a channel forward",
    tags,
    permission: read,
    params: s.channelParams,
    body: s.readBody,
    status: 204,
    errors: [404],
    handler: async (_ctx, { params, body }, scope) => chat.markRead(scope, notify, params.id, body.seq),
  });
}
