// Connections: what an administrator configures per organization for a plugin (base URL, credentials, settings,
// webhook secret), and the run-time form a plugin works with (a Connection whose HTTP client reaches only the
// connection's hosts, through the gateway, with its credentials added by the host and OAuth tokens refreshed).
import { randomBytes } from "node:crypto";
import type { Knex } from "knex";
import * as oauth from "openid-client";
import { z } from "zod";
import type {
  AuthKind,
  Connection,
  PluginHttpRequest,
  PluginHttpResponse,
  TestReport,
} from "@worksynapse/plugin-sdk";
import type { Config } from "../../config/schema.js";
import type { Caller } from "../../platform/auth/caller.js";
import { openSecret, sealSecret } from "../../platform/crypto.js";
import { withOrg } from "../../platform/db/tenant.js";
import { EgressError, type EgressTarget, type Gateway } from "../../platform/gateway/gateway.js";
import { AppError } from "../../platform/http/errors.js";
import type { Logger } from "../../platform/log.js";
import type { PluginHost, RunningPlugin } from "../../plugin-host/host.js";
import { actorOf, audit } from "../identity/audit.js";
import { limitsOf } from "../identity/org.service.js";

/** What the integrations module runs with. */
export interface IntegrationDeps {
  knex: Knex;
  config: Config;
  masterKey: string;
  gateway: Gateway;
  plugins: PluginHost;
  log: Pick<Logger, "info" | "warn" | "error">;
  /** The webhook receiver's cache of connections, told when one changes here. */
  hooks?: { forget(connectionId?: string): void };
}

/** A caller's transaction (as routes hand it to services). */
export interface Svc {
  caller: Caller;
  trx: Knex.Transaction;
}

const CREDENTIALS = "integration:credentials";
const WEBHOOK = "integration:webhook";
const OAUTH_STATE = "integration:oauth-state";

/** The module's sealed columns (re-sealed by `worksynapse secrets rotate`). */
export const INTEGRATION_SEALED = [
  { table: "integration_connections", column: "credentials", purpose: CREDENTIALS, context: "id" },
  { table: "integration_connections", column: "webhook_secret", purpose: WEBHOOK, context: "id" },
  { table: "oauth_states", column: "verifier", purpose: OAUTH_STATE, context: "state" },
];

/** The secrets of a connection (sealed as one JSON text). */
const secretsSchema = z
  .object({
    token: z.string(),
    password: z.string(),
    clientSecret: z.string(),
    accessToken: z.string(),
    refreshToken: z.string(),
  })
  .partial();
type Secrets = z.infer<typeof secretsSchema>;

/** What is not secret about a connection's authorization. */
export interface AuthInfo {
  username?: string;
  clientId?: string;
  authorizeUrl?: string;
  tokenUrl?: string;
  scopes?: string;
  /** When the access token expires (ISO), and when it was last issued. */
  expiresAt?: string;
  authorizedAt?: string;
}

/** The credentials an administrator sends (never returned). */
export const credentialsInput = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("none") }),
  z.strictObject({ kind: z.literal("token"), token: z.string().min(1).max(4000) }),
  z.strictObject({
    kind: z.literal("basic"),
    username: z.string().min(1).max(200),
    password: z.string().min(1).max(1000),
  }),
  z.strictObject({
    kind: z.literal("oauth2"),
    clientId: z.string().min(1).max(500),
    clientSecret: z.string().max(2000).optional(),
    authorizeUrl: z.url(),
    tokenUrl: z.url(),
    scopes: z.string().max(1000).default(""),
  }),
  z.strictObject({
    kind: z.literal("client_credentials"),
    clientId: z.string().min(1).max(500),
    clientSecret: z.string().min(1).max(2000),
    tokenUrl: z.url(),
    scopes: z.string().max(1000).default(""),
  }),
]);
export type CredentialsInput = z.infer<typeof credentialsInput>;

export interface ConnectionRow {
  id: string;
  org_id: string;
  plugin_id: string;
  name: string;
  base_url: string;
  auth_kind: AuthKind;
  credentials: string | null;
  auth_info: AuthInfo;
  webhook_secret: string | null;
  settings: Record<string, unknown>;
  enabled: boolean;
  last_test: TestReport | null;
  last_test_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

/** The presented connection: no secret, only whether each is set. */
export function presentConnection(row: ConnectionRow, deps: Pick<IntegrationDeps, "gateway" | "config">) {
  const state = deps.gateway.state(row.id);
  return {
    id: row.id,
    plugin: row.plugin_id,
    name: row.name,
    baseUrl: row.base_url,
    enabled: row.enabled,
    auth: {
      kind: row.auth_kind,
      secretSet: !!row.credentials,
      username: row.auth_info.username ?? null,
      clientId: row.auth_info.clientId ?? null,
      authorizeUrl: row.auth_info.authorizeUrl ?? null,
      tokenUrl: row.auth_info.tokenUrl ?? null,
      scopes: row.auth_info.scopes ?? null,
      authorized: row.auth_kind === "oauth2" ? !!row.auth_info.authorizedAt : null,
      expiresAt: row.auth_info.expiresAt ?? null,
    },
    settings: row.settings,
    webhookUrl: `/api/hooks/${row.id}`,
    webhookSecretSet: !!row.webhook_secret,
    health: {
      failures: state.failures,
      pausedUntil: state.openUntil?.toISOString() ?? null,
    },
    lastTest: row.last_test,
    lastTestAt: row.last_test_at?.toISOString() ?? null,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

const seal = (deps: Pick<IntegrationDeps, "masterKey">, id: string, s: Secrets) =>
  sealSecret(deps.masterKey, CREDENTIALS, JSON.stringify(s), id);
const unseal = (deps: Pick<IntegrationDeps, "masterKey">, row: ConnectionRow): Secrets =>
  row.credentials
    ? secretsSchema.parse(JSON.parse(openSecret(deps.masterKey, CREDENTIALS, row.credentials, row.id)))
    : {};

/** The webhook secret of a connection, opened (for verification). */
export function webhookSecretOf(
  deps: Pick<IntegrationDeps, "masterKey">,
  row: { id: string; webhook_secret: string | null },
) {
  return row.webhook_secret ? openSecret(deps.masterKey, WEBHOOK, row.webhook_secret, row.id) : null;
}

/** Splits credentials input into sealed secrets and plain auth info. */
function splitCredentials(c: CredentialsInput): { secrets: Secrets; info: AuthInfo } {
  switch (c.kind) {
    case "none":
      return { secrets: {}, info: {} };
    case "token":
      return { secrets: { token: c.token }, info: {} };
    case "basic":
      return { secrets: { password: c.password }, info: { username: c.username } };
    case "oauth2":
      return {
        secrets: c.clientSecret ? { clientSecret: c.clientSecret } : {},
        info: { clientId: c.clientId, authorizeUrl: c.authorizeUrl, tokenUrl: c.tokenUrl, scopes: c.scopes },
      };
    case "client_credentials":
      return {
        secrets: { clientSecret: c.clientSecret },
        info: { clientId: c.clientId, tokenUrl: c.tokenUrl, scopes: c.scopes },
      };
  }
}

/** A running plugin enabled for the caller's organization, or a clear 4xx. */
export async function enabledPlugin(
  trx: Knex.Transaction,
  plugins: PluginHost,
  id: string,
): Promise<RunningPlugin> {
  const p = plugins.get(id);
  if (!p) throw AppError.notFound(`No running plugin ${id}.`);
  const s = await trx("plugin_settings").where({ plugin_id: id }).first("enabled");
  if (!s?.enabled)
    throw new AppError(
      409,
      "plugin_disabled",
      `The ${p.manifest.name} plugin is not enabled for this organization.`,
    );
  return p;
}

/** Validates a base URL an administrator gives: http(s), no credentials, no query. */
function baseUrlOf(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw AppError.badRequest("The base URL is not a URL.", {
      fields: [{ path: "baseUrl", message: "not a URL" }],
    });
  }
  if ((u.protocol !== "https:" && u.protocol !== "http:") || u.username || u.password || u.search)
    throw AppError.badRequest("The base URL must be http(s), without credentials or a query.", {
      fields: [{ path: "baseUrl", message: "http(s) without credentials or query" }],
    });
  return u.toString().replace(/\/+$/, "");
}

function settingsOf(p: RunningPlugin, raw: unknown): Record<string, unknown> {
  const r = p.definition.connection.settings.safeParse(raw ?? {});
  if (!r.success) throw AppError.validation(r.error);
  return r.data as Record<string, unknown>;
}

/** A unique-name violation as the 409 the form shows on its name field; anything else as it is. */
function nameTaken(err: unknown): unknown {
  return (err as { code?: string }).code === "23505"
    ? AppError.conflict("A connection with this name exists.", { field: "name" })
    : err;
}

/** Every connection of the organization. */
export async function listConnections(deps: IntegrationDeps, { trx }: Svc) {
  const rows = (await trx("integration_connections").select("*").orderBy("name")) as ConnectionRow[];
  return rows.map((r) => presentConnection(r, deps));
}

async function rowOf(trx: Knex.Transaction, id: string): Promise<ConnectionRow> {
  const row = (await trx("integration_connections").where({ id }).first()) as ConnectionRow | undefined;
  if (!row) throw AppError.notFound("No such connection.");
  return row;
}

/** One connection. */
export async function getConnection(deps: IntegrationDeps, { trx }: Svc, id: string) {
  return presentConnection(await rowOf(trx, id), deps);
}

/** Creates a connection; returns it with the webhook secret, shown this once when the server made it. */
export async function createConnection(
  deps: IntegrationDeps,
  { caller, trx }: Svc,
  input: {
    plugin: string;
    name: string;
    baseUrl: string;
    auth: CredentialsInput;
    settings?: unknown;
    webhookSecret?: string;
  },
) {
  const p = await enabledPlugin(trx, deps.plugins, input.plugin);
  if (!p.definition.connection.auth.includes(input.auth.kind))
    throw AppError.badRequest(`${p.manifest.name} connections do not use ${input.auth.kind} credentials.`, {
      fields: [{ path: "auth.kind", message: `one of ${p.definition.connection.auth.join(", ")}` }],
    });
  // The plan's integrations limit counts connections; the lock makes concurrent creations count one by one.
  const { limits } = await limitsOf(trx, caller.orgId);
  await trx.raw("select pg_advisory_xact_lock(hashtext('integration_connections:' || ?))", [caller.orgId]);
  const max = limits.integrations as number | null;
  const count = Number((await trx("integration_connections").count({ n: "*" }).first())?.n ?? 0);
  if (max !== null && count >= max)
    throw new AppError(403, "plan_limit", `The organization's plan allows ${max} integration connections.`, {
      limit: max,
    });
  const baseUrl = baseUrlOf(input.baseUrl);
  const settings = settingsOf(p, input.settings);
  const { secrets, info } = splitCredentials(input.auth);
  const id = (await trx.raw("select gen_random_uuid() as id")).rows[0].id as string;
  const generated = p.definition.connection.webhook && !input.webhookSecret;
  const webhookSecret =
    input.webhookSecret ?? (generated ? randomBytes(32).toString("base64url") : undefined);
  try {
    await trx("integration_connections").insert({
      id,
      org_id: caller.orgId,
      plugin_id: p.id,
      name: input.name,
      base_url: baseUrl,
      auth_kind: input.auth.kind,
      credentials: Object.keys(secrets).length ? seal(deps, id, secrets) : null,
      auth_info: JSON.stringify(info),
      webhook_secret: webhookSecret ? sealSecret(deps.masterKey, WEBHOOK, webhookSecret, id) : null,
      settings: JSON.stringify(settings),
      created_by: caller.userId,
    });
  } catch (err) {
    throw nameTaken(err);
  }
  await audit(trx, {
    ...actorOf(caller),
    action: "integration.connection_create",
    targetType: "integration_connection",
    targetId: id,
    outcome: "success",
    details: { plugin: p.id, name: input.name, baseUrl, auth: input.auth.kind },
  });
  return {
    connection: presentConnection(await rowOf(trx, id), deps),
    webhookSecret: generated ? webhookSecret : null,
  };
}

/** Changes a connection; new credentials replace the old ones (and end an OAuth authorization). */
export async function updateConnection(
  deps: IntegrationDeps,
  { caller, trx }: Svc,
  id: string,
  input: { name?: string; baseUrl?: string; auth?: CredentialsInput; settings?: unknown; enabled?: boolean },
) {
  const row = await rowOf(trx, id);
  const p = deps.plugins.get(row.plugin_id);
  if (!p) throw new AppError(409, "plugin_not_running", `The ${row.plugin_id} plugin is not running.`);
  const patch: Record<string, unknown> = { updated_at: trx.fn.now() };
  if (input.name !== undefined) patch.name = input.name;
  if (input.baseUrl !== undefined) patch.base_url = baseUrlOf(input.baseUrl);
  if (input.settings !== undefined) patch.settings = JSON.stringify(settingsOf(p, input.settings));
  if (input.enabled !== undefined) patch.enabled = input.enabled;
  if (input.auth) {
    if (!p.definition.connection.auth.includes(input.auth.kind))
      throw AppError.badRequest(`${p.manifest.name} connections do not use ${input.auth.kind} credentials.`);
    const { secrets, info } = splitCredentials(input.auth);
    patch.auth_kind = input.auth.kind;
    patch.credentials = Object.keys(secrets).length ? seal(deps, id, secrets) : null;
    patch.auth_info = JSON.stringify(info);
  }
  try {
    await trx("integration_connections").where({ id }).update(patch);
  } catch (err) {
    throw nameTaken(err);
  }
  deps.hooks?.forget(id);
  await audit(trx, {
    ...actorOf(caller),
    action: "integration.connection_update",
    targetType: "integration_connection",
    targetId: id,
    outcome: "success",
    details: { fields: Object.keys(input), ...(input.auth ? { auth: input.auth.kind } : {}) },
  });
  return presentConnection(await rowOf(trx, id), deps);
}

/** Deletes a connection with its deliveries and events. */
export async function deleteConnection(deps: IntegrationDeps, { caller, trx }: Svc, id: string) {
  const row = await rowOf(trx, id);
  await trx("integration_connections").where({ id }).delete();
  deps.hooks?.forget(id);
  await audit(trx, {
    ...actorOf(caller),
    action: "integration.connection_delete",
    targetType: "integration_connection",
    targetId: id,
    outcome: "success",
    details: { plugin: row.plugin_id, name: row.name },
  });
}

/** Replaces the webhook secret: the given one (the remote side made it) or a new one, returned this once. */
export async function setWebhookSecret(
  deps: IntegrationDeps,
  { caller, trx }: Svc,
  id: string,
  given?: string,
) {
  await rowOf(trx, id);
  const secret = given ?? randomBytes(32).toString("base64url");
  await trx("integration_connections")
    .where({ id })
    .update({ webhook_secret: sealSecret(deps.masterKey, WEBHOOK, secret, id), updated_at: trx.fn.now() });
  deps.hooks?.forget(id);
  await audit(trx, {
    ...actorOf(caller),
    action: "integration.webhook_secret",
    targetType: "integration_connection",
    targetId: id,
    outcome: "success",
  });
  return { webhookSecret: given ? null : secret };
}

// ---------- the run-time connection ----------

/** The hosts a connection may reach: its base URL's, its token endpoint's, and the plugin manifest's egress list. */
function targetOf(deps: IntegrationDeps, row: ConnectionRow, p: RunningPlugin): EgressTarget {
  const hosts = new Set<string>(p.manifest.egress);
  for (const u of [row.base_url, row.auth_info.tokenUrl]) if (u) hosts.add(new URL(u).host);
  return { id: row.id, hosts: [...hosts], ratePerSecond: deps.config.integrations.ratePerSecond };
}

/** The gateway as `fetch` for openid-client: token requests reach only the connection's hosts too. */
function gatewayFetch(deps: IntegrationDeps, target: EgressTarget): oauth.CustomFetch {
  return async (url, options) => {
    const headers: Record<string, string> = {};
    new Headers(options.headers).forEach((v, k) => (headers[k] = v));
    const res = await deps.gateway.request(target, {
      method: options.method as "GET" | "POST",
      url,
      headers,
      body: typeof options.body === "string" ? options.body : options.body ? String(options.body) : undefined,
      timeoutMs: deps.config.integrations.timeoutMs,
    });
    return new Response(res.status === 204 || res.status === 304 ? null : new Uint8Array(res.body), {
      status: res.status,
      headers: res.headers,
    });
  };
}

/** The OAuth client configuration of a connection (endpoints as configured; no discovery, nothing fetched). */
function oauthConfig(deps: IntegrationDeps, row: ConnectionRow, p: RunningPlugin, secrets: Secrets) {
  const info = row.auth_info;
  if (!info.clientId || !info.tokenUrl)
    throw new AppError(409, "oauth_not_configured", "OAuth is not configured.");
  const issuer = new URL(info.authorizeUrl ?? info.tokenUrl).origin;
  const config = new oauth.Configuration(
    { issuer, authorization_endpoint: info.authorizeUrl, token_endpoint: info.tokenUrl },
    info.clientId,
    secrets.clientSecret ? { client_secret: secrets.clientSecret } : undefined,
    secrets.clientSecret ? oauth.ClientSecretPost(secrets.clientSecret) : oauth.None(),
  );
  config[oauth.customFetch] = gatewayFetch(deps, targetOf(deps, row, p));
  // An on-site authorization server over plain HTTP is the administrator's choice (the URL says so).
  if (info.tokenUrl.startsWith("http:")) oauth.allowInsecureRequests(config);
  return config;
}

/** The authorization server's refusal as a clear error (its error code and description, never a token). */
function oauthError(err: unknown): Error {
  if (err instanceof EgressError || err instanceof AppError) return err;
  const e = err as { error?: string; error_description?: string; message: string };
  const why = e.error ? `${e.error}${e.error_description ? `: ${e.error_description}` : ""}` : e.message;
  return new AppError(502, "oauth_failed", `The authorization server refused: ${why}`.slice(0, 300));
}

/** Stores new tokens (sealed), rotating the refresh token when the server sent a new one. */
async function storeTokens(
  deps: IntegrationDeps,
  trx: Knex | Knex.Transaction,
  row: ConnectionRow,
  secrets: Secrets,
  tokens: oauth.TokenEndpointResponse,
): Promise<Secrets> {
  const next: Secrets = {
    ...secrets,
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token ?? secrets.refreshToken,
  };
  const info: AuthInfo = {
    ...row.auth_info,
    authorizedAt: new Date().toISOString(),
    expiresAt: tokens.expires_in ? new Date(Date.now() + tokens.expires_in * 1000).toISOString() : undefined,
  };
  await trx("integration_connections")
    .where({ id: row.id })
    .update({
      credentials: seal(deps, row.id, next),
      auth_info: JSON.stringify(info),
      updated_at: trx.fn.now(),
    });
  row.auth_info = info;
  return next;
}

/** A fresh access token for an OAuth or client-credentials connection (refreshed when expired or refused). */
async function accessToken(deps: IntegrationDeps, row: ConnectionRow, p: RunningPlugin, force: boolean) {
  let secrets = unseal(deps, row);
  const expired = !row.auth_info.expiresAt || Date.parse(row.auth_info.expiresAt) - 30_000 < Date.now();
  if (secrets.accessToken && !expired && !force) return secrets.accessToken;
  const config = oauthConfig(deps, row, p, secrets);
  let tokens: oauth.TokenEndpointResponse;
  if (row.auth_kind === "oauth2" && !secrets.refreshToken) {
    if (secrets.accessToken && !force) return secrets.accessToken;
    throw new AppError(
      409,
      "oauth_not_authorized",
      "The connection is not authorized; an administrator must authorize it.",
    );
  }
  try {
    tokens =
      row.auth_kind === "client_credentials"
        ? await oauth.clientCredentialsGrant(
            config,
            row.auth_info.scopes ? { scope: row.auth_info.scopes } : {},
          )
        : await oauth.refreshTokenGrant(config, secrets.refreshToken as string);
  } catch (err) {
    throw oauthError(err);
  }
  // In its own transaction: the rotated refresh token must be kept even if the caller's work fails.
  secrets = await withOrg(deps.knex, row.org_id, (trx) => storeTokens(deps, trx, row, secrets, tokens));
  deps.log.info({ connection: row.id, grant: row.auth_kind }, "integration token refreshed");
  return secrets.accessToken as string;
}

/** The header a connection's credentials go in. */
async function authHeaders(
  deps: IntegrationDeps,
  row: ConnectionRow,
  p: RunningPlugin,
  force = false,
): Promise<Record<string, string>> {
  switch (row.auth_kind) {
    case "none":
      return {};
    case "token": {
      const h = p.definition.connection.tokenHeader ?? { name: "Authorization", prefix: "Bearer " };
      return { [h.name.toLowerCase()]: `${h.prefix}${unseal(deps, row).token ?? ""}` };
    }
    case "basic": {
      const basic = Buffer.from(
        `${row.auth_info.username ?? ""}:${unseal(deps, row).password ?? ""}`,
      ).toString("base64");
      return { authorization: `Basic ${basic}` };
    }
    case "oauth2":
    case "client_credentials":
      return { authorization: `Bearer ${await accessToken(deps, row, p, force)}` };
  }
}

/** The run-time connection a plugin gets. */
export function runtimeConnection(deps: IntegrationDeps, row: ConnectionRow, p: RunningPlugin): Connection {
  const target = targetOf(deps, row, p);
  const http = async (req: PluginHttpRequest, retried = false): Promise<PluginHttpResponse> => {
    if (!row.enabled) throw new EgressError("egress_off", `The connection ${row.name} is turned off.`);
    const url = /^https?:\/\//i.test(req.url) ? req.url : `${row.base_url}/${req.url.replace(/^\/+/, "")}`;
    const json = req.body !== undefined && typeof req.body !== "string";
    const headers: Record<string, string> = {
      accept: "application/json",
      "user-agent": "WorkSynapse",
      ...(json ? { "content-type": "application/json" } : {}),
      ...Object.fromEntries(Object.entries(req.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
      ...(req.anonymous ? {} : await authHeaders(deps, row, p, retried)),
    };
    const res = await deps.gateway.request(target, {
      method: req.method,
      url,
      headers,
      body: req.body === undefined ? undefined : json ? JSON.stringify(req.body) : (req.body as string),
      timeoutMs: req.timeoutMs ?? deps.config.integrations.timeoutMs,
      idempotencyKey: req.idempotencyKey,
    });
    // A refused OAuth token is refreshed once (it may have been revoked early or rotated elsewhere).
    if (
      res.status === 401 &&
      !retried &&
      !req.anonymous &&
      (row.auth_kind === "oauth2" || row.auth_kind === "client_credentials")
    )
      return http(req, true);
    const text = res.body.toString("utf8");
    let body: unknown = text;
    if (/json/i.test(res.headers["content-type"] ?? "") && text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    return { status: res.status, headers: res.headers, body };
  };
  return {
    id: row.id,
    orgId: row.org_id,
    name: row.name,
    baseUrl: row.base_url,
    settings: row.settings,
    http: (req) => http(req),
  };
}

/** The run-time connection of a row the caller can see, with its plugin (which must be running and enabled). */
export async function connectionFor(
  deps: IntegrationDeps,
  trx: Knex.Transaction,
  pluginId: string,
  idOrName?: string,
) {
  const p = await enabledPlugin(trx, deps.plugins, pluginId);
  const q = trx("integration_connections").where({ plugin_id: pluginId, enabled: true });
  const rows = (await (idOrName
    ? z.uuid().safeParse(idOrName).success
      ? q.where({ id: idOrName })
      : q.whereRaw("lower(name) = lower(?)", [idOrName])
    : q.limit(2))) as ConnectionRow[];
  if (!idOrName && rows.length > 1)
    throw AppError.badRequest(`Several ${p.manifest.name} connections exist; name the one to use.`);
  const row = rows[0];
  if (!row)
    throw AppError.notFound(
      `No ${p.manifest.name} connection${idOrName ? ` ${idOrName}` : ""} is configured.`,
    );
  return runtimeConnection(deps, row, p);
}

/** Runs the plugin's connection test (default: the base URL answers) and keeps the report. */
export async function testConnection(
  deps: IntegrationDeps,
  { caller, trx }: Svc,
  id: string,
): Promise<TestReport> {
  const row = await rowOf(trx, id);
  const p = deps.plugins.get(row.plugin_id);
  if (!p) throw new AppError(409, "plugin_not_running", `The ${row.plugin_id} plugin is not running.`);
  const conn = runtimeConnection(deps, row, p);
  let report: TestReport;
  try {
    report = p.test
      ? await p.test(conn)
      : await (async () => {
          const res = await conn.http({ method: "GET", url: row.base_url });
          const ok = res.status < 500 && res.status !== 401 && res.status !== 403;
          return {
            ok,
            checks: [{ name: "reach", ok, detail: `GET ${row.base_url} answered ${res.status}` }],
          };
        })();
  } catch (err) {
    const detail =
      err instanceof EgressError || err instanceof AppError
        ? err.message
        : `failed: ${(err as Error).message}`;
    report = { ok: false, checks: [{ name: "reach", ok: false, detail: detail.slice(0, 300) }] };
  }
  await trx("integration_connections")
    .where({ id })
    .update({ last_test: JSON.stringify(report), last_test_at: trx.fn.now() });
  await audit(trx, {
    ...actorOf(caller),
    action: "integration.connection_test",
    targetType: "integration_connection",
    targetId: id,
    outcome: report.ok ? "success" : "failure",
  });
  return report;
}

// ---------- OAuth 2.0 authorization code with PKCE ----------

/** Starts an authorization: the URL to send the administrator's browser to. */
export async function startOAuth(
  deps: IntegrationDeps,
  { caller, trx }: Svc,
  id: string,
  redirectUri: string,
) {
  const row = await rowOf(trx, id);
  if (row.auth_kind !== "oauth2") throw AppError.badRequest("This connection does not use OAuth 2.0.");
  const p = deps.plugins.get(row.plugin_id);
  if (!p) throw new AppError(409, "plugin_not_running", `The ${row.plugin_id} plugin is not running.`);
  const config = oauthConfig(deps, row, p, unseal(deps, row));
  const verifier = oauth.randomPKCECodeVerifier();
  // The organization travels in the state, so the callback can enter it before looking the state up.
  const state = `${caller.orgId}.${oauth.randomState()}`;
  await trx("oauth_states").where("created_at", "<", trx.raw("now() - interval '1 hour'")).delete();
  await trx("oauth_states").insert({
    state,
    org_id: caller.orgId,
    connection_id: id,
    user_id: caller.userId,
    verifier: sealSecret(deps.masterKey, OAUTH_STATE, verifier, state),
  });
  const url = oauth.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: row.auth_info.scopes ?? "",
    state,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
  });
  return { url: url.href };
}

/** Finishes an authorization: exchanges the code (with the PKCE verifier) and seals the tokens. */
export async function finishOAuth(deps: IntegrationDeps, currentUrl: URL, redirectUri: string) {
  const state = currentUrl.searchParams.get("state") ?? "";
  const orgId = state.split(".")[0] ?? "";
  if (!z.uuid().safeParse(orgId).success)
    throw AppError.badRequest("The authorization's state is not valid.");
  return withOrg(deps.knex, orgId, async (trx) => {
    // Used once: deleted in the same transaction that stores the tokens.
    const st = await trx("oauth_states")
      .where({ state })
      .where("created_at", ">", trx.raw("now() - interval '15 minutes'"))
      .delete()
      .returning("*");
    const s = st[0] as { connection_id: string; user_id: string; verifier: string } | undefined;
    if (!s) throw AppError.badRequest("The authorization expired or was already used; start it again.");
    const row = await rowOf(trx, s.connection_id);
    const p = deps.plugins.get(row.plugin_id);
    if (!p) throw new AppError(409, "plugin_not_running", `The ${row.plugin_id} plugin is not running.`);
    const secrets = unseal(deps, row);
    const config = oauthConfig(deps, row, p, secrets);
    const callback = new URL(redirectUri);
    callback.search = currentUrl.search;
    let tokens: oauth.TokenEndpointResponse;
    try {
      tokens = await oauth.authorizationCodeGrant(config, callback, {
        pkceCodeVerifier: openSecret(deps.masterKey, OAUTH_STATE, s.verifier, state),
        expectedState: state,
      });
    } catch (err) {
      throw oauthError(err);
    }
    await storeTokens(deps, trx, row, secrets, tokens);
    await audit(trx, {
      orgId,
      actorType: "user",
      actorId: s.user_id,
      action: "integration.oauth_authorized",
      targetType: "integration_connection",
      targetId: row.id,
      outcome: "success",
    });
    return { connectionId: row.id };
  });
}
