import { existsSync } from "node:fs";
import Koa from "koa";
import type { Config } from "./config/schema.js";
import type { Logger } from "./platform/log.js";
import { Api } from "./platform/http/api.js";
import { createHttpMetrics } from "./platform/http/metrics.js";
import { requestEnvelope } from "./platform/http/envelope.js";
import { serveUi } from "./platform/http/static.js";
import { DEFAULT_UI_DIR, VERSION } from "./platform/paths.js";
import { registerSystemRoutes, type Readiness } from "./modules/system/system.routes.js";
import { Authenticator } from "./modules/identity/auth.js";
import { createLimiters } from "./modules/identity/identity.routes.js";
import type { Knex } from "knex";
import type { Inference } from "./modules/ai/runtime.js";
import { MODULES, permissionCatalog } from "./modules/catalog.js";
import { pluginModules } from "./modules/integrations/integrations.module.js";
import type { AppContext, ModuleDefinition } from "./modules/module.js";
import { ToolRegistry } from "./platform/tools/registry.js";
import { actorOf, audit } from "./modules/identity/audit.js";
import type { Bus } from "./platform/bus/bus.js";
import { installClientInfo } from "./platform/http/client.js";
import { Outbox } from "./platform/bus/outbox.js";
import { KbIndex } from "./modules/kb/kb.index.js";
import { kbDir } from "./modules/kb/kb.service.js";
import { ChatHub } from "./modules/chat/chat.socket.js";
import { llamaEngine, type AgentDeps, type Engine } from "./modules/assistant/agent.js";
import { assistantOnMention, chatSink } from "./modules/chat/chat.assistant.js";
import { bindCatalog } from "./platform/auth/permissions.js";
import { Gateway } from "./platform/gateway/gateway.js";
import { PluginHost } from "./plugin-host/host.js";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";

/** What the app needs from the process around it. */
export interface AppDeps {
  config: Config;
  log: Logger;
  readiness: Readiness;
  database: "postgres" | "pglite";
  /** The server's database (application role); null builds an app for its OpenAPI document only. */
  knex: Knex | null;
  /** Signs access tokens; required with a database. */
  masterKey?: string;
  /** The local inference service (null: AI routes answer 503). */
  ai?: Inference | null;
  /** The bus (ephemeral progress events) and the outbox (jobs after commit); null in an app built for docs. */
  bus?: Bus | null;
  outbox?: Outbox | null;
  /** The knowledge base's index. */
  kbIndex?: KbIndex | null;
  /** The assistant's inference (default: llama.cpp through `ai`); agent tests pass a scripted engine. */
  assistantEngine?: Engine;
  /** Route registrations beyond the built-in modules. */
  routes?: ((api: Api) => void)[];
  /** The plugins this process loaded (default: none). */
  plugins?: PluginHost;
  /** The integration gateway (default: one made from the configuration). */
  gateway?: Gateway;
}

/** The built app: Koa instance (not listening), its API registry, and its metrics registry. */
export interface BuiltApp {
  app: Koa;
  api: Api;
  openapi: () => unknown;
  /** The AI tools every module registered. */
  tools: ToolRegistry;
  /** The HTTP server's `upgrade` handler (WebSocket at /ws); absent in an app built for docs. */
  upgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Closes live connections (shutdown). */
  closeRealtime(): void;
  /** What every module registered with, and the modules (core, then plugins), for the web role's consumers. */
  context: AppContext;
  modules: ModuleDefinition[];
}

/** Builds the Koa app with the full middleware stack and every module's routes; does not listen. */
export function buildApp(deps: AppDeps): BuiltApp {
  const { config, log } = deps;
  const app = new Koa({ proxy: config.http.trustProxy });
  installClientInfo(app, config.http);
  app.silent = true; // errors are logged by our middleware, once, with the request id
  const metrics = createHttpMetrics();
  const api = new Api(config.http.bodyLimit);
  let spec: unknown;
  const openapi = () => (spec ??= api.document({ title: "WorkSynapse", version: VERSION }));

  app.use(requestEnvelope(log, metrics, (path) => api.allowedMethods(path)));

  registerSystemRoutes(api, {
    readiness: deps.readiness,
    metrics,
    info: { name: "WorkSynapse", version: VERSION, roles: config.roles, database: deps.database },
    openapi,
    metricsToken: config.metrics.token,
  });

  const authenticator =
    deps.knex && deps.masterKey ? new Authenticator(deps.knex, config, deps.masterKey) : null;
  const limiters = deps.knex ? createLimiters(deps.knex, config, log.child({ module: "identity" })) : null;
  if (deps.knex && authenticator && limiters) {
    api.setAuth({ knex: deps.knex, identify: (ctx) => authenticator.identify(ctx), limit: limiters.api });
  }
  const plugins = deps.plugins ?? PluginHost.empty();
  const modules = [...MODULES, ...pluginModules(plugins)];
  const permissions = permissionCatalog(modules);
  if (deps.knex) bindCatalog(deps.knex, permissions);
  const outbox = deps.outbox ?? new Outbox(config.nats.prefix);
  const chatHub =
    deps.knex && deps.bus && authenticator
      ? new ChatHub({
          knex: deps.knex,
          bus: deps.bus,
          config,
          authenticator,
          app,
          log: log.child({ module: "chat" }),
        })
      : null;
  const tools = new ToolRegistry(permissions, log, (trx, caller, details) =>
    audit(trx, {
      ...actorOf(caller),
      action: "ai.tool_call",
      targetType: "tool",
      outcome: "success",
      details,
    }),
  );
  const engine = deps.assistantEngine ?? (deps.ai ? llamaEngine(deps.ai, config) : null);
  // The assistant's loop is made once every module has registered its tools.
  let agent: AgentDeps | null = null;
  const context: AppContext = {
    config,
    log,
    knex: deps.knex,
    masterKey: deps.masterKey,
    bus: deps.bus ?? null,
    outbox,
    ai: deps.ai ?? null,
    permissions,
    authenticator,
    limiters,
    kb: {
      config,
      knex: deps.knex,
      bus: deps.bus ?? null,
      outbox,
      index: deps.kbIndex ?? new KbIndex(kbDir(config)),
      ai: deps.ai ?? null,
    },
    chat: { notify: chatHub ? chatHub.notify : () => undefined },
    engine,
    agent: () => agent,
    tools,
    gateway:
      deps.gateway ??
      new Gateway({
        enabled: config.integrations.egress,
        allowLoopback: config.integrations.allowLoopback,
        log: log.child({ module: "gateway" }),
      }),
    plugins,
  };
  for (const m of modules) m.tools?.(tools, context);
  agent =
    deps.knex && engine
      ? {
          knex: deps.knex,
          config,
          tools,
          engine,
          log: log.child({ module: "assistant" }),
          sinkFor: chatHub ? chatSink(deps.knex, chatHub.notify) : undefined,
        }
      : null;
  // The assistant answers @assistant in chat.
  if (chatHub)
    chatHub.afterPost = assistantOnMention(() => agent, chatHub.notify, log.child({ module: "chat" }));
  for (const m of modules) m.routes?.(api, context);

  for (const register of deps.routes ?? []) register(api);
  app.use(api.middleware());
  const uiDir = config.http.uiDir ?? DEFAULT_UI_DIR;
  if (existsSync(uiDir)) app.use(serveUi(uiDir));
  else log.warn({ uiDir }, "no built UI found; run `npm run build` to serve the web UI");
  return {
    app,
    api,
    openapi,
    tools,
    upgrade: chatHub ? (req, socket, head) => void chatHub.handleUpgrade(req, socket, head) : undefined,
    closeRealtime: () => chatHub?.close(),
    context,
    modules,
  };
}
