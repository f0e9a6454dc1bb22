import { z } from "zod";
import type { Config } from "../../config/schema.js";
import type { Bus } from "../../platform/bus/bus.js";
import { afterCommit, dataOf, type Api } from "../../platform/http/api.js";
import {
  backupRequested,
  backupRunSchema,
  listRuns,
  requestBackup,
  unavailableReason,
} from "./backups.service.js";

const tags = ["system"];

const statusSchema = z
  .object({
    available: z.boolean(),
    reason: z.string().nullable().describe("Why the worker cannot back up this installation"),
    schedule: z.string().nullable().describe("Time of day (HH:MM, server time) of the daily backup"),
    keep: z.number(),
    includeModels: z.boolean(),
    encryption: z.enum(["recipients", "passphrase"]).nullable(),
    runs: z.array(backupRunSchema),
  })
  .meta({ id: "BackupStatus" });

/** Backup status and "back up now" for system administrators (the worker takes the backups). */
export function registerBackupRoutes(api: Api, deps: { config: Config; bus: Bus | null }): void {
  api.route({
    method: "get",
    path: "/api/system/backups",
    operationId: "getBackupStatus",
    scope: "installation",
    summary:
      "Whether the worker backs up this installation, its schedule, and the latest backups (system administrators)",
    tags,
    response: dataOf(statusSchema),
    handler: async (_ctx, _in, { trx }) => {
      const { backup } = deps.config;
      return {
        data: {
          available: !unavailableReason(deps.config),
          reason: unavailableReason(deps.config),
          schedule: backup.schedule ?? null,
          keep: backup.keep,
          includeModels: backup.includeModels,
          encryption: backup.recipients.length ? "recipients" : backup.passphrase ? "passphrase" : null,
          runs: await listRuns(trx),
        },
      };
    },
  });
  api.route({
    method: "post",
    path: "/api/system/backups",
    operationId: "requestBackup",
    scope: "installation",
    summary: "Ask the worker for a backup now (system administrators); 409 when one is queued or running",
    tags,
    status: 202,
    response: dataOf(backupRunSchema),
    errors: [409],
    handler: async (_ctx, _in, { caller, trx }) => {
      const run = await requestBackup(trx, deps.config, "manual", caller.userId);
      return afterCommit(async () => {
        deps.bus?.notify(backupRequested(deps.bus.prefix), { id: run.id });
        return { data: run };
      });
    },
  });
}
