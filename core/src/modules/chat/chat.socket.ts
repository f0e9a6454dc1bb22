// Live chat over WebSocket (/ws): authenticated like the API (session cookie with an Origin check, or an API
// key / token for bots), fed by ephemeral NATS messages every node receives, so a message posted on one node
// reaches sockets on all of them. Messages live in PostgreSQL first: a client that reconnects (to any node)
// sends the last sequence number it saw per channel and gets exactly what it missed.
import { randomUUID } from "node:crypto";
import http from "node:http";
import type { Duplex } from "node:stream";
import type Koa from "koa";
import type { Context } from "koa";
import type { Knex } from "knex";
import { WebSocketServer, type WebSocket } from "ws";
import { z } from "zod";
import type { Config } from "../../config/schema.js";
import type { Caller } from "../../platform/auth/caller.js";
import { can, requirePermission } from "../../platform/auth/caller.js";
import type { Bus } from "../../platform/bus/bus.js";
import { withOrg } from "../../platform/db/tenant.js";
import type { Logger } from "../../platform/log.js";
import type { Authenticator } from "../identity/auth.js";
import { AppError } from "../../platform/http/errors.js";
import type { AfterPost } from "./chat.assistant.js";
import { messageBody } from "./chat.schemas.js";
import { listMessages, memberChannels, postMessage, postQuick, type ChatNotifier } from "./chat.service.js";

/** The NATS subject of one organization's chat events. */
export const chatSubject = (prefix: string, orgId: string) => `${prefix}.chat.${orgId}`;

const MAX_FRAME = 16 * 1024;
/** A socket whose unsent data grows past this is too slow: it is closed and will resume on reconnect. */
const MAX_BUFFERED = 1024 * 1024;
const FRAMES_PER_10S = 100;
const RESUME_LIMIT = 200;
const HEARTBEAT_MS = 25_000;
const REVALIDATE_MS = 60_000;
/** Each node announces who is connected to it this often (and at once on a change); silence ends it. */
const PRESENCE_MS = 15_000;
const PRESENCE_EXPIRY_MS = 40_000;
/**
 * How long a message waits for the one numbered before it. Posts to one channel that commit close together can be
 * announced out of order (PostgreSQL releases the channel's lock before it answers the commit, so the next post
 * can commit and be announced first; two nodes publish independently), and clients must see them in order.
 * Past this the missing one is taken as lost on the way: clients notice the gap and fetch it by resume.
 */
const HOLD_MS = 250;
/** Channels whose order is kept, at most (the least recently started are forgotten first). */
const MAX_ORDERED = 10_000;

/**
 * One unmasked text frame (RFC 6455 section 5.2: FIN, opcode 1, the payload length in 7, 16 or 64 bits), header
 * and payload in one buffer. An event is framed once and the same bytes are written to each recipient's socket:
 * one write of one buffer per recipient, where ws.send would frame it again for each (bench:chat). Every event
 * the hub sends goes this way; the frames ws itself writes to the same socket (pings, close) are whole writes
 * too, so none interleave.
 */
export function textFrame(text: string): Buffer {
  const n = Buffer.byteLength(text);
  const head = n < 126 ? 2 : n < 65_536 ? 4 : 10;
  const out = Buffer.allocUnsafe(head + n);
  out[0] = 0x81;
  if (n < 126) out[1] = n;
  else if (n < 65_536) {
    out[1] = 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 127;
    out.writeBigUInt64BE(BigInt(n), 2);
  }
  out.write(text, head);
  return out;
}

/** The NATS subject of presence announcements (every node, every organization). */
const presenceSubject = (prefix: string) => `${prefix}.chatpresence`;

const frameSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("ping") }),
  z.strictObject({
    type: z.literal("resume"),
    cursors: z.record(z.uuid(), z.number().int().min(0)).refine((c) => Object.keys(c).length <= 1000),
  }),
  z.strictObject({ type: z.literal("typing"), channelId: z.uuid() }),
  z.strictObject({
    type: z.literal("post"),
    channelId: z.uuid(),
    body: messageBody,
    parentId: z.uuid().optional(),
    /** Echoed in the answer, so the client knows which post it is. */
    ref: z.string().max(64).optional(),
  }),
]);

/**
 * An event as the nodes pass it around: who may receive it (an audience, or the channel's live members), and the
 * frame sockets get, serialized once where the event happened.
 */
interface Fanned {
  orgId: string;
  type: string;
  channelId: string;
  audience?: string[];
  /** Typing notices skip the typist. */
  typist?: string;
  /** A new message's number in its channel: this node sends a channel's messages in this order. */
  seq?: number;
  frame: string;
}

/** Per channel: the last message number sent to this node's sockets, and later ones waiting for a gap to close. */
interface ChannelOrder {
  last: number;
  held: Map<number, [Fanned, Buffer]>;
  /** The channel's other events (edits, reactions, receipts, typing) that came while messages were held. */
  after: [Fanned, Buffer][];
  timer?: NodeJS.Timeout;
}

interface Client {
  ws: WebSocket;
  /** The socket under `ws`, for frames made once per event (see textFrame). */
  socket: Duplex;
  orgId: string;
  userId: string;
  name: string;
  channels: Set<string>;
  alive: boolean;
  frames: number[];
  load: (trx: Knex.Transaction) => Promise<Caller>;
  /** The caller as last loaded; posts reuse it until the next revalidation. */
  caller?: Caller;
}

/** Accepts chat sockets on an HTTP server and fans events out to them. */
export class ChatHub {
  // No permessage-deflate: events go out as frames made once (textFrame), the same bytes to every socket.
  private readonly wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_FRAME,
    perMessageDeflate: false,
  });
  private readonly clients = new Set<Client>();
  /** The same sockets by person, so a message visits its audience instead of every socket. */
  private readonly byUser = new Map<string, Set<Client>>();
  /** And by channel, so a channel's message visits that channel's sockets, not every socket. */
  private readonly byChannel = new Map<string, Set<Client>>();
  private readonly stopListening: () => void;
  private readonly stopPresence: () => void;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly node = randomUUID();
  /** Per organization, the people connected to each node (this one included), with when we last heard. */
  private readonly presence = new Map<string, Map<string, { users: Set<string>; at: number }>>();
  private readonly lastOnline = new Map<string, string>();
  private announceTimer: NodeJS.Timeout | undefined;
  private readonly order = new Map<string, ChannelOrder>();
  /** Runs after a post over the socket is stored (the @assistant hook, as for posts over HTTP). */
  afterPost?: AfterPost;

  constructor(
    private readonly deps: {
      knex: Knex;
      bus: Bus;
      config: Config;
      authenticator: Authenticator;
      app: Koa;
      log: Logger;
    },
  ) {
    // Other nodes' events; this node's own are delivered here directly (see notify).
    this.stopListening = deps.bus.onBroadcast(`${deps.bus.prefix}.chat.*`, (payload) =>
      this.dispatch(payload as Fanned, textFrame((payload as Fanned).frame)),
    );
    this.stopPresence = deps.bus.onBroadcast(presenceSubject(deps.bus.prefix), (payload) => {
      const p = payload as { node: string; orgs: Record<string, string[]> };
      if (!p || typeof p.node !== "string" || p.node === this.node) return;
      const touched = new Set<string>();
      for (const [orgId, nodes] of this.presence) if (nodes.delete(p.node)) touched.add(orgId);
      for (const [orgId, users] of Object.entries(p.orgs ?? {})) {
        if (!this.presence.has(orgId)) this.presence.set(orgId, new Map());
        this.presence.get(orgId)?.set(p.node, { users: new Set(users), at: Date.now() });
        touched.add(orgId);
      }
      for (const orgId of touched) this.pushPresence(orgId);
    });
    const announce = setInterval(() => this.announce(), PRESENCE_MS);
    announce.unref();
    this.timers.push(announce);
    const heartbeat = setInterval(() => {
      for (const c of this.clients) {
        if (!c.alive) {
          c.ws.terminate();
          continue;
        }
        c.alive = false;
        c.ws.ping();
      }
    }, HEARTBEAT_MS);
    // A session that ends (signed out, deactivated, directory sync) closes its sockets within a minute.
    const revalidate = setInterval(() => void this.revalidate(), REVALIDATE_MS);
    heartbeat.unref();
    revalidate.unref();
    this.timers.push(heartbeat, revalidate);
  }

  /**
   * The notifier services use: delivers to this node's sockets without a round trip through NATS (right after
   * the current turn, so a poster hears "posted" first), and publishes to every other node.
   */
  readonly notify: ChatNotifier = (orgId, { audience, ...visible }) =>
    this.fanOut({
      orgId,
      type: visible.type,
      channelId: visible.channelId,
      audience,
      ...(visible.type === "message" && visible.message ? { seq: visible.message.seq } : {}),
      frame: JSON.stringify(visible),
    });

  private fanOut(event: Fanned): void {
    const frame = textFrame(event.frame);
    setImmediate(() => this.dispatch(event, frame));
    this.deps.bus.broadcast(chatSubject(this.deps.bus.prefix, event.orgId), event);
  }

  /** Number of open sockets on this node. */
  get size(): number {
    return this.clients.size;
  }

  /** The origin pages of this server have: the public URL, else the scheme the trusted proxies vouch for. */
  private expectedOrigin(ctx: Context): string {
    if (this.deps.config.auth.publicUrl) return new URL(this.deps.config.auth.publicUrl).origin;
    return `${ctx.protocol}://${ctx.host}`;
  }

  /** The server's `upgrade` handler for /ws. */
  async handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const refuse = (status: number, text: string) => {
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n` +
          JSON.stringify({
            error: { code: status === 403 ? "forbidden" : "unauthenticated", message: text },
          }),
      );
    };
    try {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname !== "/ws") return refuse(404, "Not found.");
      const cookieAuth = !req.headers.authorization && !req.headers["x-api-key"];
      const res = new http.ServerResponse(req);
      const ctx = this.deps.app.createContext(req, res);
      // Browsers always send Origin on WebSocket handshakes; a page of another site is refused here.
      if (cookieAuth && req.headers.origin !== this.expectedOrigin(ctx))
        return refuse(403, "This connection comes from another site and was refused.");
      const identity = await this.deps.authenticator.identify(ctx);
      if (!identity) return refuse(401, "Sign in first.");
      // load() enters the organization (one statement with loading the caller), as in every signed-in route.
      const { caller, channels } = await this.deps.knex.transaction(async (trx) => {
        const c = await identity.load(trx);
        return { caller: c, channels: can(c, "chat.read") ? await memberChannels(trx, c.userId) : null };
      });
      if (!channels) return refuse(403, "This needs the chat.read permission.");
      this.wss.handleUpgrade(req, socket, head, (ws) =>
        this.accept(
          ws,
          {
            ws,
            socket,
            orgId: caller.orgId,
            userId: caller.userId,
            name: caller.email,
            channels: new Set(channels.map((c) => c.id)),
            alive: true,
            frames: [],
            load: identity.load,
            caller,
          },
          channels,
        ),
      );
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status === 401 || status === 403) return refuse(status, (err as Error).message);
      this.deps.log.warn({ err }, "chat socket handshake failed");
      refuse(500, "Internal error.");
    }
  }

  /** Puts a socket into (or takes it out of) the channel index, for every channel it is in or `ids`. */
  private index(client: Client, add: boolean, ids: Iterable<string> = client.channels): void {
    for (const id of ids) {
      let set = this.byChannel.get(id);
      if (add) {
        if (!set) this.byChannel.set(id, (set = new Set()));
        set.add(client);
      } else if (set) {
        set.delete(client);
        if (!set.size) this.byChannel.delete(id);
      }
    }
  }

  private accept(ws: WebSocket, client: Client, channels: { id: string; lastSeq: number }[]): void {
    // A channel first heard of here starts after its last message as of the handshake.
    for (const ch of channels) if (!this.order.has(ch.id)) this.orderOf(ch.id, ch.lastSeq);
    this.clients.add(client);
    this.index(client, true);
    const mine = this.byUser.get(client.userId) ?? new Set<Client>();
    mine.add(client);
    this.byUser.set(client.userId, mine);
    ws.on("pong", () => (client.alive = true));
    ws.on("close", () => {
      this.clients.delete(client);
      this.index(client, false);
      mine.delete(client);
      if (!mine.size && this.byUser.get(client.userId) === mine) this.byUser.delete(client.userId);
      this.localChanged();
    });
    ws.on("error", () => ws.terminate());
    ws.on("message", (data, isBinary) => void this.onFrame(client, data.toString(), isBinary));
    this.localChanged();
    this.send(client, { type: "ready", channels, online: this.online(client.orgId) });
  }

  /** Who in an organization has a socket on any node (announcements older than the expiry are ignored). */
  online(orgId: string): string[] {
    const users = new Set<string>();
    for (const c of this.clients) if (c.orgId === orgId) users.add(c.userId);
    const now = Date.now();
    for (const [node, entry] of this.presence.get(orgId) ?? []) {
      if (now - entry.at > PRESENCE_EXPIRY_MS) this.presence.get(orgId)?.delete(node);
      else for (const u of entry.users) users.add(u);
    }
    return [...users].sort();
  }

  /** Sends the organization's online list to its sockets here, when it changed. */
  private pushPresence(orgId: string): void {
    const online = this.online(orgId);
    const key = online.join(",");
    if (this.lastOnline.get(orgId) === key) return;
    this.lastOnline.set(orgId, key);
    const text = JSON.stringify({ type: "presence", online });
    const frame = textFrame(text);
    for (const c of this.clients) if (c.orgId === orgId) this.sendFrame(c, frame);
  }

  /**
   * Colleagues here and on other nodes hear of sockets that came and went within 200 ms, in one message
   * however many there were: when hundreds reconnect at once (a node went away), each colleague gets one
   * presence frame, not one per newcomer (which grew as N² frames of a growing list). A newcomer has the list
   * in its "ready" frame.
   */
  private localChanged(): void {
    this.announceTimer ??= setTimeout(() => {
      this.announceTimer = undefined;
      this.announce();
    }, 200);
  }

  private announce(): void {
    const users = new Map<string, Set<string>>();
    for (const c of this.clients) {
      const set = users.get(c.orgId) ?? new Set<string>();
      set.add(c.userId);
      users.set(c.orgId, set);
    }
    const orgs = Object.fromEntries([...users].map(([org, set]) => [org, [...set]]));
    this.deps.bus.broadcast(presenceSubject(this.deps.bus.prefix), { node: this.node, orgs });
    for (const orgId of new Set([...users.keys(), ...this.presence.keys()])) this.pushPresence(orgId);
  }

  /** Sends one event to one client (the same path as fan-out: one frame, one write). */
  private send(client: Client, payload: unknown): void {
    this.sendFrame(client, textFrame(JSON.stringify(payload)));
  }

  /** Writes a frame made by textFrame, as it is, to the client's socket. */
  private sendFrame(client: Client, frame: Buffer): void {
    if (this.writable(client)) client.socket.write(frame);
  }

  /** Open and keeping up; a client too slow to keep up is closed (memory stays bounded) and resumes later. */
  private writable(client: Client): boolean {
    const ws = client.ws;
    if (ws.readyState !== ws.OPEN) return false;
    if (ws.bufferedAmount <= MAX_BUFFERED) return true;
    ws.close(4008, "too slow");
    setTimeout(() => ws.terminate(), 1000).unref();
    return false;
  }

  private async onFrame(client: Client, text: string, binary: boolean): Promise<void> {
    const now = Date.now();
    client.frames = client.frames.filter((t) => now - t < 10_000);
    client.frames.push(now);
    if (client.frames.length > FRAMES_PER_10S) {
      this.send(client, { type: "error", code: "rate_limited", message: "Too many frames; slow down." });
      client.ws.close(1008, "rate limited");
      return;
    }
    let frame: z.infer<typeof frameSchema>;
    try {
      if (binary) throw new Error("binary");
      frame = frameSchema.parse(JSON.parse(text));
    } catch {
      this.send(client, {
        type: "error",
        code: "bad_frame",
        message: "Frames are JSON: ping, resume, typing or post.",
      });
      return;
    }
    if (frame.type === "ping") return this.send(client, { type: "pong" });
    if (frame.type === "post") return this.post(client, frame);
    if (frame.type === "typing") {
      if (!client.channels.has(frame.channelId)) return;
      const typing = { type: "typing", channelId: frame.channelId, typing: { userId: client.userId } };
      this.fanOut({ orgId: client.orgId, ...typing, typist: client.userId, frame: JSON.stringify(typing) });
      return;
    }
    // resume: what each channel received after the client's cursor, in order.
    try {
      await this.deps.knex.transaction(async (trx) => {
        const caller = await client.load(trx); // enters the organization
        for (const [channelId, seq] of Object.entries(frame.cursors)) {
          if (!client.channels.has(channelId)) continue;
          const messages = await listMessages({ caller, trx }, channelId, {
            afterSeq: seq,
            limit: RESUME_LIMIT + 1,
          });
          for (const m of messages.slice(0, RESUME_LIMIT))
            this.send(client, { type: "message", channelId, message: m });
          // More than a socket should carry at once: the client pages the rest in over HTTP.
          if (messages.length > RESUME_LIMIT)
            this.send(client, { type: "gap", channelId, afterSeq: messages[RESUME_LIMIT - 1]?.seq });
        }
      });
      this.send(client, { type: "resumed" });
    } catch {
      client.ws.close(4001, "session ended");
    }
  }

  /**
   * A message posted over the socket: the same checks and storage as over HTTP, without a request per
   * message. The socket's caller is reused until the next revalidation (at most a minute), as its channel
   * list is.
   */
  private async post(
    client: Client,
    frame: { channelId: string; body: string; parentId?: string; ref?: string },
  ): Promise<void> {
    const ref = frame.ref ?? null;
    try {
      // Plain text from a socket whose caller is known: one statement. Mentions (notifications, @assistant)
      // take the transactional path.
      if (client.caller && !frame.body.includes("@")) {
        requirePermission(client.caller, "chat.write");
        const message = await postQuick(
          this.deps.knex,
          client.caller,
          this.notify,
          frame.channelId,
          frame.body,
          frame.parentId,
        );
        return this.send(client, { type: "posted", ref, message });
      }
      const message = await withOrg(this.deps.knex, client.orgId, async (trx) => {
        client.caller ??= await client.load(trx);
        const caller = client.caller;
        requirePermission(caller, "chat.write");
        const m = await postMessage(
          { caller, trx },
          this.notify,
          frame.channelId,
          frame.body,
          frame.parentId,
        );
        this.afterPost?.({ caller, trx }, m);
        return m;
      });
      this.send(client, { type: "posted", ref, message });
    } catch (err) {
      const known = err instanceof AppError && err.status < 500;
      if (!known) this.deps.log.error({ err }, "chat post over the socket failed");
      const status = (err as { status?: number }).status;
      if (status === 401) return client.ws.close(4001, "session ended");
      this.send(client, {
        type: "error",
        ref,
        code: known ? err.code : "internal",
        message: known ? err.message : "The message could not be posted.",
      });
    }
  }

  /** Sends an event to this node's sockets; a channel's new messages in the order of their numbers. */
  private dispatch(event: Fanned, frame: Buffer) {
    const seq = event.seq;
    if (typeof seq !== "number") {
      // Behind the held messages, so that an edit never reaches a client before the message it edits.
      const o = this.order.get(event.channelId);
      if (o?.held.size) o.after.push([event, frame]);
      else this.deliver(event, frame);
      return;
    }
    const o = this.order.get(event.channelId) ?? this.orderOf(event.channelId, seq - 1);
    if (seq > o.last + 1) {
      o.held.set(seq, [event, frame]);
      o.timer ??= setTimeout(() => this.giveUpWaiting(o), HOLD_MS);
      return;
    }
    // The next one (or one sent already, or late after a given-up wait: clients drop or place it by number).
    this.deliver(event, frame);
    if (seq === o.last + 1) {
      o.last = seq;
      this.drain(o);
    }
  }

  private orderOf(channelId: string, last: number): ChannelOrder {
    if (this.order.size >= MAX_ORDERED) {
      for (const [id, o] of this.order) {
        if (o.held.size) continue;
        this.order.delete(id);
        break;
      }
    }
    const o: ChannelOrder = { last, held: new Map(), after: [] };
    this.order.set(channelId, o);
    return o;
  }

  /** Sends the held messages that follow on from the last one sent. */
  private drain(o: ChannelOrder): void {
    for (let next = o.held.get(o.last + 1); next; next = o.held.get(o.last + 1)) {
      o.held.delete(++o.last);
      this.deliver(...next);
    }
    if (o.held.size) return;
    if (o.timer) {
      clearTimeout(o.timer);
      o.timer = undefined;
    }
    if (o.after.length) for (const next of o.after.splice(0)) this.deliver(...next);
  }

  /** The missing message did not come in time: send what waited, in order, from the next one held. */
  private giveUpWaiting(o: ChannelOrder): void {
    o.timer = undefined;
    if (!o.held.size) return;
    o.last = Math.min(...o.held.keys()) - 1;
    this.drain(o);
    if (o.held.size) o.timer = setTimeout(() => this.giveUpWaiting(o), HOLD_MS);
  }

  /** Sends an event's frame (made once) to the sockets here that may receive it. */
  private deliver(event: Fanned, frame: Buffer) {
    if (event.audience) {
      for (const userId of event.audience) {
        for (const c of this.byUser.get(userId) ?? []) {
          if (c.orgId !== event.orgId) continue;
          // Membership changed: the client's set follows, so later messages reach it (or stop).
          if (event.type === "channel") {
            c.channels.add(event.channelId);
            this.index(c, true, [event.channelId]);
          }
          this.sendFrame(c, frame);
        }
      }
      return;
    }
    for (const c of this.byChannel.get(event.channelId) ?? [])
      if (c.orgId === event.orgId && c.userId !== event.typist) this.sendFrame(c, frame);
  }

  private async revalidate(): Promise<void> {
    for (const c of [...this.clients]) {
      try {
        const channels = await this.deps.knex.transaction(async (trx) => {
          const caller = await c.load(trx); // enters the organization
          if (!can(caller, "chat.read")) throw new Error("no permission");
          c.caller = caller;
          return memberChannels(trx, caller.userId);
        });
        // A socket that closed meanwhile stays out of the index.
        if (!this.clients.has(c)) continue;
        this.index(c, false);
        c.channels = new Set(channels.map((x) => x.id));
        this.index(c, true);
      } catch {
        c.ws.close(4001, "session ended");
      }
    }
  }

  /** Closes every socket (shutdown: clients reconnect to another node) and stops listening. */
  close(): void {
    for (const t of this.timers) clearInterval(t);
    for (const o of this.order.values()) clearTimeout(o.timer);
    clearTimeout(this.announceTimer);
    // Tell the other nodes at once that nobody is here any more.
    this.deps.bus.broadcast(presenceSubject(this.deps.bus.prefix), { node: this.node, orgs: {} });
    this.stopListening();
    this.stopPresence();
    for (const c of this.clients) c.ws.close(1012, "server restarting");
    this.wss.close();
  }
}
