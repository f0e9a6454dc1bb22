import type { Context } from "koa";
import { z } from "zod";
import { dataOf, type Api } from "../../platform/http/api.js";
import { AppError } from "../../platform/http/errors.js";
import type { Outbox } from "../../platform/bus/outbox.js";
import { actorOf, audit } from "../identity/audit.js";
import * as svc from "./integrations.service.js";
import {
  getDelivery,
  listDeliveries,
  receiveWebhook,
  redeliver,
  visibleConnection,
  type ReceiverDeps,
} from "./integrations.webhooks.js";

const tags = ["integrations"];
const manage = "integrations.manage";
const idParams = z.object({ id: z.uuid() });
const deliveryParams = z.object({ id: z.uuid(), deliveryId: z.uuid() });
const name = z.string().trim().min(1).max(100);

const connectionSchema = z
  .object({
    id: z.uuid(),
    plugin: z.string(),
    name: z.string(),
    baseUrl: z.string(),
    enabled: z.boolean(),
    auth: z.object({
      kind: z.enum(["none", "token", "basic", "oauth2", "client_credentials"]),
      secretSet: z.boolean(),
      username: z.string().nullable(),
      clientId: z.string().nullable(),
      authorizeUrl: z.string().nullable(),
      tokenUrl: z.string().nullable(),
      scopes: z.string().nullable(),
      authorized: z.boolean().nullable(),
      expiresAt: z.string().nullable(),
    }),
    settings: z.record(z.string(), z.unknown()),
    webhookUrl: z.string(),
    webhookSecretSet: z.boolean(),
    health: z.object({ failures: z.number(), pausedUntil: z.string().nullable() }),
    lastTest: z.unknown().nullable(),
    lastTestAt: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: "IntegrationConnection" });

const pluginSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    version: z.string().nullable(),
    description: z.string(),
    status: z.enum(["running", "failed", "invalid"]),
    error: z.string().nullable(),
    enabled: z.boolean(),
    auth: z.array(z.string()),
    webhook: z.string().nullable(),
    settingsSchema: z.record(z.string(), z.unknown()).nullable(),
    tools: z.array(z.object({ name: z.string(), description: z.string(), effect: z.string() })),
    egress: z.array(z.string()),
  })
  .meta({ id: "Plugin" });

const testReportSchema = z.object({
  ok: z.boolean(),
  checks: z.array(z.object({ name: z.string(), ok: z.boolean(), detail: z.string() })),
});

const deliverySchema = z.object({
  id: z.uuid(),
  event: z.string(),
  status: z.enum(["queued", "processed", "failed"]),
  attempts: z.number(),
  error: z.string().nullable(),
  receivedAt: z.string(),
  processedAt: z.string().nullable(),
});

/** The OAuth callback's address as the administrator's browser reaches it. */
function redirectUri(ctx: Context, publicUrl?: string) {
  const origin = publicUrl ? new URL(publicUrl).origin : `${ctx.protocol}://${ctx.host}`;
  return `${origin}/api/integrations/oauth/callback`;
}

/** Registers plugins, connections, OAuth, the webhook receiver and the delivery log. */
export function registerIntegrationRoutes(api: Api, deps: (ReceiverDeps & { outbox: Outbox }) | null) {
  const need = () => {
    if (!deps) throw AppError.unavailable("Integrations need a database.");
    return deps;
  };

  api.route({
    method: "get",
    path: "/api/integrations/plugins",
    operationId: "listPlugins",
    summary: "Installed plugins: version, health, whether this organization enabled each",
    tags,
    permission: manage,
    response: dataOf(z.array(pluginSchema)),
    handler: async (_ctx, _in, { trx }) => {
      const d = need();
      const enabled = new Set(
        (await trx("plugin_settings").where({ enabled: true }).pluck("plugin_id")) as string[],
      );
      return {
        data: d.plugins.list().map((p) => ({
          id: p.id,
          name: p.manifest?.name ?? p.id,
          version: p.manifest?.version ?? null,
          description: p.manifest?.description ?? "",
          status: p.status,
          error: p.error ?? null,
          enabled: p.status === "running" && enabled.has(p.id),
          auth: p.definition?.connection.auth ?? [],
          webhook: p.definition?.connection.webhook?.kind ?? null,
          settingsSchema: p.definition
            ? (z.toJSONSchema(p.definition.connection.settings, { io: "input" }) as Record<string, unknown>)
            : null,
          tools: p.tools.map((t) => ({ name: t.name, description: t.description, effect: t.effect })),
          egress: p.manifest?.egress ?? [],
        })),
      };
    },
  });

  api.route({
    method: "put",
    path: "/api/integrations/plugins/:id",
    operationId: "setPluginEnabled",
    summary: "Enables or disables a plugin for this organization",
    tags,
    permission: manage,
    params: z.object({ id: z.string().max(50) }),
    body: z.strictObject({ enabled: z.boolean() }),
    response: dataOf(z.object({ id: z.string(), enabled: z.boolean() })),
    errors: [404],
    handler: async (_ctx, { params, body }, { caller, trx }) => {
      if (!need().plugins.get(params.id)) throw AppError.notFound(`No running plugin ${params.id}.`);
      await trx("plugin_settings")
        .insert({ org_id: caller.orgId, plugin_id: params.id, enabled: body.enabled })
        .onConflict(["org_id", "plugin_id"])
        .merge({ enabled: body.enabled, updated_at: trx.fn.now() });
      need().hooks.forget();
      await audit(trx, {
        ...actorOf(caller),
        action: body.enabled ? "integration.plugin_enable" : "integration.plugin_disable",
        targetType: "plugin",
        targetId: null,
        outcome: "success",
        details: { plugin: params.id },
      });
      return { data: { id: params.id, enabled: body.enabled } };
    },
  });

  api.route({
    method: "get",
    path: "/api/integrations/connections",
    operationId: "listConnections",
    summary: "The organization's integration connections (no secrets)",
    tags,
    permission: manage,
    response: dataOf(z.array(connectionSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await svc.listConnections(need(), scope) }),
  });

  api.route({
    method: "post",
    path: "/api/integrations/connections",
    operationId: "createConnection",
    summary: "Creates a connection; the webhook secret the server made is returned this once",
    tags,
    permission: manage,
    status: 201,
    body: z.strictObject({
      plugin: z.string().max(50),
      name,
      baseUrl: z.string().max(2000),
      auth: svc.credentialsInput,
      settings: z.record(z.string(), z.unknown()).optional(),
      webhookSecret: z.string().min(8).max(500).optional(),
    }),
    response: dataOf(z.object({ connection: connectionSchema, webhookSecret: z.string().nullable() })),
    errors: [403, 404, 409],
    handler: async (_ctx, { body }, scope) => ({ data: await svc.createConnection(need(), scope, body) }),
  });

  api.route({
    method: "get",
    path: "/api/integrations/connections/:id",
    operationId: "getConnection",
    summary: "One connection",
    tags,
    permission: manage,
    params: idParams,
    response: dataOf(connectionSchema),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await svc.getConnection(need(), scope, params.id) }),
  });

  api.route({
    method: "patch",
    path: "/api/integrations/connections/:id",
    operationId: "updateConnection",
    summary: "Changes a connection; credentials sent replace the stored ones",
    tags,
    permission: manage,
    params: idParams,
    body: z.strictObject({
      name: name.optional(),
      baseUrl: z.string().max(2000).optional(),
      auth: svc.credentialsInput.optional(),
      settings: z.record(z.string(), z.unknown()).optional(),
      enabled: z.boolean().optional(),
    }),
    response: dataOf(connectionSchema),
    errors: [404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await svc.updateConnection(need(), scope, params.id, body),
    }),
  });

  api.route({
    method: "delete",
    path: "/api/integrations/connections/:id",
    operationId: "deleteConnection",
    summary: "Deletes a connection, its deliveries and events",
    tags,
    permission: manage,
    params: idParams,
    status: 204,
    errors: [404],
    handler: async (_ctx, { params }, scope) => svc.deleteConnection(need(), scope, params.id),
  });

  api.route({
    method: "post",
    path: "/api/integrations/connections/:id/test",
    operationId: "testConnection",
    summary: "Checks what works with the connection now (the plugin's test) and keeps the report",
    tags,
    permission: manage,
    params: idParams,
    response: dataOf(testReportSchema),
    errors: [404, 409],
    handler: async (_ctx, { params }, scope) => ({
      data: await svc.testConnection(need(), scope, params.id),
    }),
  });

  api.route({
    method: "post",
    path: "/api/integrations/connections/:id/webhook-secret",
    operationId: "setWebhookSecret",
    summary: "Sets the webhook secret (the remote side's) or makes a new one, returned this once",
    tags,
    permission: manage,
    params: idParams,
    body: z.strictObject({ secret: z.string().min(8).max(500).optional() }),
    response: dataOf(z.object({ webhookSecret: z.string().nullable() })),
    errors: [404],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await svc.setWebhookSecret(need(), scope, params.id, body.secret),
    }),
  });

  api.route({
    method: "post",
    path: "/api/integrations/connections/:id/oauth/start",
    operationId: "startConnectionOAuth",
    summary: "Starts OAuth 2.0 authorization (code + PKCE): the URL to open",
    tags,
    permission: manage,
    params: idParams,
    response: dataOf(z.object({ url: z.string() })),
    errors: [404, 409],
    handler: async (ctx, { params }, scope) => ({
      data: await svc.startOAuth(need(), scope, params.id, redirectUri(ctx, need().config.auth.publicUrl)),
    }),
  });

  api.publicRoute({
    method: "get",
    path: "/api/integrations/oauth/callback",
    operationId: "finishConnectionOAuth",
    summary: "The authorization server sends the administrator back here; redirects to the integrations page",
    tags,
    query: z
      .object({
        state: z.string().max(500),
        code: z.string().max(4000).optional(),
        error: z.string().max(500).optional(),
      })
      .loose(),
    status: 302,
    errors: [400, 502],
    handler: async (ctx, { query }) => {
      const d = need();
      if (query.error) {
        ctx.redirect(`/admin/integrations?oauth_error=${encodeURIComponent(query.error)}`);
        return "Authorization refused.";
      }
      const { connectionId } = await svc.finishOAuth(
        d,
        new URL(ctx.url, `${ctx.protocol}://${ctx.host}`),
        redirectUri(ctx, d.config.auth.publicUrl),
      );
      ctx.redirect(`/admin/integrations?connection=${connectionId}&authorized=1`);
      return "Authorized.";
    },
  });

  api.route({
    method: "get",
    path: "/api/integrations/connections/:id/deliveries",
    operationId: "listDeliveries",
    summary: "The connection's webhook deliveries, newest first",
    tags,
    permission: manage,
    params: idParams,
    query: z.object({
      limit: z.coerce.number().int().min(1).max(200).default(50),
      before: z.iso.datetime().optional(),
    }),
    response: dataOf(z.array(deliverySchema)),
    errors: [404],
    handler: async (_ctx, { params, query }, { trx }) => ({
      data: await listDeliveries(trx, params.id, query.limit, query.before),
    }),
  });

  api.route({
    method: "get",
    path: "/api/integrations/connections/:id/deliveries/:deliveryId",
    operationId: "getDelivery",
    summary: "One delivery: headers and payload preview (secrets redacted) and what processing recorded",
    tags,
    permission: manage,
    params: deliveryParams,
    response: dataOf(
      deliverySchema.extend({
        headers: z.record(z.string(), z.string()),
        payload: z.unknown(),
        events: z.array(z.object({ type: z.string(), summary: z.string() })),
      }),
    ),
    errors: [404],
    handler: async (_ctx, { params }, { trx }) => ({
      data: await getDelivery(trx, params.id, params.deliveryId),
    }),
  });

  api.route({
    method: "post",
    path: "/api/integrations/connections/:id/deliveries/:deliveryId/redeliver",
    operationId: "redeliverDelivery",
    summary: "Processes a delivery again",
    tags,
    permission: manage,
    params: deliveryParams,
    status: 202,
    response: dataOf(z.object({ id: z.uuid() })),
    errors: [404],
    handler: async (_ctx, { params }, { caller, trx }) => {
      await redeliver(need().outbox, trx, caller.orgId, params.id, params.deliveryId);
      await audit(trx, {
        ...actorOf(caller),
        action: "integration.redeliver",
        targetType: "webhook_delivery",
        targetId: params.deliveryId,
        outcome: "success",
      });
      return { data: { id: params.deliveryId } };
    },
  });

  api.route({
    method: "get",
    path: "/api/integrations/connections/:id/events",
    operationId: "listIntegrationEvents",
    summary: "What the connection's plugin recorded, newest first",
    tags,
    permission: manage,
    params: idParams,
    query: z.object({ limit: z.coerce.number().int().min(1).max(200).default(50) }),
    response: dataOf(
      z.array(
        z.object({
          id: z.uuid(),
          type: z.string(),
          summary: z.string(),
          deliveryId: z.uuid().nullable(),
          createdAt: z.string(),
        }),
      ),
    ),
    errors: [404],
    handler: async (_ctx, { params, query }, { trx }) => {
      await visibleConnection(trx, params.id);
      const rows = await trx("integration_events")
        .where({ connection_id: params.id })
        .orderBy("created_at", "desc")
        .limit(query.limit);
      return {
        data: rows.map((r: Record<string, unknown>) => ({
          id: r.id as string,
          type: r.type as string,
          summary: r.summary as string,
          deliveryId: (r.delivery_id as string | null) ?? null,
          createdAt: (r.created_at as Date).toISOString(),
        })),
      };
    },
  });

  api.publicRoute({
    method: "post",
    path: "/api/hooks/:connectionId",
    operationId: "receiveWebhook",
    summary: "Receives a webhook delivery: verified, stored once, acknowledged, processed from the bus",
    tags,
    params: z.object({ connectionId: z.string().max(100) }),
    status: 202,
    errors: [401, 404, 409, 413],
    handler: async (ctx, { params }) => {
      const r = await receiveWebhook(need(), ctx, params.connectionId);
      ctx.status = r.status;
      return r.body;
    },
  });
}
