import type { Context } from "koa";

/** Content-Security-Policy of HTML pages: same origin only, no inline scripts, no framing. */
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

/** Content-Security-Policy of every other response (JSON, files): nothing may load, nothing may frame it. */
export const API_CSP = "default-src 'none'; frame-ancestors 'none'";

const COMMON: [string, string][] = [
  ["X-Content-Type-Options", "nosniff"],
  ["Cross-Origin-Resource-Policy", "same-origin"],
];
const DOCUMENT: [string, string][] = [
  ["Content-Security-Policy", CSP],
  ["Referrer-Policy", "no-referrer"],
  ["X-Frame-Options", "DENY"],
  ["Cross-Origin-Opener-Policy", "same-origin"],
  ["Permissions-Policy", "camera=(), microphone=(), geolocation=()"],
];

/**
 * Sets security headers once the response type is known: the full document set on HTML, a short
 * strict set elsewhere (OWASP REST guidance; document-only headers cost every API call for nothing).
 */
export function applySecurityHeaders(ctx: Context): void {
  const res = ctx.res;
  if (res.headersSent) return;
  for (const [k, v] of COMMON) res.setHeader(k, v);
  const type = res.getHeader("Content-Type");
  if (typeof type === "string" && type.startsWith("text/html"))
    for (const [k, v] of DOCUMENT) res.setHeader(k, v);
  // A response that set its own policy keeps it (downloads: a sandbox, so a file never runs as our page).
  else if (!res.hasHeader("Content-Security-Policy")) res.setHeader("Content-Security-Policy", API_CSP);
  // ctx.secure is the socket's TLS, or the trusted proxies' X-Forwarded-Proto (platform/http/client.ts).
  if (ctx.secure) {
    res.setHeader("Strict-Transport-Security", "max-age=31536000");
  }
}
