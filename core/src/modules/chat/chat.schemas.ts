import { z } from "zod";

/** The largest message body, in characters. */
export const MAX_MESSAGE_CHARS = 8000;

const id = z.uuid();
const channelName = z
  .string()
  .trim()
  .min(1)
  .max(80)
  // eslint-disable-next-line no-control-regex
  .regex(/^[^\u0000-\u001f]+$/, "No control characters");
export const messageBody = z
  .string()
  .max(MAX_MESSAGE_CHARS, `At most ${MAX_MESSAGE_CHARS} characters`)
  .refine((b) => b.trim().length > 0, "Write something");

/** A channel or direct conversation as a member (or a colleague browsing public channels) sees it. */
export const channelSchema = z
  .object({
    id,
    kind: z.enum(["public", "private", "direct"]),
    name: z.string(),
    topic: z.string(),
    joined: z.boolean(),
    archived: z.boolean(),
    lastSeq: z.number(),
    lastReadSeq: z.number(),
    unread: z.number(),
    people: z.array(z.object({ id, name: z.string() })),
    /** Members' read positions (direct conversations and channels of at most 20 people). */
    reads: z.array(z.object({ userId: id, seq: z.number() })),
  })
  .meta({ id: "ChatChannel" });

/** A message; a deleted one keeps its place with an empty body. */
export const messageSchema = z
  .object({
    id,
    channelId: id,
    seq: z.number(),
    userId: id.nullable(),
    authorName: z.string(),
    body: z.string(),
    editedAt: z.string().nullable(),
    deleted: z.boolean(),
    createdAt: z.string(),
    parentId: id.nullable(),
    replyCount: z.number(),
    reactions: z.array(z.object({ emoji: z.string(), userIds: z.array(id) })),
    attachments: z.array(z.object({ id, name: z.string(), mime: z.string(), size: z.number() })),
    /** "assistant" for the assistant's replies to an @assistant question. */
    author: z.enum(["user", "assistant"]),
    /** Who asked the assistant (only they may approve its actions). */
    askedBy: id.nullable(),
    /** The action the assistant waits for the asker to approve. */
    pendingAction: z
      .object({ id, tool: z.string(), summary: z.string(), arguments: z.unknown(), expiresAt: z.string() })
      .nullable(),
  })
  .meta({ id: "ChatMessage" });

export const createChannelBody = z
  .strictObject({
    kind: z.enum(["public", "private"]),
    name: channelName,
    topic: z.string().max(250).default(""),
    memberIds: z.array(id).max(500).default([]),
  })
  .meta({ id: "CreateChatChannelRequest" });
export const directBody = z
  .strictObject({ userIds: z.array(id).min(1).max(8) })
  .meta({ id: "OpenDirectRequest" });
export const updateChannelBody = z
  .strictObject({
    name: channelName.optional(),
    topic: z.string().max(250).optional(),
    archived: z.boolean().optional(),
  })
  .meta({ id: "UpdateChatChannelRequest" });
export const membersBody = z
  .strictObject({ userIds: z.array(id).min(1).max(500) })
  .meta({ id: "AddChatMembersRequest" });
export const postBody = z
  .strictObject({ body: messageBody, parentId: id.optional() })
  .meta({ id: "PostChatMessageRequest" });
export const editBody = z.strictObject({ body: messageBody }).meta({ id: "EditChatMessageRequest" });
export const reactBody = z
  .strictObject({
    // One emoji (a few code points with joiners and modifiers) or a short :name:.
    emoji: z
      .string()
      .min(1)
      .max(32)
      .regex(
        /^(?=.*\p{Extended_Pictographic})(?:\p{Extended_Pictographic}|\p{Emoji_Component}|\u200d|\ufe0f)+$|^:[a-z0-9_+-]{1,30}:$/u,
        "One emoji",
      ),
    on: z.boolean(),
  })
  .meta({ id: "ReactChatMessageRequest" });
export const readBody = z.strictObject({ seq: z.number().int().min(0) }).meta({ id: "MarkChatReadRequest" });
export const messagesQuery = z.strictObject({
  /** The replies of a thread (with its first message). */
  thread: id.optional(),
  beforeSeq: z.coerce.number().int().min(1).optional(),
  afterSeq: z.coerce.number().int().min(0).optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});
export const searchQuery = z.strictObject({
  q: z.string().trim().min(1).max(200),
  limit: z.coerce.number().int().min(1).max(100).default(30),
});
export const channelParams = z.strictObject({ id });
export const messageParams = z.strictObject({ id, messageId: id });
export const fileParams = z.strictObject({ id, fileId: id });
/** The multipart form of a message with files (documented; read by the handler). */
export const filesForm = z.object({
  files: z.array(z.string().meta({ format: "binary" })),
  body: z.string().max(8000).optional(),
});
