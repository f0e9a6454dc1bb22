import { z } from "zod";

/** plugin.json: what a plugin is and what it asks the host for. Validated before the plugin loads. */
export const manifestSchema = z.strictObject({
  id: z.string().regex(/^[a-z][a-z0-9-]{1,40}$/),
  name: z.string().min(1).max(100),
  version: z.string().regex(/^\d+\.\d+\.\d+/),
  description: z.string().max(500).default(""),
  /** Hosts the plugin's HTTP client may reach (through the integration gateway); nothing else. */
  egress: z.array(z.string().min(1)).default([]),
  /** Permissions the plugin declares for its routes and tools. */
  permissions: z.array(z.string().regex(/^[a-z][a-z0-9_.-]+$/)).default([]),
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

/** An HTTP request a plugin makes; the host sends it through the integration gateway. */
export interface PluginHttpRequest {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  timeoutMs?: number;
}

/** What a change does to the world: the same three effects as core's tool registry. */
export type ToolEffect = "read" | "write" | "external";

/** Who a plugin's tool runs as: the asking person, in their organization (the host checks the permission). */
export interface PluginToolCaller {
  orgId: string;
  userId: string;
}

/**
 * An AI tool a plugin offers: the shape of core's tool registry (name, description, permission, effect, zod
 * input, run). "write" and "external" tools run only once a person or the organization's policy approved the
 * call; anything that changes a remote system is "external".
 */
export interface PluginTool<I extends z.ZodType = z.ZodType, O = unknown> {
  /** `<plugin id>.<verb>`, e.g. gitlab.create_issue. */
  name: string;
  description: string;
  permission: string;
  effect: ToolEffect;
  /** Zod schema of the input (the host rejects extra properties). */
  input: I;
  run(caller: PluginToolCaller, input: z.infer<I>): Promise<O>;
}

/** The narrow context the host hands a plugin: nothing of core leaks through it. */
export interface PluginContext {
  manifest: PluginManifest;
  log: PluginLogger;
  /** The plugin's secrets for the calling organization (decrypted by the host). */
  secret(orgId: string, name: string): Promise<string | undefined>;
  /** HTTP through the integration gateway: only hosts in the manifest's egress list are reachable. */
  http(req: PluginHttpRequest): Promise<{ status: number; headers: Record<string, string>; body: unknown }>;
  /** Publishes an event under `plugins.<id>.`. */
  publish(event: string, payload: unknown): Promise<void>;
  /** Registers an AI tool (its name must start with the plugin's id). */
  tool<I extends z.ZodType>(tool: PluginTool<I>): void;
}

/** A plugin: its manifest id and what it does when the host starts it. */
export interface PluginDefinition {
  id: string;
  setup(ctx: PluginContext): Promise<void> | void;
  teardown?(): Promise<void> | void;
}

/** Declares a plugin (the default export of its src/index.ts). */
export function definePlugin(def: PluginDefinition): PluginDefinition {
  return def;
}
