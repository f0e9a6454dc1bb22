// Live chat over WebSocket (/ws): authenticated like the API (session cookie with an Origin check, or an API
// key / token for bots), fed by ephemeral NATS messages every node receives, so a message posted on one node
// reaches sockets on all of them. Messages live in PostgreSQL first: a client that reconnects (to any node)
// sends the last sequence number it saw per channel and gets exactly what it missed.
import { randomUUID } from "node:crypto";
import http from "node:http";
import type { Duplex } from "node:stream";
import type Koa from "koa";
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
  frame: string;
}

interface Client {
  ws: WebSocket;
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
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME });
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
      this.dispatch(payload as Fanned, Buffer.from((payload as Fanned).frame)),
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
      frame: JSON.stringify(visible),
    });

  private fanOut(event: Fanned): void {
    const frame = Buffer.from(event.frame);
    setImmediate(() => this.dispatch(event, frame));
    this.deps.bus.broadcast(chatSubject(this.deps.bus.prefix, event.orgId), event);
  }

  /** Number of open sockets on this node. */
  get size(): number {
    return this.clients.size;
  }

  private expectedOrigin(req: http.IncomingMessage): string {
    if (this.deps.config.auth.publicUrl) return new URL(this.deps.config.auth.publicUrl).origin;
    const secure = (req.socket as { encrypted?: boolean }).encrypted === true;
    return `${secure ? "https" : "http"}://${req.headers.host ?? ""}`;
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
      // Browsers always send Origin on WebSocket handshakes; a page of another site is refused here.
      if (cookieAuth && req.headers.origin !== this.expectedOrigin(req))
        return refuse(403, "This connection comes from another site and was refused.");
      const res = new http.ServerResponse(req);
      const ctx = this.deps.app.createContext(req, res);
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
    for (const c of this.clients) if (c.orgId === orgId) this.sendText(c, text);
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

  private send(client: Client, payload: unknown): void {
    this.sendText(client, JSON.stringify(payload));
  }

  private sendText(client: Client, text: string | Buffer): void {
    if (client.ws.readyState !== client.ws.OPEN) return;
    if (client.ws.bufferedAmount > MAX_BUFFERED) {
      // Too slow to keep up: memory stays bounded; the client reconnects and resumes from its cursors.
      client.ws.close(4008, "too slow");
      setTimeout(() => client.ws.terminate(), 1000).unref();
      return;
    }
    client.ws.send(text, { binary: false });
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

  /** Sends an event's frame (encoded once) to the sockets here that may receive it. */
  private dispatch(event: Fanned, frame: Buffer) {
    if (event.audience) {
      for (const userId of event.audience) {
        for (const c of this.byUser.get(userId) ?? []) {
          if (c.orgId !== event.orgId) continue;
          // Membership changed: the client's set follows, so later messages reach it (or stop).
          if (event.type === "channel") {
            c.channels.add(event.channelId);
            this.index(c, true, [event.channelId]);
          }
          this.sendText(c, frame);
        }
      }
      return;
    }
    for (const c of this.byChannel.get(event.channelId) ?? [])
      if (c.orgId === event.orgId && c.userId !== event.typist) this.sendText(c, frame);
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
    clearTimeout(this.announceTimer);
    // Tell the other nodes at once that nobody is here any more.
    this.deps.bus.broadcast(presenceSubject(this.deps.bus.prefix), { node: this.node, orgs: {} });
    this.stopListening();
    this.stopPresence();
    for (const c of this.clients) c.ws.close(1012, "server restarting");
    this.wss.close();
  }
}
