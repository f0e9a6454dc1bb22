// The plugin contract. A plugin is a workspace package under plugins/<id> with a plugin.json (the manifest) and
// a default export made with definePlugin. It never imports from core: everything it may do comes through the
// PluginContext the host hands to setup().
import { z } from "zod";

/** Roles a plugin's permission is given to by default (owners hold every permission). */
export type BuiltinRole = "admin" | "member" | "guest" | "auditor";

const permissionSpec = z.strictObject({
  description: z.string().min(1).max(200),
  roles: z.array(z.enum(["admin", "member", "guest", "auditor"])).default([]),
});

/** plugin.json: what a plugin is and what it asks the host for. Validated before the plugin loads. */
export const manifestSchema = z
  .strictObject({
    id: z.string().regex(/^[a-z][a-z0-9_]{1,40}$/, "lowercase letters, digits and _ (2-41 characters)"),
    name: z.string().min(1).max(100),
    version: z.string().regex(/^\d+\.\d+\.\d+/, "a semantic version"),
    description: z.string().max(500).default(""),
    /** The module's entry, relative to the package (the compiled definePlugin default export). */
    main: z.string().min(1).default("dist/index.js"),
    /** Hosts the plugin may reach besides its connections' own (through the integration gateway); rarely needed. */
    egress: z.array(z.string().min(1)).default([]),
    /** Permissions the plugin's tools need, `<id>.<name>`, with the built-in roles that hold them. */
    permissions: z.record(z.string(), permissionSpec).default({}),
  })
  .superRefine((m, ctx) => {
    for (const code of Object.keys(m.permissions))
      if (!code.startsWith(`${m.id}.`) || !/^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$/.test(code))
        ctx.addIssue({ code: "custom", path: ["permissions", code], message: `must be ${m.id}.<name>` });
  });

/** A validated plugin manifest. */
export type PluginManifest = z.infer<typeof manifestSchema>;

/** Parses a manifest, returning readable problems instead of throwing. */
export function parseManifest(
  raw: unknown,
): { ok: true; manifest: PluginManifest } | { ok: false; problems: string[] } {
  const r = manifestSchema.safeParse(raw);
  if (r.success) return { ok: true, manifest: r.data };
  return { ok: false, problems: r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`) };
}

/** The logger a plugin gets: every line carries the plugin's id. */
export interface PluginLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** How a connection authenticates its outbound calls; the host keeps the secrets and adds the header. */
export type AuthKind = "none" | "token" | "basic" | "oauth2" | "client_credentials";

/** How inbound webhooks of a connection prove where they come from (see docs/integrations.md). */
export type WebhookKind = "github" | "gitlab" | "basic" | "shared-secret" | "hmac" | "mattermost" | "slack";

/** What a plugin's connections look like: the admin page renders its form from this. */
export interface ConnectionSpec<S extends z.ZodType = z.ZodType> {
  /** Credential kinds the remote product accepts, the first being the default. */
  auth: AuthKind[];
  /** Header and prefix of a token (default `Authorization: Bearer <token>`; GitLab: PRIVATE-TOKEN, no prefix). */
  tokenHeader?: { name: string; prefix: string };
  /** The connection's own settings (not secret), a zod object; published as JSON Schema for the form. */
  settings: S;
  /** Inbound webhooks, when the remote side sends them. */
  webhook?: { kind: WebhookKind; header?: string };
}

/** An HTTP request a plugin makes through a connection (the URL is relative to its base URL, or absolute). */
export interface PluginHttpRequest {
  method: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
  url: string;
  headers?: Record<string, string>;
  /** Sent as JSON unless a string. */
  body?: unknown;
  timeoutMs?: number;
  /** Makes a call that changes data safe to retry (sent as Idempotency-Key). */
  idempotencyKey?: string;
  /** Leave out the connection's credentials (e.g. an OAuth app's public endpoints). */
  anonymous?: boolean;
}

/** An answer from the remote side (any status: the plugin decides what a 4xx means). */
export interface PluginHttpResponse {
  status: number;
  headers: Record<string, string>;
  /** Parsed JSON when the answer is JSON, else the text. */
  body: unknown;
}

/** A configured connection, as a plugin sees it: its settings and a client that reaches only its hosts. */
export interface Connection<S = Record<string, unknown>> {
  id: string;
  orgId: string;
  name: string;
  baseUrl: string;
  settings: S;
  /** Calls through the integration gateway with the connection's credentials. */
  http(req: PluginHttpRequest): Promise<PluginHttpResponse>;
}

/** What the test button shows: one line per thing checked. */
export interface TestReport {
  ok: boolean;
  checks: { name: string; ok: boolean; detail: string }[];
}

/** A verified inbound delivery. */
export interface WebhookDelivery {
  id: string;
  /** The event type as the provider names it (X-GitHub-Event, object_kind, a slash command...). */
  event: string;
  headers: Record<string, string>;
  /** Parsed JSON or form fields; the raw text when neither. */
  payload: unknown;
}

/** What processing a delivery may do; its effects commit together with the delivery's "processed" mark. */
export interface DeliveryScope {
  connection: Connection;
  /** Publishes `plugins.<id>.<event>` on the bus (after the processing commits). */
  publish(event: string, payload: unknown): Promise<void>;
  /** Keeps an event in the organization's integration event log (shown in the admin page). */
  record(type: string, summary: string, payload: unknown): Promise<void>;
  /**
   * Asks the assistant as the organization's person with this email (their permissions apply; a step that
   * needs approval waits for it in WorkSynapse); the answer's text with its sources.
   */
  ask(email: string, question: string): Promise<string>;
}

/** What effect a tool has: the same three as core's tool registry. */
export type ToolEffect = "read" | "write" | "external";

/** Who a plugin's tool runs as (the host has checked the permission) and the connections it may use. */
export interface PluginToolCaller {
  orgId: string;
  userId: string;
  /** The organization's connection of this plugin by id or name (the only one when omitted). */
  connection(idOrName?: string): Promise<Connection>;
}

/**
 * An AI tool a plugin offers: the shape of core's tool registry (name, description, permission, effect, zod
 * input, run). "write" and "external" tools run only once a person or the organization's policy approved the
 * call; anything that changes a remote system is "external".
 */
export interface PluginTool<I extends z.ZodType = z.ZodType, O = unknown> {
  /** `<plugin id>.<verb>`, e.g. mattermost.post_message. */
  name: string;
  description: string;
  /** One of the manifest's permissions. */
  permission: string;
  effect: ToolEffect;
  /** Zod schema of the input. */
  input: I;
  run(caller: PluginToolCaller, input: z.infer<I>): Promise<O>;
}

/** The quick answer to a webhook sender, before processing (slash commands show it to the person). */
export interface WebhookAck {
  status?: number;
  body?: unknown;
}

/** The narrow context the host hands a plugin: nothing of core leaks through it. */
export interface PluginContext {
  manifest: PluginManifest;
  log: PluginLogger;
  /** Registers an AI tool (its name starts with the plugin's id, its permission is the manifest's). */
  tool<I extends z.ZodType>(tool: PluginTool<I>): void;
  /** What the connection test checks (default: a GET of the base URL answers below 500). */
  test(check: (connection: Connection) => Promise<TestReport>): void;
  /**
   * Handles verified deliveries, from the bus, exactly once each. `ack` (optional, no I/O) chooses the
   * immediate answer to the sender; the default is 202 with the delivery id.
   */
  webhooks(
    handle: (delivery: WebhookDelivery, scope: DeliveryScope) => Promise<void>,
    ack?: (delivery: WebhookDelivery) => WebhookAck,
  ): void;
}

/** A plugin: its id (the manifest's), its connections, and what it does when the host starts it. */
export interface PluginDefinition<S extends z.ZodType = z.ZodType> {
  id: string;
  connection: ConnectionSpec<S>;
  setup(ctx: PluginContext): Promise<void> | void;
}

/** Declares a plugin (the default export of its src/index.ts). */
export function definePlugin<S extends z.ZodType>(def: PluginDefinition<S>): PluginDefinition<S> {
  return def;
}

/** Parses a JSON or form body as senders send it (JSON, application/x-www-form-urlencoded), else the text. */
export function parseBody(contentType: string, raw: string): unknown {
  if (/json/i.test(contentType)) {
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      return raw;
    }
  }
  if (/x-www-form-urlencoded/i.test(contentType)) {
    const out: Record<string, string> = {};
    for (const [k, v] of new URLSearchParams(raw)) out[k] = v;
    return out;
  }
  return raw;
}
