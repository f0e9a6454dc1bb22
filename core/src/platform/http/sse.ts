import { PassThrough } from "node:stream";
import type { Context } from "koa";
import { coalescer } from "../coalesce.js";

/** An open server-sent event stream. */
export interface EventStream {
  /** The response body. */
  stream: PassThrough;
  /** Writes one event (`event: name` when given); `now` writes it (and any held) at once. */
  send: (event: string | null, data: unknown, now?: boolean) => void;
  /** Writes the held events at once (the last tokens of an answer do not wait for its bookkeeping). */
  flush: () => void;
  /** Fires when the client goes away before the stream ended. */
  signal: AbortSignal;
  /** Runs when the stream ends or the client goes away (once). */
  onClose: (fn: () => void) => void;
}

/** How long events are gathered after a write: one frame of a 60 Hz screen. */
const COALESCE_MS = 16;

/**
 * Server-sent events over a Koa response, gathered per COALESCE_MS (see coalescer: one syscall and one
 * client wake-up for a fast model's several tokens; a real model's tokens, tens of milliseconds apart, go
 * the moment they exist). The last events are never held. A comment line every `heartbeatMs` keeps
 * idle streams open through proxies.
 */
export function openEventStream(ctx: Context, heartbeatMs = 15_000): EventStream {
  const stream = new PassThrough();
  const ac = new AbortController();
  ctx.type = "text/event-stream";
  ctx.set({ "Cache-Control": "no-cache", "X-Accel-Buffering": "no" });
  ctx.req.socket.setNoDelay(true);
  const closers: (() => void)[] = [];
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    for (const fn of closers) fn();
  };
  ctx.res.on("close", () => {
    if (!ctx.res.writableFinished) ac.abort();
    close();
  });
  // The client may have left while the request was authenticated and admitted.
  if (ctx.res.destroyed) ac.abort();
  const held = coalescer((text) => {
    if (!stream.writableEnded) stream.write(text);
  }, COALESCE_MS);
  const heartbeat = setInterval(() => {
    if (!stream.writableEnded) stream.write(": keep-alive\n\n");
  }, heartbeatMs);
  heartbeat.unref();
  stream.on("finish", () => {
    held.flush();
    close();
  });
  const end = stream.end.bind(stream);
  stream.end = ((...args: Parameters<PassThrough["end"]>) => {
    held.flush();
    return end(...args);
  }) as PassThrough["end"];
  return {
    stream,
    signal: ac.signal,
    onClose: (fn) => void closers.push(fn),
    flush: held.flush,
    send: (event, data, now = false) => {
      if (stream.writableEnded) return;
      held.push(
        `${event ? `event: ${event}\n` : ""}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`,
      );
      if (now) held.flush();
    },
  };
}
