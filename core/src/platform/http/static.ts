import { existsSync } from "node:fs";
import path from "node:path";
import type { Context, Next } from "koa";
import { send } from "@koa/send";

/** Serves the built UI: hashed assets cached forever, every other non-API GET falls back to the SPA shell. */
export function serveUi(root: string) {
  const fallback = existsSync(path.join(root, "index.html")) ? "index.html" : undefined;
  return async (ctx: Context, next: Next) => {
    if ((ctx.method !== "GET" && ctx.method !== "HEAD") || ctx.path.startsWith("/api/")) return next();
    const immutable = ctx.path.startsWith("/_app/immutable/");
    try {
      await send(ctx, ctx.path, {
        root,
        immutable,
        maxage: immutable ? 365 * 24 * 3600 * 1000 : 0,
        index: "index.html",
      });
      return;
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status !== 404 && status !== 400) throw err;
    }
    // Unknown files under /_app are real 404s; page routes get the client-side router.
    if (!fallback || ctx.path.startsWith("/_app/") || path.extname(ctx.path)) return next();
    ctx.set("Cache-Control", "no-cache");
    await send(ctx, fallback, { root });
  };
}
