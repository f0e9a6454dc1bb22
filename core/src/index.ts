/** Public surface of core used by the installer, scripts and tests. */
export { loadConfig, listSettings, redactConfig, configFilePath, ConfigError } from "./config/load.js";
export { configSchema, type Config } from "./config/schema.js";
export { createLogger, silentLogger, type Logger } from "./platform/log.js";
export { openDatabase, openOwnerDatabase, ensureAppRole } from "./platform/db/database.js";
export { runMigrations, type MigrateAction, type MigrationStatus } from "./platform/db/migrate.js";
export { findNatsServer, natsServerVersion } from "./platform/bus/local-server.js";
export { buildApp } from "./app.js";
export { startServer, type RunningServer } from "./server.js";
export { VERSION } from "./platform/paths.js";
export {
  connectBus,
  claimJob,
  databaseDeadLetters,
  type Bus,
  type Job,
  type Worker,
} from "./platform/bus/bus.js";
export { defineQueue, defineEvent, type QueueDef, type EventDef } from "./platform/bus/topology.js";
export { Outbox, OutboxRelay } from "./platform/bus/outbox.js";
export { createOrganization, needsSetup } from "./modules/identity/identity.service.js";
export { verifyAuditChains, type AuditVerification } from "./modules/identity/audit.js";
export {
  checkpointFile,
  checkpointKeys,
  readCheckpoints,
  sinkOf,
  writeCheckpoints,
} from "./modules/identity/audit.anchor.js";
export { ensureMasterKey, auditRootKey, keyFiles, resealAll, type SealedColumn } from "./platform/secrets.js";
export { MODULES } from "./modules/catalog.js";
export { withOrg } from "./platform/db/tenant.js";
export { importModel, listModels, removeModel, inspectModelFile } from "./modules/ai/models.service.js";
export { AiRuntime } from "./modules/ai/runtime.js";
export {
  createBackup,
  restoreBackup,
  verifyBackup,
  compareVersions,
  BackupError,
  type BackupManifest,
} from "./modules/system/backup.js";
export { recordCommandBackup } from "./modules/system/backups.service.js";
export {
  generateSigningKey,
  minisignPublicKey,
  signFile,
  verifyFile,
  SignatureError,
} from "./platform/minisign.js";
export { createPack, importPack, verifyPack, trustedPackKeys, PACK_SUFFIX } from "./modules/ai/packs.js";
