// The integrations module, and each running plugin as a module of its own (its permissions and AI tools), so
// core modules and plugins register through the one ModuleDefinition.
import type { Knex } from "knex";
import { AppError } from "../../platform/http/errors.js";
import { EgressError } from "../../platform/gateway/gateway.js";
import type { PluginHost } from "../../plugin-host/host.js";
import { askOnce } from "../chat/chat.assistant.js";
import { defineModule, type AppContext, type ModuleDefinition } from "../module.js";
import { connectionFor, enabledPlugin, INTEGRATION_SEALED, webhookSecretOf } from "./integrations.service.js";
import { DeliveryBatcher, HookTargets, startPruner } from "./integrations.ingest.js";
import { registerIntegrationRoutes } from "./integrations.routes.js";
import { processDeliveries, type ReceiverDeps } from "./integrations.webhooks.js";
import { WEBHOOK_QUEUE } from "./integrations.queue.js";

/** The integrations module's permissions. */
export const INTEGRATIONS_PERMISSIONS = {
  "integrations.manage": {
    description:
      "Enable plugins, configure integration connections and their credentials, read webhook deliveries",
    roles: ["admin" as const],
  },
};

type Deps = ReceiverDeps & { outbox: AppContext["outbox"]; knex: Knex };
const made = new WeakMap<AppContext, Deps | null>();

/** The module's dependencies from the app's context, made once per app (null without a database). */
function depsOf(app: AppContext): Deps | null {
  if (made.has(app)) return made.get(app) ?? null;
  let deps: Deps | null = null;
  if (app.knex && app.masterKey) {
    const base = {
      knex: app.knex,
      config: app.config,
      masterKey: app.masterKey,
      gateway: app.gateway,
      plugins: app.plugins,
      outbox: app.outbox,
      log: app.log.child({ module: "integrations" }),
    };
    deps = {
      ...base,
      hooks: new HookTargets(app.knex, (row) => webhookSecretOf(base, row)),
      batcher: new DeliveryBatcher(app.knex, app.outbox),
    };
  }
  made.set(app, deps);
  return deps;
}

export const integrationsModule = defineModule({
  id: "integrations",
  permissions: INTEGRATIONS_PERMISSIONS,
  queues: [WEBHOOK_QUEUE],
  sealed: INTEGRATION_SEALED,
  worker: ({ knex, config, log }) => ({
    stop: startPruner({
      knex,
      days: config.integrations.retentionDays,
      log: log.child({ module: "integrations" }),
    }),
  }),
  routes: (api, app) => registerIntegrationRoutes(api, depsOf(app)),
  // Deliveries are processed where the assistant runs (web role): a chat slash command asks it.
  web: async (app) => {
    const deps = depsOf(app);
    if (!deps || !app.bus) return {};
    const agent = app.agent();
    const ask = agent
      ? (caller: Parameters<typeof askOnce>[1], q: string, source: string) =>
          askOnce(agent, caller, q, source)
      : null;
    return {
      workers: [await app.bus.work(WEBHOOK_QUEUE, (job) => processDeliveries({ ...deps, ask }, job))],
    };
  },
});

/** Each running plugin as a module: its manifest's permissions, and its tools in the one registry. */
export function pluginModules(host: PluginHost): ModuleDefinition[] {
  return host.running().map((p) =>
    defineModule({
      id: p.id,
      permissions: p.manifest.permissions,
      tools: (registry, app) => {
        const deps = depsOf(app);
        for (const t of p.tools)
          registry.register({
            name: t.name,
            description: t.description,
            permission: t.permission,
            effect: t.effect,
            input: t.input,
            run: async ({ caller, trx }, input) => {
              if (!deps) throw AppError.unavailable("Integrations need a database.");
              await enabledPlugin(trx, host, p.id);
              try {
                return await t.run(
                  {
                    orgId: caller.orgId,
                    userId: caller.userId,
                    connection: (idOrName) => connectionFor(deps, trx, p.id, idOrName),
                  },
                  input,
                );
              } catch (err) {
                if (err instanceof AppError || err instanceof EgressError) throw err;
                // A plugin's own failure is its message to the model (plugins say what went wrong, not secrets).
                throw new AppError(
                  422,
                  "plugin_error",
                  `${p.manifest.name}: ${(err as Error).message}`.slice(0, 300),
                );
              }
            },
          });
      },
    }),
  );
}
