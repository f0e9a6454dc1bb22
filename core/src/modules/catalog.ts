// The list of core modules, in the order their routes are registered. Code that needs the permission catalog
// gets it from its database handle (platform/auth/permissions.ts `catalogOf`), never by importing this list,
// so no module imports the catalog and the list may import every module.
import { PermissionCatalog } from "../platform/auth/permissions.js";
import type { QueueDef } from "../platform/bus/topology.js";
import { defineModule, type ModuleDefinition } from "./module.js";
import { IDENTITY_PERMISSIONS } from "./identity/identity.permissions.js";
import { registerIdentityRoutes } from "./identity/identity.routes.js";
import { startCheckpointer } from "./identity/audit.anchor.js";
import { registerSsoRoutes } from "./sso/sso.routes.js";
import { registerBackupRoutes } from "./system/backups.routes.js";
import { startBackupScheduler } from "./system/backups.service.js";
import { SSO_SECRET_PURPOSE } from "./sso/sso.service.js";
import { handleSyncJob, SSO_SYNC_QUEUE, startSyncScheduler } from "./sso/sso.sync.js";
import { AI_PERMISSIONS } from "./ai/ai.permissions.js";
import { registerAiRoutes } from "./ai/ai.routes.js";
import { registerToolRoutes } from "./ai/tools.routes.js";
import { NOTES_PERMISSIONS } from "./notes/notes.permissions.js";
import { registerNotesRoutes } from "./notes/notes.routes.js";
import { registerNotesTools } from "./notes/notes.tools.js";
import { registerNotificationRoutes } from "./notifications/notifications.routes.js";
import { CHAT_PERMISSIONS } from "./chat/chat.permissions.js";
import { registerChatRoutes } from "./chat/chat.routes.js";
import { KB_PERMISSIONS } from "./kb/kb.permissions.js";
import { KB_INDEX_QUEUE } from "./kb/kb.events.js";
import { registerKbRoutes } from "./kb/kb.routes.js";
import { registerKbTools } from "./kb/kb.tools.js";
import { handleIndexJob } from "./kb/kb.ingest.js";
import { startStallWatchdog } from "./kb/kb.watchdog.js";
import { repairIndexes } from "./kb/kb.repair.js";
import { ASSISTANT_PERMISSIONS } from "./assistant/assistant.permissions.js";
import { registerAssistantRoutes } from "./assistant/assistant.routes.js";
import { registerAssistantTools } from "./assistant/assistant.tools.js";
import { PROJECTS_PERMISSIONS } from "./projects/projects.permissions.js";
import { registerProjectRoutes } from "./projects/projects.routes.js";
import { registerProjectTools } from "./projects/projects.tools.js";
import { startReminderScheduler } from "./projects/projects.reminders.js";
import { integrationsModule } from "./integrations/integrations.module.js";

/** Every core module. */
export const MODULES: ModuleDefinition[] = [
  defineModule({
    id: "identity",
    permissions: IDENTITY_PERMISSIONS,
    routes: (api, app) => registerIdentityRoutes(api, app),
    worker: ({ knex, config, auditKey, log }) => ({
      stop: startCheckpointer({ knex, config, masterKey: auditKey, log: log.child({ module: "audit" }) }),
    }),
  }),
  defineModule({
    id: "backups",
    routes: (api, app) => registerBackupRoutes(api, { config: app.config, bus: app.bus }),
    worker: ({ knex, config, bus, log }) => ({
      stop: startBackupScheduler({ knex, config, bus, log: log.child({ module: "backup" }) }),
    }),
  }),
  defineModule({
    id: "sso",
    queues: [SSO_SYNC_QUEUE],
    sealed: [{ table: "sso_providers", column: "secret", purpose: SSO_SECRET_PURPOSE, context: "id" }],
    routes: (api, app) => registerSsoRoutes(api, app),
    worker: async ({ knex, bus, outbox, masterKey, log }) => {
      const ssoLog = log.child({ module: "sso" });
      return {
        workers: [
          await bus.work(SSO_SYNC_QUEUE, (job) => handleSyncJob({ knex, masterKey, log: ssoLog }, job)),
        ],
        stop: startSyncScheduler({ knex, outbox, log: ssoLog }),
      };
    },
  }),
  defineModule({
    id: "ai",
    permissions: AI_PERMISSIONS,
    routes: (api, app) => {
      registerAiRoutes(api, { knex: app.knex, config: app.config, runtime: app.ai });
      registerToolRoutes(api, app.tools);
    },
  }),
  defineModule({
    id: "notes",
    permissions: NOTES_PERMISSIONS,
    tools: (tools) => registerNotesTools(tools),
    routes: (api) => registerNotesRoutes(api),
  }),
  defineModule({ id: "notifications", routes: (api) => registerNotificationRoutes(api) }),
  defineModule({
    id: "chat",
    permissions: CHAT_PERMISSIONS,
    routes: (api, app) =>
      registerChatRoutes(api, app.chat.notify, {
        knex: app.knex,
        config: app.config,
        agent: app.agent,
        log: app.log.child({ module: "chat" }),
      }),
  }),
  defineModule({
    id: "kb",
    permissions: KB_PERMISSIONS,
    queues: [KB_INDEX_QUEUE],
    tools: (tools, app) => registerKbTools(tools, app.kb),
    routes: (api, app) => registerKbRoutes(api, app.kb),
    worker: async ({ knex, bus, outbox, config, ai, kbIndex, log }) => {
      const kbLog = log.child({ module: "kb" });
      // In the background: a damaged organization table is rebuilt, the rest of the start does not wait.
      void repairIndexes({ knex, index: kbIndex, outbox, log: kbLog }).catch((err: unknown) =>
        kbLog.error({ err }, "the knowledge-base index check failed"),
      );
      return {
        stop: startStallWatchdog({ knex, outbox, config, log: kbLog }),
        workers: [
          await bus.work(KB_INDEX_QUEUE, (job) =>
            handleIndexJob({ config, index: kbIndex, outbox, ai, knex, bus, log: kbLog }, job),
          ),
        ],
      };
    },
  }),
  defineModule({
    id: "assistant",
    permissions: ASSISTANT_PERMISSIONS,
    tools: (tools) => registerAssistantTools(tools),
    routes: (api, app) =>
      registerAssistantRoutes(api, {
        config: app.config,
        tools: app.tools,
        agent: app.agent(),
        log: app.log.child({ module: "assistant" }),
      }),
  }),
  defineModule({
    id: "projects",
    permissions: PROJECTS_PERMISSIONS,
    tools: (tools, app) => registerProjectTools(tools, app.config),
    routes: (api, app) =>
      registerProjectRoutes(api, { config: app.config, knex: app.knex, engine: app.engine }),
    worker: ({ knex, config, log }) => ({
      stop: startReminderScheduler({
        knex,
        log: log.child({ module: "projects" }),
        intervalMs: config.projects.reminderIntervalMs,
      }),
    }),
  }),
  integrationsModule,
];

/** The permission catalog of a set of modules (core modules, then the plugins the host loaded). */
export function permissionCatalog(modules: ModuleDefinition[]): PermissionCatalog {
  return new PermissionCatalog(Object.fromEntries(modules.map((m) => [m.id, m.permissions ?? {}])));
}

/** Every sealed column of the modules. */
export const sealedColumns = (modules: ModuleDefinition[]) => modules.flatMap((m) => m.sealed ?? []);

/** Every module's work queues. */
export const moduleQueues = (modules: ModuleDefinition[]): QueueDef[] =>
  modules.flatMap((m) => m.queues ?? []);
