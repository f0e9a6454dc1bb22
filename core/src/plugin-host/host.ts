// The plugin host: finds plugins under plugins/*, validates each manifest, imports its definePlugin export and
// runs setup() with a narrow context that only collects what the plugin offers (tools, a connection test, a
// webhook handler). A plugin that is invalid or whose setup throws is reported and left out; the rest start.
// What the collected parts do at run time (connections, the gateway, deliveries) is the integrations module's.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import {
  parseManifest,
  type Connection,
  type DeliveryScope,
  type PluginDefinition,
  type PluginManifest,
  type PluginTool,
  type TestReport,
  type WebhookAck,
  type WebhookDelivery,
} from "@worksynapse/plugin-sdk";
import type { Logger } from "../platform/log.js";

/** A plugin as the host found it. */
export interface LoadedPlugin {
  /** The folder's name when the manifest could not be read. */
  id: string;
  dir: string;
  manifest: PluginManifest | null;
  status: "running" | "failed" | "invalid";
  /** Why it is not running. */
  error?: string;
  definition?: PluginDefinition;
  tools: PluginTool[];
  test?: (connection: Connection) => Promise<TestReport>;
  webhooks?: {
    handle: (delivery: WebhookDelivery, scope: DeliveryScope) => Promise<void>;
    ack?: (delivery: WebhookDelivery) => WebhookAck;
  };
}

/** A running plugin (what the integrations module works with). */
export type RunningPlugin = LoadedPlugin & { manifest: PluginManifest; definition: PluginDefinition };

/** The loaded plugins of this process. */
export class PluginHost {
  private constructor(private readonly plugins: LoadedPlugin[]) {}

  /** A host with no plugins (an app built for its OpenAPI document, unit tests). */
  static empty(): PluginHost {
    return new PluginHost([]);
  }

  /** Loads every plugin in `dir` (each subfolder with a plugin.json); never throws for a plugin's fault. */
  static async load(dir: string, log: Pick<Logger, "info" | "error" | "child">): Promise<PluginHost> {
    const found: LoadedPlugin[] = [];
    // Each folder (or link to one: an installation may link plugins in from elsewhere) with a plugin.json.
    const folders = existsSync(dir)
      ? readdirSync(dir)
          .filter((name) => existsSync(path.join(dir, name, "plugin.json")))
          .sort()
      : [];
    for (const folder of folders) {
      const p = await loadOne(path.join(dir, folder), folder, log);
      if (found.some((q) => q.id === p.id && q.status === "running"))
        Object.assign(p, { status: "invalid", error: `another plugin already has the id ${p.id}` });
      if (p.status === "running") log.info({ plugin: p.id, version: p.manifest?.version }, "plugin started");
      else log.error({ plugin: p.id, error: p.error }, "plugin disabled");
      found.push(p);
    }
    return new PluginHost(found);
  }

  /** Every plugin found, running or not. */
  list(): LoadedPlugin[] {
    return this.plugins;
  }

  /** Running plugins. */
  running(): RunningPlugin[] {
    return this.plugins.filter((p): p is RunningPlugin => p.status === "running");
  }

  /** A running plugin by id. */
  get(id: string): RunningPlugin | undefined {
    return this.running().find((p) => p.id === id);
  }
}

async function loadOne(dir: string, folder: string, log: Pick<Logger, "child">): Promise<LoadedPlugin> {
  const base: LoadedPlugin = { id: folder, dir, manifest: null, status: "invalid", tools: [] };
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path.join(dir, "plugin.json"), "utf8"));
  } catch (err) {
    return { ...base, error: `plugin.json is not valid JSON: ${(err as Error).message}` };
  }
  const parsed = parseManifest(raw);
  if (!parsed.ok) return { ...base, error: `plugin.json: ${parsed.problems.join("; ")}` };
  const manifest = parsed.manifest;
  const p: LoadedPlugin = { ...base, id: manifest.id, manifest };
  const entry = path.resolve(dir, manifest.main);
  if (!entry.startsWith(dir + path.sep)) return { ...p, error: "main must be inside the plugin's folder" };
  let def: PluginDefinition;
  try {
    const mod = (await import(pathToFileURL(entry).href)) as { default?: PluginDefinition };
    if (!mod.default || typeof mod.default.setup !== "function")
      return { ...p, error: `${manifest.main} has no definePlugin default export` };
    def = mod.default;
  } catch (err) {
    return { ...p, status: "failed", error: `could not load ${manifest.main}: ${(err as Error).message}` };
  }
  if (def.id !== manifest.id)
    return { ...p, error: `the code's id ${def.id} is not the manifest's ${manifest.id}` };
  if (typeof (def.connection?.settings as { safeParse?: unknown } | undefined)?.safeParse !== "function")
    return { ...p, error: "connection.settings must be a zod schema" };
  const loaded: LoadedPlugin = { ...p, definition: def, status: "running" };
  const pluginLog = log.child({ plugin: manifest.id });
  try {
    await def.setup({
      manifest,
      log: pluginLog,
      tool: (t) => {
        if (!t.name.startsWith(`${manifest.id}.`))
          throw new Error(`tool ${t.name} must start with ${manifest.id}.`);
        if (!(t.permission in manifest.permissions))
          throw new Error(`tool ${t.name}: permission ${t.permission} is not in plugin.json`);
        if (!["read", "write", "external"].includes(t.effect)) throw new Error(`tool ${t.name}: bad effect`);
        loaded.tools.push(t as unknown as PluginTool);
      },
      test: (check) => {
        loaded.test = check;
      },
      webhooks: (handle, ack) => {
        if (!def.connection.webhook) throw new Error("webhooks need connection.webhook in the definition");
        loaded.webhooks = { handle, ack };
      },
    });
  } catch (err) {
    return {
      ...p,
      status: "failed",
      error: `setup failed: ${(err as Error).message}`.slice(0, 500),
      tools: [],
    };
  }
  return loaded;
}
