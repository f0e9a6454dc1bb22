// Internal chat: channels, direct messages, messages with per-channel sequence numbers, read positions.
import { mkdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { fileTypeFromFile } from "file-type";
import type { Knex } from "knex";
import type { z } from "zod";
import type { Config } from "../../config/schema.js";
import type { Scope } from "../../platform/http/api.js";
import type { Caller } from "../../platform/auth/caller.js";
import { withOrg } from "../../platform/db/tenant.js";
import { formatMegabytes, fsyncDir, type Received } from "../../platform/http/uploads.js";
import { AppError } from "../../platform/http/errors.js";
import { actorOf, audit } from "../identity/audit.js";
import { addNotifications } from "../notifications/notifications.service.js";
import type { messageSchema } from "./chat.schemas.js";

/** What happened in a channel, as sent to the members' sockets after the transaction commits. */
export interface ChatEvent {
  type: "message" | "message.edited" | "message.deleted" | "message.reactions" | "read" | "channel";
  channelId: string;
  /** Members who should receive it (the fan-out filters on this; never sent to clients). */
  audience: string[];
  message?: ChatMessage;
  read?: { userId: string; seq: number };
  channel?: { id: string };
}

/** Sends chat events to every node (ephemeral NATS); see chat.socket.ts. */
export type ChatNotifier = (orgId: string, event: ChatEvent) => void;

/** A message as the API presents it (the schema in chat.schemas.ts is the one definition). */
export type ChatMessage = z.infer<typeof messageSchema>;

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

const presentMessage = (r: Record<string, unknown>): ChatMessage => ({
  id: r.id as string,
  channelId: r.channel_id as string,
  seq: Number(r.seq),
  userId: (r.user_id as string | null) ?? null,
  authorName: r.author_kind === "assistant" ? "Assistant" : ((r.author_name as string | null) ?? ""),
  body: r.deleted_at ? "" : (r.body as string),
  editedAt: iso(r.edited_at as Date | null),
  deleted: !!r.deleted_at,
  createdAt: (r.created_at as Date).toISOString(),
  parentId: (r.parent_id as string | null) ?? null,
  replyCount: Number(r.reply_count ?? 0),
  reactions: (r.reactions as { emoji: string; userIds: string[] }[] | null) ?? [],
  attachments: r.deleted_at
    ? []
    : ((r.attachments as { id: string; name: string; mime: string; size: number }[] | null) ?? []),
  author: r.author_kind === "assistant" ? "assistant" : "user",
  askedBy: (r.asked_by as string | null) ?? null,
  pendingAction: (r.ai_pending as ChatMessage["pendingAction"] | null) ?? null,
});

/** Runs `fn` once the transaction has committed (never for a rolled-back one). */
function afterCommit(trx: Knex.Transaction, fn: () => void): void {
  trx.executionPromise.then(fn).catch(() => undefined);
}

/** The channel if the caller may read it: a member, or any colleague for a public channel; else 404. */
async function readable(trx: Knex.Transaction, userId: string, channelId: string) {
  const row = (await trx("chat_channels as c")
    .leftJoin("chat_members as m", function () {
      this.on("m.channel_id", "c.id").andOn("m.user_id", trx.raw("?", [userId]));
    })
    .where("c.id", channelId)
    .first("c.*", "m.user_id as member", "m.role as member_role", "m.last_read_seq")) as
    Record<string, unknown> | undefined;
  if (!row || (row.kind !== "public" && !row.member)) throw AppError.notFound("No such channel.");
  return row;
}

/** The channel if the caller is a member (writing needs membership); else 404 or 403. */
async function asMember(trx: Knex.Transaction, userId: string, channelId: string) {
  const row = await readable(trx, userId, channelId);
  if (!row.member) throw AppError.forbidden("Join the channel first.");
  if (row.archived_at) throw new AppError(409, "archived", "The channel is archived.");
  return row;
}

export const audienceOf = async (trx: Knex.Transaction, channelId: string) =>
  (await trx("chat_members").where({ channel_id: channelId }).pluck("user_id")) as string[];

/** Channels the caller belongs to, and public ones to browse, with unread counts. */
export async function listChannels({ caller, trx }: Scope) {
  const rows = (
    await trx.raw(
      `select c.id, c.kind, c.name, c.topic, c.last_seq, c.archived_at, c.created_at,
         m.user_id is not null as joined, coalesce(m.last_read_seq, 0) as last_read_seq,
         (select count(*) from chat_messages x where x.channel_id = c.id and x.seq > coalesce(m.last_read_seq, 0)
            and x.deleted_at is null and x.user_id is distinct from :me) as unread,
         (select coalesce(json_agg(json_build_object('id', u.id, 'name', u.display_name) order by u.display_name), '[]')
            from chat_members mm join users u on u.id = mm.user_id where mm.channel_id = c.id and c.kind = 'direct') as people,
         -- Read positions for "seen by": direct conversations and small channels only.
         (select case when count(*) <= 20 then coalesce(json_agg(json_build_object('userId', r.user_id, 'seq', r.last_read_seq)), '[]') end
            from chat_members r where r.channel_id = c.id) as reads
       from chat_channels c left join chat_members m on m.channel_id = c.id and m.user_id = :me
       where m.user_id is not null or c.kind = 'public'
       order by c.kind = 'direct', lower(coalesce(c.name, '')), c.created_at`,
      { me: caller.userId },
    )
  ).rows as Record<string, unknown>[];
  return rows.map((r) => presentChannel(r, caller.userId));
}

function presentChannel(r: Record<string, unknown>, me: string) {
  const people = ((r.people as { id: string; name: string }[] | null) ?? []).filter((p) => p.id !== me);
  return {
    id: r.id as string,
    kind: r.kind as "public" | "private" | "direct",
    name: (r.name as string | null) ?? people.map((p) => p.name).join(", "),
    topic: r.topic as string,
    joined: Boolean(r.joined),
    archived: !!r.archived_at,
    lastSeq: Number(r.last_seq),
    lastReadSeq: Number(r.last_read_seq ?? 0),
    unread: r.joined ? Number(r.unread ?? 0) : 0,
    people,
    reads: r.joined
      ? ((r.reads as { userId: string; seq: number }[] | null) ?? []).map((x) => ({
          userId: x.userId,
          seq: Number(x.seq),
        }))
      : [],
  };
}

/** One channel the caller may read. */
export async function getChannel(scope: Scope, id: string) {
  await readable(scope.trx, scope.caller.userId, id);
  return (await listChannels(scope)).find((c) => c.id === id) as ReturnType<typeof presentChannel>;
}

/** Only the organization's own, active people may be added. */
async function checkPeople(trx: Knex.Transaction, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  const found = await trx("users")
    .whereIn("id", ids)
    .where({ status: "active" })
    .count<{ count: string }[]>();
  if (Number(found[0]?.count) !== ids.length) throw AppError.notFound("A person to add does not exist.");
}

/** Creates a public or private channel with its creator as owner and the given members. */
export async function createChannel(
  { caller, trx }: Scope,
  notify: ChatNotifier,
  input: { kind: "public" | "private"; name: string; topic: string; memberIds: string[] },
) {
  const others = [...new Set(input.memberIds.filter((id) => id !== caller.userId))];
  await checkPeople(trx, others);
  let id: string;
  try {
    const rows = await trx("chat_channels")
      .insert({
        org_id: caller.orgId,
        kind: input.kind,
        name: input.name,
        topic: input.topic,
        created_by: caller.userId,
      })
      .returning("id");
    id = (rows[0] as { id: string }).id;
  } catch (err) {
    if ((err as { code?: string }).code === "23505")
      throw AppError.conflict("A channel with this name exists.", { field: "name" });
    throw err;
  }
  await trx("chat_members").insert([
    { org_id: caller.orgId, channel_id: id, user_id: caller.userId, role: "owner" },
    ...others.map((u) => ({ org_id: caller.orgId, channel_id: id, user_id: u })),
  ]);
  await audit(trx, {
    ...actorOf(caller),
    action: "chat.channel.create",
    targetType: "chat_channel",
    targetId: id,
    outcome: "success",
    details: { kind: input.kind, name: input.name },
  });
  const audience = [caller.userId, ...others];
  afterCommit(trx, () => notify(caller.orgId, { type: "channel", channelId: id, audience, channel: { id } }));
  return getChannel({ caller, trx }, id);
}

/** The direct conversation of the caller with these people (created once; the same set finds it again). */
export async function openDirect({ caller, trx }: Scope, notify: ChatNotifier, userIds: string[]) {
  const people = [...new Set([caller.userId, ...userIds])].sort();
  if (people.length < 2) throw AppError.badRequest("Name at least one other person.");
  await checkPeople(
    trx,
    people.filter((p) => p !== caller.userId),
  );
  const key = people.join(",");
  const existing = await trx("chat_channels").where({ kind: "direct", direct_key: key }).first("id");
  if (existing) return getChannel({ caller, trx }, existing.id as string);
  const rows = await trx("chat_channels")
    .insert({ org_id: caller.orgId, kind: "direct", direct_key: key, created_by: caller.userId })
    .onConflict(trx.raw("(org_id, direct_key) where kind = 'direct'"))
    .ignore()
    .returning("id");
  const id = (rows[0] as { id: string } | undefined)?.id;
  if (!id) {
    const again = await trx("chat_channels").where({ kind: "direct", direct_key: key }).first("id");
    return getChannel({ caller, trx }, again.id as string);
  }
  await trx("chat_members").insert(people.map((u) => ({ org_id: caller.orgId, channel_id: id, user_id: u })));
  afterCommit(trx, () =>
    notify(caller.orgId, { type: "channel", channelId: id, audience: people, channel: { id } }),
  );
  return getChannel({ caller, trx }, id);
}

/** Joins a public channel. */
export async function joinChannel({ caller, trx }: Scope, notify: ChatNotifier, id: string) {
  const ch = await readable(trx, caller.userId, id);
  if (!ch.member) {
    if (ch.kind !== "public") throw AppError.notFound("No such channel.");
    await trx("chat_members")
      .insert({ org_id: caller.orgId, channel_id: id, user_id: caller.userId, last_read_seq: ch.last_seq })
      .onConflict(["channel_id", "user_id"])
      .ignore();
    afterCommit(trx, () =>
      notify(caller.orgId, { type: "channel", channelId: id, audience: [caller.userId], channel: { id } }),
    );
  }
  return getChannel({ caller, trx }, id);
}

/** Leaves a channel (direct conversations cannot be left). */
export async function leaveChannel({ caller, trx }: Scope, id: string): Promise<void> {
  const ch = await readable(trx, caller.userId, id);
  if (ch.kind === "direct") throw AppError.badRequest("Direct conversations cannot be left.");
  await trx("chat_members").where({ channel_id: id, user_id: caller.userId }).delete();
}

/** Adds people to a channel the caller is a member of. */
export async function addMembers(
  { caller, trx }: Scope,
  notify: ChatNotifier,
  id: string,
  userIds: string[],
) {
  const ch = await asMember(trx, caller.userId, id);
  if (ch.kind === "direct") throw AppError.badRequest("Start a new direct conversation to add people.");
  const ids = [...new Set(userIds)];
  await checkPeople(trx, ids);
  await trx("chat_members")
    .insert(ids.map((u) => ({ org_id: caller.orgId, channel_id: id, user_id: u })))
    .onConflict(["channel_id", "user_id"])
    .ignore();
  afterCommit(trx, () =>
    notify(caller.orgId, { type: "channel", channelId: id, audience: ids, channel: { id } }),
  );
  return getChannel({ caller, trx }, id);
}

/** Changes the topic (any member), the name or archives (the owner). */
export async function updateChannel(
  { caller, trx }: Scope,
  notify: ChatNotifier,
  id: string,
  input: { name?: string; topic?: string; archived?: boolean },
) {
  const ch = await readable(trx, caller.userId, id);
  if (!ch.member) throw AppError.forbidden("Join the channel first.");
  if ((input.name !== undefined || input.archived !== undefined) && ch.member_role !== "owner")
    throw AppError.forbidden("Only the channel's owner can rename or archive it.");
  if (input.name !== undefined && ch.kind === "direct")
    throw AppError.badRequest("Direct conversations have no name.");
  const patch: Record<string, unknown> = {};
  if (input.name !== undefined) patch.name = input.name;
  if (input.topic !== undefined) patch.topic = input.topic;
  if (input.archived !== undefined) patch.archived_at = input.archived ? trx.fn.now() : null;
  if (Object.keys(patch).length) {
    try {
      await trx("chat_channels").where({ id }).update(patch);
    } catch (err) {
      if ((err as { code?: string }).code === "23505")
        throw AppError.conflict("A channel with this name exists.", { field: "name" });
      throw err;
    }
  }
  const audience = await audienceOf(trx, id);
  afterCommit(trx, () => notify(caller.orgId, { type: "channel", channelId: id, audience, channel: { id } }));
  return getChannel({ caller, trx }, id);
}

/** The columns of a presented message; replies and reactions ride along (a handful of rows each). */
const messageColumns = (trx: Knex.Transaction) => [
  "m.id",
  "m.channel_id",
  "m.seq",
  "m.user_id",
  "m.body",
  "m.edited_at",
  "m.deleted_at",
  "m.created_at",
  "m.parent_id",
  "m.author_kind",
  "m.asked_by",
  "m.ai_pending",
  "u.display_name as author_name",
  trx.raw(
    "(select count(*) from chat_messages r where r.parent_id = m.id and r.deleted_at is null) as reply_count",
  ),
  trx.raw(`(select json_agg(json_build_object('id', a.id, 'name', a.name, 'mime', a.mime, 'size', a.size_bytes)
     order by a.created_at) from chat_attachments a where a.message_id = m.id) as attachments`),
  trx.raw(`(select json_agg(json_build_object('emoji', x.emoji, 'userIds', x.users) order by x.first)
     from (select emoji, array_agg(user_id order by created_at) as users, min(created_at) as first
           from chat_reactions where message_id = m.id group by emoji) x) as reactions`),
];

/**
 * Messages of a channel in order: the latest `limit`, or those before/after a sequence number (scrolling
 * back, and catching up after a reconnect: `afterSeq` returns exactly what was missed).
 */
export async function listMessages(
  { caller, trx }: Scope,
  id: string,
  q: { beforeSeq?: number; afterSeq?: number; limit: number; thread?: string },
) {
  await readable(trx, caller.userId, id);
  const query = trx("chat_messages as m")
    .leftJoin("users as u", "u.id", "m.user_id")
    .where("m.channel_id", id);
  if (q.afterSeq !== undefined) {
    // Catching up: everything after the cursor, replies included, in order.
    const rows = await query
      .where("m.seq", ">", q.afterSeq)
      .orderBy("m.seq")
      .limit(q.limit)
      .select(messageColumns(trx));
    return rows.map(presentMessage);
  }
  if (q.thread) {
    const rows = await query
      .where((w) => w.where("m.id", q.thread as string).orWhere("m.parent_id", q.thread as string))
      .orderBy("m.seq")
      .limit(q.limit)
      .select(messageColumns(trx));
    if (rows.length === 0) throw AppError.notFound("No such message.");
    return rows.map(presentMessage);
  }
  query.whereNull("m.parent_id");
  if (q.beforeSeq !== undefined) query.where("m.seq", "<", q.beforeSeq);
  const rows = await query.orderBy("m.seq", "desc").limit(q.limit).select(messageColumns(trx));
  return rows.reverse().map(presentMessage);
}

export async function messageById(
  trx: Knex.Transaction,
  channelId: string,
  messageId: string,
): Promise<ChatMessage> {
  const row = await trx("chat_messages as m")
    .leftJoin("users as u", "u.id", "m.user_id")
    .where({ "m.id": messageId, "m.channel_id": channelId })
    .first(messageColumns(trx));
  if (!row) throw AppError.notFound("No such message.");
  return presentMessage(row as Record<string, unknown>);
}

/**
 * Members a message mentions: `@` followed by someone's address before the @, their display name without
 * spaces, or their first name; `@channel` is everyone. Never the author, never anyone outside the channel.
 */
async function mentionedMembers(trx: Knex.Transaction, channelId: string, body: string, authorId: string) {
  const tokens = [...body.matchAll(/(^|[\s(])@(\p{L}[\p{L}\p{N}._-]{1,63})/gu)].map((m) =>
    (m[2] as string).toLowerCase(),
  );
  if (!tokens.length) return [];
  const members = (await trx("chat_members as m")
    .join("users as u", "u.id", "m.user_id")
    .where("m.channel_id", channelId)
    .select("u.id", "u.email", "u.display_name")) as { id: string; email: string; display_name: string }[];
  const all = tokens.includes("channel");
  return members
    .filter((u) => {
      if (u.id === authorId) return false;
      if (all) return true;
      const names = [
        (u.email.split("@")[0] ?? "").toLowerCase(),
        u.display_name.replace(/\s+/g, "").toLowerCase(),
        (u.display_name.split(/\s+/)[0] ?? "").toLowerCase(),
      ];
      return tokens.some((t) => names.includes(t));
    })
    .map((u) => u.id);
}

/** Posts a message: the next number of the channel, under its row lock; the author has read it. */
export async function postMessage(
  { caller, trx }: Scope,
  notify: ChatNotifier,
  id: string,
  body: string,
  parentId?: string,
  /** Runs after the message row exists, before it is announced (attachments). */
  withMessage?: (messageId: string) => Promise<void>,
) {
  const stored = await storeMessage(trx, caller, id, body, parentId);
  let message = stored.message;
  const messageId = message.id;
  if (withMessage) {
    await withMessage(messageId);
    message = await messageById(trx, id, messageId);
  }
  const { audience, channel } = stored;
  const parent = parentId ? await messageById(trx, id, parentId) : undefined;
  // Mentioned members are notified in the same transaction: a mention exists exactly when its message does.
  const mentioned = body.includes("@") ? await mentionedMembers(trx, id, body, caller.userId) : [];
  await addNotifications(
    trx,
    caller.orgId,
    mentioned.map((userId) => ({
      userId,
      kind: "chat.mention",
      title: `${message.authorName} mentioned you ${channel.kind === "direct" ? "in a direct message" : `in #${channel.name}`}`,
      body: body.slice(0, 200),
      link: `/chat?channel=${id}`,
      actorId: caller.userId,
      sourceType: "chat_message",
      sourceId: messageId,
    })),
  );
  afterCommit(trx, () => {
    notify(caller.orgId, { type: "message", channelId: id, audience, message });
    // The thread's first message shows its new reply count.
    if (parent) notify(caller.orgId, { type: "message.edited", channelId: id, audience, message: parent });
  });
  return message;
}

/** What chat_post answers for one message. */
interface PostRow {
  id: string;
  seq: string;
  created_at: Date;
  author_name: string | null;
  /** Comma-joined: far cheaper to split than a PostgreSQL array is to parse. */
  audience: string | null;
  kind: string;
  name: string | null;
  failure: string | null;
}
type PostArgs = [
  org: string,
  user: string,
  channel: string,
  body: string,
  parent: string | null,
  asAssistant: boolean,
];
const POST_COLUMNS =
  "r.id, r.seq, r.created_at, r.author_name, array_to_string(r.audience, ',') as audience, r.kind, r.name, r.failure";

interface PgConnection {
  query(text: string, values: unknown[]): Promise<{ rows: unknown[] }>;
}
/** The connection pool of a knex on `pg` (null on the embedded database, whose one connection knex keeps). */
function pgPool(knex: Knex) {
  const client = knex.client as {
    config: { client: unknown };
    acquireConnection(): Promise<PgConnection>;
    releaseConnection(c: PgConnection): Promise<void>;
  };
  return client.config.client === "pg" ? client : null;
}

/**
 * Posts stored outside a transaction (the socket's path) go to PostgreSQL one statement at a time per process:
 * a post that arrives while one is being stored waits for it, and all that waited go together in the next
 * statement. Idle, a post goes at once; busy, it costs a fraction of a round trip. A batch locks its channels in
 * id order, so two nodes' batches cannot deadlock; if a batch fails, its posts are retried one by one, so one bad
 * post fails alone.
 */
class PostBatcher {
  private readonly queue: { args: PostArgs; resolve: (r: PostRow) => void; reject: (e: unknown) => void }[] =
    [];
  private busy = false;

  constructor(private readonly knex: Knex) {}

  store(args: PostArgs): Promise<PostRow> {
    return new Promise((resolve, reject) => {
      this.queue.push({ args, resolve, reject });
      if (!this.busy) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.busy = true;
    const pool = pgPool(this.knex);
    let conn: PgConnection | undefined;
    try {
      // One connection while posts keep coming, released when the queue is empty.
      if (pool) conn = await pool.acquireConnection();
      while (this.queue.length) {
        const batch = this.queue.splice(0, 100);
        try {
          const rows = await this.run(
            conn,
            batch.map((b) => b.args),
          );
          batch.forEach((b, i) => b.resolve(rows[i] as PostRow));
        } catch (err) {
          if (batch.length === 1) batch[0]?.reject(err);
          else
            for (const b of batch)
              await this.run(conn, [b.args]).then(([r]) => b.resolve(r as PostRow), b.reject);
        }
      }
    } catch (err) {
      for (const b of this.queue.splice(0)) b.reject(err);
    } finally {
      if (pool && conn) await pool.releaseConnection(conn);
      this.busy = false;
    }
  }

  private async run(conn: PgConnection | undefined, items: PostArgs[]): Promise<PostRow[]> {
    if (!conn) {
      const out: PostRow[] = [];
      for (const args of items) out.push(await postOne(this.knex, args));
      return out;
    }
    if (items.length === 1) return [(await conn.query(POST_ONE, items[0] as PostArgs)).rows[0] as PostRow];
    // By channel (the lock order), and within a channel in arrival order: numbers follow the order posts came
    // in, which is also the order their callers hear back and announce them in.
    const order = items
      .map((_, i) => i)
      .sort((a, b) => {
        const [x, y] = [items[a]![2], items[b]![2]];
        return x < y ? -1 : x > y ? 1 : a - b;
      });
    const column = (k: number) => order.map((i) => items[i]![k]);
    const { rows } = await conn.query(
      `select a.n, ${POST_COLUMNS}
       from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::boolean[])
         with ordinality as a(org, usr, ch, body, parent, asst, n)
       cross join lateral chat_post(a.org, a.usr, a.ch, a.body, a.parent, a.asst) r
       order by a.n`,
      [0, 1, 2, 3, 4, 5].map(column),
    );
    const out: PostRow[] = [];
    for (const r of rows as (PostRow & { n: string })[]) out[order[Number(r.n) - 1] as number] = r;
    return out;
  }
}

const POST_ONE = `select ${POST_COLUMNS} from chat_post($1, $2, $3, $4, $5, $6) r`;

/** One chat_post through knex: in the caller's transaction, or on the embedded database. */
async function postOne(db: Knex | Knex.Transaction, args: PostArgs): Promise<PostRow> {
  return (await db.raw(POST_ONE.replace(/\$\d/g, "?"), args)).rows[0] as PostRow;
}

const batchers = new WeakMap<Knex, PostBatcher>();

/**
 * Stores a message with chat_post (see its migration): the checks, the channel's next number, the message and
 * the author's read position in one statement, on the caller's transaction or, given the pool, batched with the
 * posts that arrive meanwhile. A new message has no replies, reactions or files yet, so it is not read back.
 */
export async function storeMessage(
  db: Knex | Knex.Transaction,
  caller: Caller,
  id: string,
  body: string,
  parentId?: string,
  asAssistant = false,
): Promise<{ message: ChatMessage; audience: string[]; channel: { kind: string; name: string | null } }> {
  const args: PostArgs = [caller.orgId, caller.userId, id, body, parentId ?? null, asAssistant];
  let row: PostRow;
  if ("isTransaction" in db) row = await postOne(db, args);
  else {
    let batcher = batchers.get(db);
    if (!batcher) batchers.set(db, (batcher = new PostBatcher(db)));
    row = await batcher.store(args);
  }
  switch (row.failure) {
    case "inactive":
      throw AppError.unauthenticated("Your account is no longer active.");
    case "not_found":
      throw AppError.notFound("No such channel.");
    case "not_member":
      throw AppError.forbidden("Join the channel first.");
    case "archived":
      throw new AppError(409, "archived", "The channel is archived.");
    case "no_parent":
      throw AppError.notFound("No such message to reply to.");
    case "nested":
      throw AppError.badRequest("Reply to the thread's first message.");
  }
  const message = presentMessage({
    id: row.id,
    channel_id: id,
    seq: row.seq,
    user_id: asAssistant ? null : caller.userId,
    author_name: row.author_name,
    body,
    created_at: row.created_at,
    parent_id: parentId ?? null,
    author_kind: asAssistant ? "assistant" : "user",
    asked_by: asAssistant ? caller.userId : null,
  });
  return {
    message,
    audience: row.audience ? row.audience.split(",") : [],
    channel: { kind: row.kind, name: row.name },
  };
}

/**
 * Posts plain text as one statement outside any transaction: the socket's path for text without mentions
 * (those need the transaction that writes their notifications). The socket checks the caller's permission.
 */
export async function postQuick(
  knex: Knex,
  caller: Caller,
  notify: ChatNotifier,
  id: string,
  body: string,
  parentId?: string,
): Promise<ChatMessage> {
  const { message, audience } = await storeMessage(knex, caller, id, body, parentId);
  notify(caller.orgId, { type: "message", channelId: id, audience, message });
  if (parentId) {
    // The thread's first message shows its new reply count.
    const parent = await withOrg(knex, caller.orgId, (trx) => messageById(trx, id, parentId));
    notify(caller.orgId, { type: "message.edited", channelId: id, audience, message: parent });
  }
  return message;
}

/** Adds or removes the caller's reaction (one emoji or a short :name:) on a message. */
export async function react(
  { caller, trx }: Scope,
  notify: ChatNotifier,
  id: string,
  messageId: string,
  input: { emoji: string; on: boolean },
) {
  await asMember(trx, caller.userId, id);
  const current = await messageById(trx, id, messageId);
  if (current.deleted) throw new AppError(409, "deleted", "The message was deleted.");
  if (input.on) {
    await trx("chat_reactions")
      .insert({ org_id: caller.orgId, message_id: messageId, user_id: caller.userId, emoji: input.emoji })
      .onConflict(["message_id", "user_id", "emoji"])
      .ignore();
  } else {
    await trx("chat_reactions")
      .where({ message_id: messageId, user_id: caller.userId, emoji: input.emoji })
      .delete();
  }
  const message = await messageById(trx, id, messageId);
  const audience = await audienceOf(trx, id);
  afterCommit(trx, () =>
    notify(caller.orgId, { type: "message.reactions", channelId: id, audience, message }),
  );
  return message;
}

/** Edits one's own message. */
export async function editMessage(
  { caller, trx }: Scope,
  notify: ChatNotifier,
  id: string,
  messageId: string,
  body: string,
) {
  await asMember(trx, caller.userId, id);
  const current = await messageById(trx, id, messageId);
  if (current.userId !== caller.userId) throw AppError.forbidden("You can edit only your own messages.");
  if (current.deleted) throw new AppError(409, "deleted", "The message was deleted.");
  await trx("chat_messages").where({ id: messageId }).update({ body, edited_at: trx.fn.now() });
  const message = await messageById(trx, id, messageId);
  const audience = await audienceOf(trx, id);
  afterCommit(trx, () => notify(caller.orgId, { type: "message.edited", channelId: id, audience, message }));
  return message;
}

/** Deletes a message (its author, or the channel's owner); the text is gone, a "deleted" mark stays. */
export async function deleteMessage(
  { caller, trx }: Scope,
  notify: ChatNotifier,
  id: string,
  messageId: string,
  config?: Config,
) {
  const ch = await asMember(trx, caller.userId, id);
  const current = await messageById(trx, id, messageId);
  if (current.userId !== caller.userId && ch.member_role !== "owner")
    throw AppError.forbidden("You can delete only your own messages.");
  await trx("chat_messages").where({ id: messageId }).update({ body: "", deleted_at: trx.fn.now() });
  // Its files go too, once the deletion has committed.
  const files = (await trx("chat_attachments").where({ message_id: messageId }).pluck("id")) as string[];
  await trx("chat_attachments").where({ message_id: messageId }).delete();
  if (config && files.length)
    afterCommit(
      trx,
      () => void Promise.all(files.map((f) => rm(attachmentPath(config, caller.orgId, f), { force: true }))),
    );
  const message = await messageById(trx, id, messageId);
  const audience = await audienceOf(trx, id);
  afterCommit(trx, () => notify(caller.orgId, { type: "message.deleted", channelId: id, audience, message }));
}

/** Moves the caller's read position forward (never back). */
export async function markRead({ caller, trx }: Scope, notify: ChatNotifier, id: string, seq: number) {
  const ch = await readable(trx, caller.userId, id);
  if (!ch.member) throw AppError.forbidden("Join the channel first.");
  const target = Math.min(seq, Number(ch.last_seq));
  await trx("chat_members")
    .where({ channel_id: id, user_id: caller.userId })
    .where("last_read_seq", "<", target)
    .update({ last_read_seq: target });
  const audience = await audienceOf(trx, id);
  afterCommit(trx, () =>
    notify(caller.orgId, {
      type: "read",
      channelId: id,
      audience,
      read: { userId: caller.userId, seq: target },
    }),
  );
}

/** Full-text search over the messages the caller can read. */
export async function searchMessages({ caller, trx }: Scope, q: string, limit: number) {
  const rows = await trx("chat_messages as m")
    .leftJoin("users as u", "u.id", "m.user_id")
    .join("chat_channels as c", "c.id", "m.channel_id")
    .leftJoin("chat_members as cm", function () {
      this.on("cm.channel_id", "c.id").andOn("cm.user_id", trx.raw("?", [caller.userId]));
    })
    .where((w) => w.whereNotNull("cm.user_id").orWhere("c.kind", "public"))
    .whereNull("m.deleted_at")
    .whereRaw("m.search @@ websearch_to_tsquery('english', ?)", [q])
    .orderByRaw("ts_rank(m.search, websearch_to_tsquery('english', ?)) desc, m.created_at desc", [q])
    .limit(limit)
    .select(messageColumns(trx));
  return rows.map((r: Record<string, unknown>) => presentMessage(r));
}

/** The channels a user belongs to (the socket's subscription set). */
export async function memberChannels(
  trx: Knex.Transaction,
  userId: string,
): Promise<{ id: string; lastSeq: number }[]> {
  const rows = (await trx("chat_members as m")
    .join("chat_channels as c", "c.id", "m.channel_id")
    .where("m.user_id", userId)
    .select("c.id", "c.last_seq")) as { id: string; last_seq: string }[];
  return rows.map((r) => ({ id: r.id, lastSeq: Number(r.last_seq) }));
}

/** Where chat files live. */
export const chatDir = (config: Config) => config.chat.dir ?? path.join(config.dataDir, "chat");
const attachmentPath = (config: Config, orgId: string, id: string) =>
  path.join(chatDir(config), "files", orgId, id);

/** Types a browser may be told a shared file has; everything else is served as application/octet-stream. */
const SAFE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"]);

/**
 * Posts a message carrying files. Each file was received to a temp file and fsynced (uploads.ts); it is moved
 * into place and fsynced before the message commits, and removed again if the message does not commit.
 */
export async function postFiles(
  scope: Scope,
  notify: ChatNotifier,
  config: Config,
  id: string,
  files: Received[],
  body: string,
) {
  const { caller, trx } = scope;
  await asMember(trx, caller.userId, id);
  const tooLarge = files.find((f) => f.tooLarge);
  if (tooLarge)
    throw new AppError(
      413,
      "file_too_large",
      `${tooLarge.name} is larger than ${formatMegabytes(config.chat.maxFileBytes)}.`,
    );
  const empty = files.find((f) => f.size === 0);
  if (empty) throw new AppError(400, "empty_file", `${empty.name} is empty.`);
  const placed: string[] = [];
  try {
    const message = await postMessage(
      scope,
      notify,
      id,
      body.trim() ? body : files.map((f) => f.name).join(", "),
      undefined,
      async (messageId) => {
        for (const f of files) {
          const detected = (await fileTypeFromFile(f.tmp))?.mime;
          const mime = detected && SAFE_TYPES.has(detected) ? detected : "application/octet-stream";
          const rows = await trx("chat_attachments")
            .insert({
              org_id: caller.orgId,
              channel_id: id,
              message_id: messageId,
              name: f.name,
              mime,
              size_bytes: f.size,
              sha256: f.sha256,
            })
            .returning("id");
          const target = attachmentPath(config, caller.orgId, (rows[0] as { id: string }).id);
          await mkdir(path.dirname(target), { recursive: true });
          await rename(f.tmp, target);
          placed.push(target);
          await fsyncDir(path.dirname(target));
        }
      },
    );
    trx.executionPromise.catch(() => Promise.all(placed.map((p) => rm(p, { force: true }))));
    return message;
  } catch (err) {
    await Promise.all(placed.map((p) => rm(p, { force: true })));
    throw err;
  }
}

/** A shared file the caller may read: its place on disk and how to serve it (404 for anyone else). */
export async function openAttachment(
  { caller, trx }: Scope,
  config: Config,
  channelId: string,
  fileId: string,
) {
  await readable(trx, caller.userId, channelId);
  const row = await trx("chat_attachments as a")
    .join("chat_messages as m", "m.id", "a.message_id")
    .where({ "a.id": fileId, "a.channel_id": channelId })
    .whereNull("m.deleted_at")
    .first("a.id", "a.name", "a.mime", "a.size_bytes");
  if (!row) throw AppError.notFound("No such file.");
  return {
    path: attachmentPath(config, caller.orgId, row.id as string),
    name: row.name as string,
    mime: row.mime as string,
    size: Number(row.size_bytes),
  };
}
