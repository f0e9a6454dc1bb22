import { ApiError } from "$lib/api/client";
import type { components } from "$lib/api/schema";

/** A chat message as the API sends it. */
export type ChatMessage = components["schemas"]["ChatMessage"];
/** A channel or direct conversation. */
export type ChatChannel = components["schemas"]["ChatChannel"];

/** What the server pushes over /ws. */
export type ChatEvent =
  | { type: "ready"; channels: { id: string; lastSeq: number }[]; online: string[] }
  | { type: "presence"; online: string[] }
  | {
      type: "message" | "message.edited" | "message.deleted" | "message.reactions";
      channelId: string;
      message: ChatMessage;
    }
  | { type: "read"; channelId: string; read: { userId: string; seq: number } }
  | { type: "typing"; channelId: string; typing: { userId: string } }
  | { type: "channel"; channelId: string }
  | { type: "gap"; channelId: string; afterSeq: number }
  | { type: "resumed" | "pong" }
  | { type: "posted"; ref: string | null; message: ChatMessage }
  | { type: "error"; code: string; message: string; ref?: string | null };

/**
 * The live connection: reconnects with backoff and, after each reconnect, asks for what it missed (the last
 * sequence number seen per channel), so the UI gets every message once, in order, whatever node it lands on.
 */
export class ChatSocket {
  private ws: WebSocket | null = null;
  private stopped = false;
  private attempts = 0;
  /** The highest message number seen per channel: the resume cursors. */
  readonly seen = new Map<string, number>();
  /**
   * Channels with a resume asked for after a gap, until the server answers "resumed": the cursor asked from,
   * and the highest message number that came meanwhile (not shown: the resume brings it, or the next one does).
   */
  private readonly refilling = new Map<string, { from: number; highest: number }>();
  connected = false;
  private nextRef = 0;
  private readonly waiting = new Map<
    string,
    { resolve: (m: ChatMessage) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> }
  >();

  constructor(
    private readonly onEvent: (e: ChatEvent) => void,
    private readonly onState: (connected: boolean) => void,
  ) {}

  /** Opens the socket (same origin; the session cookie authenticates it). */
  start(): void {
    this.stopped = false;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (m) => {
      const e = JSON.parse(String(m.data)) as ChatEvent;
      if (e.type === "ready") {
        this.attempts = 0;
        this.setConnected(true);
        // What arrived while away: every channel the client has seen something in.
        if (this.seen.size) this.send({ type: "resume", cursors: Object.fromEntries(this.seen) });
      }
      if (e.type === "posted" || (e.type === "error" && e.ref)) {
        const w = this.waiting.get(e.ref ?? "");
        if (w) {
          this.waiting.delete(e.ref ?? "");
          clearTimeout(w.timer);
          if (e.type === "posted") w.resolve(e.message);
          else w.reject(new ApiError(400, e.code, e.message));
        }
        return;
      }
      if (e.type === "resumed") this.refilled();
      if (e.type === "message") {
        const last = this.seen.get(e.channelId);
        if (last !== undefined && e.message.seq <= last) return; // already shown (live and resumed can overlap)
        if (last !== undefined && e.message.seq > last + 1) {
          // One went missing on the way: ask for everything after the last one seen, which brings them in order.
          if (!this.refilling.has(e.channelId)) this.refill({ [e.channelId]: last });
          const waiting = this.refilling.get(e.channelId);
          if (waiting) waiting.highest = Math.max(waiting.highest, e.message.seq);
          return;
        }
        this.seen.set(e.channelId, e.message.seq);
      }
      this.onEvent(e);
    };
    ws.onclose = () => {
      this.setConnected(false);
      this.refilling.clear();
      // A post in flight may or may not have been stored: it shows after the resume if it was.
      for (const [ref, w] of this.waiting) {
        clearTimeout(w.timer);
        w.reject(
          new ApiError(
            503,
            "connection_lost",
            "The connection dropped while sending; check that the message arrived.",
          ),
        );
        this.waiting.delete(ref);
      }
      if (this.stopped) return;
      const delay = Math.min(10_000, 250 * 2 ** this.attempts++) * (0.5 + Math.random() / 2);
      setTimeout(() => !this.stopped && this.start(), delay);
    };
  }

  private refill(cursors: Record<string, number>): void {
    for (const [id, from] of Object.entries(cursors)) this.refilling.set(id, { from, highest: 0 });
    this.send({ type: "resume", cursors });
  }

  /**
   * A resume was answered: where a message came meanwhile that it did not bring, ask again from there, as long
   * as the last one brought something (a channel one has just left brings nothing: no asking forever).
   */
  private refilled(): void {
    const again: Record<string, number> = {};
    for (const [id, { from, highest }] of this.refilling) {
      const last = this.seen.get(id) ?? 0;
      if (highest > last && last > from) again[id] = last;
    }
    this.refilling.clear();
    if (Object.keys(again).length) this.refill(again);
  }

  private setConnected(v: boolean): void {
    this.connected = v;
    this.onState(v);
  }

  /** Sends a frame when connected (typing indicators are best effort). */
  send(frame: unknown): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  /** Whether a post can go over the socket now (else over HTTP). */
  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** Posts a message over the socket; resolves with the stored message (the server answers "posted"). */
  post(channelId: string, body: string, parentId?: string): Promise<ChatMessage> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("not connected"));
    const ref = `p${++this.nextRef}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(ref);
        reject(new ApiError(504, "timeout", "Sending took too long; check that the message arrived."));
      }, 15_000);
      this.waiting.set(ref, { resolve, reject, timer });
      ws.send(JSON.stringify({ type: "post", channelId, body, ...(parentId ? { parentId } : {}), ref }));
    });
  }

  /** Closes for good (leaving the page). */
  stop(): void {
    this.stopped = true;
    this.ws?.close();
  }
}
