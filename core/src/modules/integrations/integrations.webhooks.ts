// Inbound webhooks: verified against the connection's scheme over the raw body, stored once per provider
// delivery (a replay finds the row and changes nothing), acknowledged at once, then processed from the bus.
// Processing marks the delivery in the same transaction as the plugin's effects (events, records), and skips a
// delivery already marked: each is processed exactly once, whatever the bus redelivers.
import { createHash } from "node:crypto";
import type { Context } from "koa";
import type { Knex } from "knex";
import { z } from "zod";
import { parseBody, type Connection, type DeliveryScope } from "@worksynapse/plugin-sdk";
import type { Job } from "../../platform/bus/bus.js";
import type { Outbox, OutboxEvent } from "../../platform/bus/outbox.js";
import { defineEvent } from "../../platform/bus/topology.js";
import { WEBHOOK_QUEUE } from "./integrations.queue.js";
import type { DeliveryBatcher, HookTarget, HookTargets } from "./integrations.ingest.js";
import { withOrg } from "../../platform/db/tenant.js";
import { verifyWebhook, type WebhookScheme } from "../../platform/gateway/webhooks.js";
import { AppError } from "../../platform/http/errors.js";
import type { Caller } from "../../platform/auth/caller.js";
import type { RunningPlugin } from "../../plugin-host/host.js";
import { callerOfUser } from "../identity/auth.js";
import { runtimeConnection, type ConnectionRow, type IntegrationDeps } from "./integrations.service.js";

/** Headers never stored (credentials and signatures). */
const SECRET_HEADERS =
  /^(authorization|cookie|x-hub-signature.*|x-gitlab-token|x-slack-signature|x-webhook-signature|proxy-authorization)$/i;
/** Fields redacted in the admin page's payload preview. */
const SECRET_FIELDS = /(token|secret|password|authorization|api[-_]?key|signature)/i;

/** The scheme a connection's deliveries are checked with. */
function schemeOf(p: RunningPlugin, secret: string, toleranceSeconds: number): WebhookScheme {
  const hook = p.definition.connection.webhook;
  switch (hook?.kind) {
    case "github":
      return { kind: "github", secret };
    case "gitlab":
      return { kind: "gitlab", token: secret };
    case "basic":
      return { kind: "basic", username: "worksynapse", password: secret };
    case "shared-secret":
      return { kind: "shared-secret", header: hook.header ?? "x-webhook-secret", secret };
    case "mattermost":
      return { kind: "mattermost", token: secret };
    case "slack":
      return { kind: "slack", secret, toleranceSeconds };
    default:
      return { kind: "hmac", secret, toleranceSeconds };
  }
}

/** What the provider calls the event. */
function eventOf(headers: Record<string, string>, payload: unknown): string {
  const h =
    headers["x-github-event"] ??
    headers["x-gitlab-event"] ??
    headers["x-webhook-event"] ??
    headers["x-event-key"];
  if (h) return h.slice(0, 100);
  const p = (payload ?? {}) as Record<string, unknown>;
  for (const k of ["webhookEvent", "eventType", "object_kind", "command", "event", "type"])
    if (typeof p[k] === "string" && p[k]) return (p[k] as string).slice(0, 100);
  return "message";
}

/** Reads the raw body up to `limit` bytes; 413 past it (before anything is stored). */
async function rawBody(ctx: Context, limit: number): Promise<Buffer> {
  const declared = Number(ctx.get("content-length") || 0);
  if (declared > limit) {
    ctx.set("Connection", "close");
    throw new AppError(413, "body_too_large", `A webhook body may be at most ${limit} bytes.`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      ctx.set("Connection", "close");
      throw new AppError(413, "body_too_large", `A webhook body may be at most ${limit} bytes.`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

const flatHeaders = (ctx: Context): Record<string, string> =>
  Object.fromEntries(
    Object.entries(ctx.headers).map(([k, v]) => [
      k.toLowerCase(),
      Array.isArray(v) ? v.join(", ") : (v ?? ""),
    ]),
  );

/** What the receiver works with. */
export interface ReceiverDeps extends IntegrationDeps {
  hooks: HookTargets;
  batcher: DeliveryBatcher;
}

const UUID = z.uuid();

/** Receives one delivery: verify, store and enqueue (with the deliveries arriving meanwhile), answer. */
export async function receiveWebhook(
  deps: ReceiverDeps,
  ctx: Context,
  connectionId: string,
): Promise<{ status: number; body: unknown }> {
  const notFound = () => AppError.notFound("No such webhook.");
  if (!UUID.safeParse(connectionId).success) throw notFound();
  const body = await rawBody(ctx, deps.config.integrations.webhookBodyBytes);
  const target: HookTarget | null = await deps.hooks.get(connectionId);
  const p = target && deps.plugins.get(target.pluginId);
  if (!target || !p?.webhooks || !target.secret) throw notFound();
  if (!target.accepting)
    throw new AppError(409, "connection_disabled", "This connection does not take webhooks now.");
  const headers = flatHeaders(ctx);
  const verdict = verifyWebhook(
    schemeOf(p, target.secret, deps.config.integrations.webhookToleranceSeconds),
    headers,
    body,
  );
  if (!verdict.ok) {
    deps.log.warn({ connection: connectionId, reason: verdict.reason }, "webhook refused");
    throw new AppError(
      401,
      `webhook_${verdict.reason}`,
      {
        missing_signature: "The delivery carries no signature or token.",
        bad_signature: "The delivery's signature does not match.",
        stale: "The delivery's timestamp is outside the accepted window.",
      }[verdict.reason],
    );
  }
  const contentType = headers["content-type"] ?? "";
  const text = body.toString("utf8");
  if (text.includes("\u0000")) throw AppError.badRequest("A webhook body may not contain NUL characters.");
  const payload = parseBody(contentType, text);
  const event = eventOf(headers, payload);
  // A replay (same delivery id, or the same signed bytes) finds the stored row and is not processed again.
  const key =
    verdict.delivery.id ??
    createHash("sha256")
      .update(`${verdict.delivery.signedAt ?? ""}.`)
      .update(body)
      .digest("hex");
  const stored = Object.fromEntries(Object.entries(headers).filter(([k]) => !SECRET_HEADERS.test(k)));
  const { id } = await deps.batcher.add({
    orgId: target.orgId,
    connectionId,
    key,
    event,
    headers: stored,
    contentType: contentType.slice(0, 200),
    body: text,
  });
  if (!id) return { status: 200, body: { data: { duplicate: true } } };
  const ack = p.webhooks.ack?.({ id, event, headers: stored, payload });
  return ack ? { status: ack.status ?? 200, body: ack.body ?? {} } : { status: 202, body: { data: { id } } };
}

/** Asks the assistant as a person (null on a process without the assistant). */
export type AskAs = (caller: Caller, question: string, source: string) => Promise<string>;

type ProcessDeps = IntegrationDeps & { outbox: Outbox; ask: AskAs | null };

/**
 * Processes a group of one organization's deliveries in one transaction, each exactly once: the plugin's effects
 * (recorded events, published events) are kept in memory per delivery and written together with the deliveries'
 * "processed" marks, in a few statements for the whole group. A delivery whose handler throws loses its effects
 * and is marked failed; the others go on. Returns the first handler error (after the commit).
 */
async function processGroup(deps: ProcessDeps, orgId: string, ids: string[]): Promise<unknown> {
  return withOrg(deps.knex, orgId, async (trx) => {
    // The row locks make a concurrent redelivery wait, then find the deliveries processed (the status is
    // checked again on the locked row).
    const rows = (await trx("webhook_deliveries")
      .whereIn("id", ids)
      .whereNot({ status: "processed" })
      .forUpdate()) as Record<string, unknown>[];
    if (!rows.length) return undefined;
    const order = new Map(ids.map((id, i) => [id, i]));
    rows.sort((a, b) => (order.get(a.id as string) ?? 0) - (order.get(b.id as string) ?? 0));
    const connectionRows = new Map<string, ConnectionRow>(
      (
        (await trx("integration_connections").whereIn("id", [
          ...new Set(rows.map((d) => d.connection_id as string)),
        ])) as ConnectionRow[]
      ).map((r) => [r.id, r]),
    );
    const connections = new Map<string, Connection>();
    const records: Record<string, unknown>[] = [];
    const events: OutboxEvent[] = [];
    const processed: string[] = [];
    let failure: unknown;
    for (const d of rows) {
      const deliveryId = d.id as string;
      const mine = { records: [] as Record<string, unknown>[], events: [] as OutboxEvent[] };
      try {
        const row = connectionRows.get(d.connection_id as string);
        const p = row && deps.plugins.get(row.plugin_id);
        if (!row || !p?.webhooks) throw new Error(`the plugin of this delivery is not running`);
        let connection = connections.get(row.id);
        if (!connection) connections.set(row.id, (connection = runtimeConnection(deps, row, p)));
        const scope: DeliveryScope = {
          connection,
          publish: async (event, payload) => {
            if (!/^[a-z][a-z0-9_.-]{0,60}$/.test(event)) throw new Error(`bad event name ${event}`);
            mine.events.push({
              def: defineEvent(`plugins.${p.id}.${event}`, z.unknown()),
              payload: { orgId, connectionId: row.id, payload },
            });
          },
          record: async (type, summary, payload) => {
            mine.records.push({
              org_id: orgId,
              connection_id: row.id,
              delivery_id: deliveryId,
              type: type.slice(0, 100),
              summary: summary.slice(0, 500),
              payload: JSON.stringify(payload ?? null),
            });
          },
          ask: async (email, question) => {
            if (!deps.ask) throw new Error("the assistant does not run on this process");
            const caller = await callerOfUser(trx, orgId, email);
            if (!caller) return `(No active WorkSynapse account ${email} to ask as.)`;
            return deps.ask(caller, question, p.manifest.name);
          },
        };
        await p.webhooks.handle(
          {
            id: deliveryId,
            event: d.event as string,
            headers: d.headers as Record<string, string>,
            payload: parseBody(d.content_type as string, d.body as string),
          },
          scope,
        );
        records.push(...mine.records);
        events.push(...mine.events);
        processed.push(deliveryId);
      } catch (err) {
        failure ??= err;
        await trx("webhook_deliveries")
          .where({ id: deliveryId })
          .update({
            status: "failed",
            error: (err as Error).message.slice(0, 500),
            attempts: trx.raw("attempts + 1"),
          });
      }
    }
    for (let i = 0; i < records.length; i += 1000)
      await trx("integration_events").insert(records.slice(i, i + 1000));
    await deps.outbox.events(trx, events);
    if (processed.length)
      await trx("webhook_deliveries")
        .whereIn("id", processed)
        .update({
          status: "processed",
          processed_at: trx.fn.now(),
          attempts: trx.raw("attempts + 1"),
          error: null,
        });
    return failure;
  });
}

/**
 * Processes a job's deliveries, each exactly once, as one group (see processGroup). When the group's writes fail
 * as a whole (nothing of it committed), its deliveries are processed one by one, so that one cannot hold back
 * the others. A delivery that fails is marked so; the job then fails, and its retry skips the deliveries already
 * processed.
 */
export async function processDeliveries(
  deps: ProcessDeps,
  job: Job<z.infer<typeof WEBHOOK_QUEUE.schema>>,
): Promise<void> {
  const { orgId, deliveryIds } = job.payload;
  // One delivery in a group of its own; when even that cannot be written, it is marked failed.
  const alone = async (id: string): Promise<unknown> => {
    try {
      return await processGroup(deps, orgId, [id]);
    } catch (err) {
      await markFailed(deps, orgId, id, err);
      return err;
    }
  };
  let failure: unknown;
  if (deliveryIds.length === 1) failure = await alone(deliveryIds[0] as string);
  else
    try {
      failure = await processGroup(deps, orgId, deliveryIds);
    } catch {
      for (const id of deliveryIds) {
        const err = await alone(id);
        failure ??= err;
      }
    }
  if (failure) throw failure;
}

/** Marks a delivery failed, outside the transaction that failed. */
async function markFailed(deps: ProcessDeps, orgId: string, id: string, err: unknown): Promise<void> {
  await withOrg(deps.knex, orgId, (trx) =>
    trx("webhook_deliveries")
      .where({ id })
      .whereNot({ status: "processed" })
      .update({
        status: "failed",
        error: (err as Error).message.slice(0, 500),
        attempts: trx.raw("attempts + 1"),
      }),
  );
}

/** 404 unless the connection is the caller's organization's (no existence oracle across organizations). */
export async function visibleConnection(trx: Knex.Transaction, id: string): Promise<void> {
  if (!(await trx("integration_connections").where({ id }).first("id")))
    throw AppError.notFound("No such connection.");
}

/** Redacts secret-looking fields of a payload for the admin page's preview, and cuts it short. */
export function preview(payload: unknown, depth = 0): unknown {
  if (depth > 6) return "…";
  if (Array.isArray(payload)) return payload.slice(0, 20).map((v) => preview(v, depth + 1));
  if (payload && typeof payload === "object")
    return Object.fromEntries(
      Object.entries(payload)
        .slice(0, 50)
        .map(([k, v]) => [k, SECRET_FIELDS.test(k) ? "[redacted]" : preview(v, depth + 1)]),
    );
  if (typeof payload === "string") return payload.length > 500 ? `${payload.slice(0, 500)}…` : payload;
  return payload;
}

/** The connection's deliveries, newest first. */
export async function listDeliveries(
  trx: Knex.Transaction,
  connectionId: string,
  limit: number,
  before?: string,
) {
  await visibleConnection(trx, connectionId);
  const q = trx("webhook_deliveries")
    .where({ connection_id: connectionId })
    .orderBy("received_at", "desc")
    .limit(limit)
    .select("id", "event", "status", "attempts", "error", "received_at", "processed_at");
  if (before) q.where("received_at", "<", before);
  return (await q).map(presentDelivery);
}

const presentDelivery = (d: Record<string, unknown>) => ({
  id: d.id as string,
  event: d.event as string,
  status: d.status as string,
  attempts: d.attempts as number,
  error: (d.error as string | null) ?? null,
  receivedAt: (d.received_at as Date).toISOString(),
  processedAt: (d.processed_at as Date | null)?.toISOString() ?? null,
});

/** One delivery with its redacted payload and headers. */
export async function getDelivery(trx: Knex.Transaction, connectionId: string, id: string) {
  const d = await trx("webhook_deliveries").where({ connection_id: connectionId, id }).first();
  if (!d) throw AppError.notFound("No such delivery.");
  const events = await trx("integration_events")
    .where({ delivery_id: id })
    .orderBy("created_at")
    .select("type", "summary");
  return {
    ...presentDelivery(d),
    headers: d.headers as Record<string, string>,
    payload: preview(parseBody(d.content_type, d.body)),
    events: events as { type: string; summary: string }[],
  };
}

/** "Process again": the delivery is queued anew (a new job, so the bus's dedupe does not drop it). */
export async function redeliver(
  outbox: Outbox,
  trx: Knex.Transaction,
  orgId: string,
  connectionId: string,
  id: string,
) {
  const d = await trx("webhook_deliveries").where({ connection_id: connectionId, id }).forUpdate().first();
  if (!d) throw AppError.notFound("No such delivery.");
  await trx("webhook_deliveries").where({ id }).update({ status: "queued", error: null });
  await outbox.job(
    trx,
    WEBHOOK_QUEUE,
    { orgId, deliveryIds: [id] },
    `webhook:${id}:${d.attempts}:${Date.now()}`,
  );
}
