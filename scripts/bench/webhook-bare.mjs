// The baseline of bench:gateway: a bare Koa server whose one route reads the raw body and checks the generic
// webhook signature (HMAC-SHA256 over "timestamp.body", constant-time compare), then answers 202. No storage.
import { createHmac, timingSafeEqual } from "node:crypto";
import http from "node:http";
import Koa from "koa";

const secret = process.env.BENCH_SECRET ?? "";
const app = new Koa();
app.use(async (ctx) => {
  const chunks = [];
  for await (const c of ctx.req) chunks.push(c);
  const body = Buffer.concat(chunks);
  const ts = ctx.get("x-webhook-timestamp");
  const sig = ctx.get("x-webhook-signature");
  const expected = `v1=${createHmac("sha256", secret).update(`${ts}.`).update(body).digest("hex")}`;
  const ok = sig.length === expected.length && timingSafeEqual(Buffer.from(sig), Buffer.from(expected));
  ctx.status = ok ? 202 : 401;
  ctx.body = ok ? { data: { ok: true } } : { error: "bad signature" };
});
const server = http.createServer(app.callback());
server.listen(0, "127.0.0.1", () => process.send?.({ port: server.address().port }));
process.on("message", (m) => {
  if (m === "stop") server.close(() => process.exit(0));
});
