import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { hostname } from "node:os";
import type { AddressInfo } from "node:net";
import type { Config } from "./config/schema.js";
import type { Logger } from "./platform/log.js";
import { buildApp } from "./app.js";
import { MODULES, moduleQueues, permissionCatalog } from "./modules/catalog.js";
import { pluginModules } from "./modules/integrations/integrations.module.js";
import type { Started } from "./modules/module.js";
import { databaseExclusive, KbIndex } from "./modules/kb/kb.index.js";
import { kbDir } from "./modules/kb/kb.service.js";
import { closeParser } from "./modules/kb/parse/parser.js";
import { bindCatalog } from "./platform/auth/permissions.js";
import { Gateway } from "./platform/gateway/gateway.js";
import { DEFAULT_PLUGINS_DIR } from "./platform/paths.js";
import { PluginHost } from "./plugin-host/host.js";
import type { ToolRegistry } from "./platform/tools/registry.js";
import { assertNoPendingRotation, auditRootKey, ensureMasterKey } from "./platform/secrets.js";
import { withDeadline } from "./platform/deadline.js";
import { AiRuntime, type Inference } from "./modules/ai/runtime.js";
import { RemoteInference, serveInference } from "./modules/ai/inference.remote.js";
import { openDatabase, type Database } from "./platform/db/database.js";
import { connectBus, databaseDeadLetters, type Bus } from "./platform/bus/bus.js";
import { startLocalNats, type LocalNats } from "./platform/bus/local-server.js";
import { Outbox, OutboxRelay } from "./platform/bus/outbox.js";
import { EVENTS, type QueueDef } from "./platform/bus/topology.js";
import type { Api } from "./platform/http/api.js";
import type { Engine } from "./modules/assistant/agent.js";
import type { Readiness } from "./modules/system/system.routes.js";

/** A started WorkSynapse process. */
export interface RunningServer {
  /** Base URL of the HTTP server when the web role runs. */
  url?: string;
  db: Database;
  bus: Bus;
  outbox: Outbox;
  readiness: Readiness;
  /** The inference service of the web role. */
  ai?: Inference;
  /** The AI tool registry of the web role (the assistant runs tools through it). */
  tools?: ToolRegistry;
  /** Reads the TLS certificate and key again (SIGHUP); new connections use them. False without TLS. */
  reloadTls(): boolean;
  /**
   * Graceful shutdown in a fixed order, each step bounded; safe to call twice. False when a step failed or
   * timed out (its work is abandoned, to be redelivered).
   */
  stop(): Promise<boolean>;
}

/** Extra wiring for a process: more routes and queues (tests and embedders use it). */
export interface StartOptions {
  routes?: ((api: Api) => void)[];
  queues?: QueueDef[];
  /** The assistant's inference instead of llama.cpp (agent tests use a scripted engine). */
  assistantEngine?: Engine;
}

/** The built-in HTTPS server's certificate chain and key, read from their files (start-up and SIGHUP). */
function readTls(config: Config): { cert: Buffer; key: Buffer } {
  const { certPath, keyPath } = config.http.tls;
  const read = (file: string | undefined, what: string) => {
    try {
      return readFileSync(file as string);
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} ${file}: ${(err as Error).message}`, { cause: err });
    }
  };
  return { cert: read(certPath, "certificate"), key: read(keyPath, "key") };
}

/** Starts the roles of this process: database, bus, then the web server and/or workers. */
export async function startServer(
  config: Config,
  log: Logger,
  opts: StartOptions = {},
): Promise<RunningServer> {
  assertNoPendingRotation(config);
  const db = await openDatabase(config, { migrate: config.database.migrateOnStart, log });
  // Plugins load first: their permissions and queues join the core modules'.
  const plugins = await PluginHost.load(config.integrations.pluginsDir ?? DEFAULT_PLUGINS_DIR, log);
  const modules = [...MODULES, ...pluginModules(plugins)];
  bindCatalog(db.knex, permissionCatalog(modules));
  const gateway = new Gateway({
    enabled: config.integrations.egress,
    allowLoopback: config.integrations.allowLoopback,
    log: log.child({ module: "gateway" }),
  });
  let localNats: LocalNats | undefined;
  let bus: Bus;
  try {
    let url = config.nats.url;
    if (!url) {
      localNats = await startLocalNats({
        bin: config.nats.serverBin,
        dataDir: config.dataDir,
        log,
        port: config.nats.localPort,
      });
      url = localNats.url;
    }
    bus = await connectBus({
      url,
      prefix: config.nats.prefix,
      token: config.nats.token,
      name: `worksynapse-${hostname()}-${process.pid}`,
      log,
      deadLetters: databaseDeadLetters(db.knex),
      extraQueues: [...moduleQueues(modules), ...(opts.queues ?? [])],
    });
  } catch (err) {
    await localNats?.stop();
    await db.close();
    throw err;
  }

  const outbox = new Outbox(config.nats.prefix);
  const relay = new OutboxRelay(db.knex, bus, log.child({ module: "outbox" }));
  relay.start(outbox);
  const readiness: Readiness = {
    draining: false,
    checks: {
      database: () => db.ping(),
      // A real round trip, not the client's idea of its connection (which stays "connected" while reconnecting).
      bus: () => bus.ping(1500),
    },
  };
  const kbIndex = new KbIndex(kbDir(config), databaseExclusive(db.knex));
  // The inference service loads models lazily: web answers chat, the worker embeds documents. With ai.remote
  // they use the inference nodes over the bus; a process with the inference role serves its own to them.
  const uses = config.roles.includes("web") || config.roles.includes("worker");
  const local =
    config.roles.includes("inference") || (uses && !config.ai.remote)
      ? new AiRuntime(config, log.child({ module: "ai" }))
      : undefined;
  const ai = uses ? (config.ai.remote ? new RemoteInference(bus, config) : local) : undefined;
  const started: Started[] = [];
  if (config.roles.includes("inference") && local) {
    const served = serveInference({ bus, runtime: local, config, log: log.child({ module: "inference" }) });
    started.push({ stop: served.stop });
  }
  if (config.roles.includes("worker")) {
    const masterKey = ensureMasterKey(config, log);
    for (const m of modules)
      if (m.worker)
        started.push(
          await m.worker({
            config,
            log,
            knex: db.knex,
            bus,
            outbox,
            masterKey,
            auditKey: auditRootKey(config, log),
            ai: ai ?? null,
            kbIndex,
            gateway,
            plugins,
          }),
        );
  }

  let server: http.Server | https.Server | undefined;
  let baseUrl: string | undefined;
  let tools: ToolRegistry | undefined;
  let closeRealtime: (() => void) | undefined;
  if (config.roles.includes("web")) {
    const masterKey = ensureMasterKey(config, log);
    const built = buildApp({
      config,
      log,
      readiness,
      database: db.kind,
      knex: db.knex,
      masterKey,
      ai,
      bus,
      outbox,
      kbIndex,
      routes: opts.routes,
      assistantEngine: opts.assistantEngine,
      plugins,
      gateway,
    });
    tools = built.tools;
    for (const m of built.modules) if (m.web) started.push(await m.web(built.context));
    server = config.http.tls.certPath
      ? https.createServer(
          { ...readTls(config), minVersion: config.http.tls.minVersion },
          built.app.callback(),
        )
      : http.createServer(built.app.callback());
    if (built.upgrade) server.on("upgrade", built.upgrade);
    closeRealtime = built.closeRealtime;
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server?.once("error", reject);
      server?.listen(config.http.port, config.http.host, () => resolve());
    });
    const addr = server.address() as AddressInfo;
    const host = config.http.host === "0.0.0.0" || config.http.host === "::" ? "localhost" : config.http.host;
    baseUrl = `${config.http.tls.certPath ? "https" : "http"}://${host}:${addr.port}`;
    log.info({ url: baseUrl, roles: config.roles }, "WorkSynapse is serving");
  }
  await db.knex.transaction((trx) =>
    outbox.event(trx, EVENTS[0] as (typeof EVENTS)[0], { node: hostname(), roles: config.roles }),
  );

  log.info({ roles: config.roles, database: db.kind }, "started");

  let stopping: Promise<boolean> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      const t0 = Date.now();
      log.info("shutting down: readiness off");
      readiness.draining = true;
      // Each step is bounded and a failure does not stop the ones after it (a dead bus must not keep the
      // database open); work abandoned here is redelivered by the queue to another process or the next start.
      let clean = true;
      const step = async (name: string, run: () => unknown, ms: number) => {
        try {
          await withDeadline(
            Promise.resolve().then(run),
            ms,
            () => new Error(`did not finish within ${ms} ms`),
          );
        } catch (err) {
          clean = false;
          log.error({ err, step: name }, "shutdown step failed; going on");
        }
      };
      const grace = config.http.shutdownTimeoutMs;
      // Stop accepting new connections; in-flight requests go on.
      const httpClosed = server
        ? new Promise<void>((resolve) => server?.close(() => resolve()))
        : Promise.resolve();
      server?.closeIdleConnections();
      // Live sockets close first (1012): their clients reconnect to another node and resume.
      closeRealtime?.();
      // Schedulers stop, then consumers finish what they hold; the audit checkpointer writes a last checkpoint.
      await step("schedulers", () => Promise.all(started.map((s) => s.stop?.())), 5000);
      await step(
        "workers",
        () => Promise.all(started.flatMap((s) => s.workers ?? []).map((w) => w.stop())),
        grace,
      );
      await step("outbox relay", () => relay.stop(), 5000);
      const timeout = setTimeout(() => {
        log.warn("in-flight requests did not finish in time; closing their connections");
        server?.closeAllConnections();
      }, grace);
      await step("http", () => httpClosed, grace + 1000);
      clearTimeout(timeout);
      await step("ai", () => Promise.all([ai?.close(), ai !== local && local?.close()]), 5000);
      await step("kb index", () => kbIndex.close(), 5000);
      await step("parser", () => closeParser(), 1000);
      await step("bus", () => bus.close(), 5000);
      await step("local nats-server", () => localNats?.stop(), 12000);
      await step("gateway", () => gateway.close(), 2000);
      await step("database", () => db.close(), 5000);
      log.info(
        { ms: Date.now() - t0, clean },
        clean ? "shutdown complete" : "shutdown complete, some work abandoned",
      );
      return clean;
    })());

  const reloadTls = () => {
    if (!(server instanceof https.Server)) return false;
    server.setSecureContext({ ...readTls(config), minVersion: config.http.tls.minVersion });
    return true;
  };
  return { url: baseUrl, db, bus, outbox, readiness, ai, tools, stop, reloadTls };
}
