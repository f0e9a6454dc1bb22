// One registration interface for every part of the server: each core module, and each plugin through the plugin
// host, is a ModuleDefinition. app.ts and server.ts iterate the list in catalog.ts; nothing is wired by hand.
import type { Knex } from "knex";
import type { Config } from "../config/schema.js";
import type { PermissionCatalog, PermissionSpec } from "../platform/auth/permissions.js";
import type { Bus, Worker } from "../platform/bus/bus.js";
import type { Outbox } from "../platform/bus/outbox.js";
import type { QueueDef } from "../platform/bus/topology.js";
import type { Gateway } from "../platform/gateway/gateway.js";
import type { Api } from "../platform/http/api.js";
import type { Logger } from "../platform/log.js";
import type { ToolRegistry } from "../platform/tools/registry.js";
import type { Inference } from "./ai/runtime.js";
import type { AgentDeps, Engine } from "./assistant/agent.js";
import type { ChatNotifier } from "./chat/chat.service.js";
import type { Authenticator } from "./identity/auth.js";
import type { Limiters } from "./identity/identity.routes.js";
import type { KbRouteDeps } from "./kb/kb.routes.js";
import type { KbIndex } from "./kb/kb.index.js";
import type { PluginHost } from "../plugin-host/host.js";
import type { SealedColumn } from "../platform/secrets.js";

/** What the web role hands every module when it registers routes and tools. */
export interface AppContext {
  config: Config;
  log: Logger;
  /** Null in an app built for its OpenAPI document only. */
  knex: Knex | null;
  masterKey?: string;
  bus: Bus | null;
  outbox: Outbox;
  ai: Inference | null;
  permissions: PermissionCatalog;
  authenticator: Authenticator | null;
  limiters: Limiters | null;
  kb: KbRouteDeps;
  chat: { notify: ChatNotifier };
  /** The assistant's inference (null: AI routes answer 503). */
  engine: Engine | null;
  /** The assistant's loop; set once every module has registered its tools. */
  agent(): AgentDeps | null;
  tools: ToolRegistry;
  gateway: Gateway;
  plugins: PluginHost;
}

/** What the worker role hands every module. */
export interface WorkerContext {
  config: Config;
  log: Logger;
  knex: Knex;
  bus: Bus;
  outbox: Outbox;
  masterKey: string;
  /** What the audit chain's MACs and checkpoints derive from (platform/secrets.ts `auditRootKey`). */
  auditKey: string;
  ai: Inference | null;
  kbIndex: KbIndex;
  gateway: Gateway;
  plugins: PluginHost;
}

/** What a module started in the worker role: queue consumers, and anything else to stop at shutdown. */
export interface Started {
  workers?: Worker[];
  /** Stops schedulers and loops (called before the consumers stop, while the database is open). */
  stop?: () => void | Promise<void>;
}

/** A module: what it declares (permissions, queues) and how it joins each role. */
export interface ModuleDefinition {
  /** Short name; permission codes and tool names of the module start with their own prefixes. */
  id: string;
  permissions?: Record<string, PermissionSpec>;
  /** Work queues (the bus creates a durable consumer for each). */
  queues?: QueueDef[];
  /** Columns of sealed secrets (`worksynapse secrets rotate` re-seals them with a new master key). */
  sealed?: SealedColumn[];
  /** AI tools, registered before any route (the assistant's routes need the full registry). */
  tools?(tools: ToolRegistry, app: AppContext): void;
  routes?(api: Api, app: AppContext): void;
  worker?(ctx: WorkerContext): Promise<Started> | Started;
  /** What the module starts in the web role besides routes (consumers that need the assistant). */
  web?(app: AppContext): Promise<Started> | Started;
}

/** Declares a module (identity function, for types). */
export const defineModule = (def: ModuleDefinition): ModuleDefinition => def;
