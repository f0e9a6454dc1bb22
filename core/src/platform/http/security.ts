import type { Context, Next } from "koa";
import { randomUUID } from "node:crypto";

/** Content-Security-Policy for every response: same origin only, no inline scripts, no framing. */
export const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  // Style attributes only (SvelteKit's route announcer uses one); they run no script. <style> elements stay blocked.
  "style-src-attr 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Sets the security headers on every response. */
export async function securityHeaders(ctx: Context, next: Next) {
  ctx.set({
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
  });
  if (ctx.secure) ctx.set("Strict-Transport-Security", "max-age=31536000");
  await next();
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,100}$/;

/** Gives each request an id (a safe incoming X-Request-Id is kept) and echoes it in the response. */
export async function requestId(ctx: Context, next: Next) {
  const incoming = ctx.get("x-request-id");
  const id = REQUEST_ID.test(incoming) ? incoming : randomUUID();
  ctx.state.requestId = id;
  ctx.set("X-Request-Id", id);
  await next();
}
