// Backups the worker takes: every day at backup.schedule, or when a system administrator asks in the admin UI.
// Each is a row of backup_runs (queued, running, succeeded or failed); at most one is queued or running at a
// time, across nodes, and the worker that runs one keeps it alive, so a run whose process died is marked
// failed instead of blocking the next. The archive is the one `worksynapse backup` writes (backup.ts).
import { hostname } from "node:os";
import type { Knex } from "knex";
import { z } from "zod";
import type { Bus } from "../../platform/bus/bus.js";
import type { Config } from "../../config/schema.js";
import type { Logger } from "../../platform/log.js";
import { AppError } from "../../platform/http/errors.js";
import { createBackup, type BackupKeys, type BackupResult } from "./backup.js";

/** A backup run as the admin UI shows it. */
export const backupRunSchema = z
  .object({
    id: z.uuid(),
    trigger: z.enum(["schedule", "manual", "command"]),
    status: z.enum(["queued", "running", "succeeded", "failed"]),
    requestedBy: z.uuid().nullable(),
    node: z.string().nullable(),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    file: z.string().nullable(),
    bytes: z.number().nullable(),
    files: z.number().nullable(),
    error: z.string().nullable(),
  })
  .meta({ id: "BackupRun" });
export type BackupRun = z.infer<typeof backupRunSchema>;

/** A running backup whose worker has not said it is alive for this long is taken for dead. */
const DEAD_AFTER_S = 120;
const HEARTBEAT_MS = 20_000;

const iso = (v: unknown) => (v ? (v as Date).toISOString() : null);

function toRun(r: Record<string, unknown>): BackupRun {
  return {
    id: r.id as string,
    trigger: r.trigger as BackupRun["trigger"],
    status: r.status as BackupRun["status"],
    requestedBy: (r.requested_by as string | null) ?? null,
    node: (r.node as string | null) ?? null,
    createdAt: iso(r.created_at) as string,
    startedAt: iso(r.started_at),
    finishedAt: iso(r.finished_at),
    file: (r.file as string | null) ?? null,
    bytes: r.bytes == null ? null : Number(r.bytes),
    files: (r.files as number | null) ?? null,
    error: (r.error as string | null) ?? null,
  };
}

/** The keys the worker's backups are encrypted with (recipients win over the passphrase), or null. */
export function configuredKeys(config: Config): BackupKeys | null {
  if (config.backup.recipients.length) return { recipients: config.backup.recipients };
  if (config.backup.passphrase) return { passphrase: config.backup.passphrase };
  return null;
}

/** Why the worker cannot back up this installation, or null when it can. */
export function unavailableReason(config: Config): string | null {
  if (!config.database.url && !config.database.ownerUrl)
    return "The embedded database is backed up with the server stopped: run `worksynapse backup` on the server.";
  if (!configuredKeys(config))
    return "No encryption key is configured: set backup.recipients (age public keys) or backup.passphrase.";
  return null;
}

/** The newest runs, newest first. */
export async function listRuns(knex: Knex, limit = 20): Promise<BackupRun[]> {
  return (
    (await knex("backup_runs").orderBy("created_at", "desc").limit(limit)) as Record<string, unknown>[]
  ).map(toRun);
}

/** Queues a backup; 409 when one is already queued or running, or when this installation cannot take one. */
export async function requestBackup(
  knex: Knex,
  config: Config,
  trigger: "schedule" | "manual",
  userId: string | null,
): Promise<BackupRun> {
  const reason = unavailableReason(config);
  if (reason) throw new AppError(409, "backup_unavailable", reason);
  try {
    const [row] = (await knex("backup_runs")
      .insert({ trigger, status: "queued", requested_by: userId })
      .returning("*")) as Record<string, unknown>[];
    return toRun(row as Record<string, unknown>);
  } catch (err) {
    if ((err as { code?: string }).code === "23505")
      throw new AppError(409, "backup_in_progress", "A backup is already queued or running.");
    throw err;
  }
}

/** This process, as a run's node: host and process id. */
const thisNode = () => `${hostname()}:${process.pid}`;

/** False when the node is a process of this host that no longer exists. */
function mayBeAlive(node: string | null): boolean {
  const m = /^(.*):(\d+)$/.exec(node ?? "");
  if (!m || m[1] !== hostname()) return true;
  try {
    process.kill(Number(m[2]), 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/**
 * Marks running backups as failed when their process is gone: one of this host that no longer exists, or any
 * that has not said it is alive for two minutes. How many.
 */
export async function expireDeadRuns(knex: Knex): Promise<number> {
  const running = (await knex("backup_runs").where({ status: "running" }).select("id", "node")) as {
    id: string;
    node: string | null;
  }[];
  const gone = running.filter((r) => !mayBeAlive(r.node)).map((r) => r.id);
  return knex("backup_runs")
    .where({ status: "running" })
    .where((q) =>
      q
        .whereIn("id", gone)
        .orWhere("alive_at", "<", knex.raw("now() - make_interval(secs => ?)", [DEAD_AFTER_S])),
    )
    .update({
      status: "failed",
      finished_at: knex.fn.now(),
      error: "The process running this backup stopped before it finished.",
    });
}

/** The latest time of day `schedule` (HH:MM, local time) has passed, at or before `now`. */
export function lastSlot(schedule: string, now: Date): Date {
  const [h, m] = schedule.split(":").map(Number) as [number, number];
  const slot = new Date(now);
  slot.setHours(h, m, 0, 0);
  if (slot > now) slot.setDate(slot.getDate() - 1);
  return slot;
}

/**
 * Queues the scheduled backup when its time of day has passed and no backup was asked for since (a failed one
 * is not retried before the next day's time: the admin sees it and can ask again). True when it queued one.
 */
export async function queueScheduled(knex: Knex, config: Config, now = new Date()): Promise<boolean> {
  if (!config.backup.schedule || unavailableReason(config)) return false;
  const slot = lastSlot(config.backup.schedule, now);
  const since = await knex("backup_runs").where("created_at", ">=", slot).first("id");
  if (since) return false;
  try {
    await requestBackup(knex, config, "schedule", null);
    return true;
  } catch (err) {
    if (err instanceof AppError && err.status === 409) return false;
    throw err;
  }
}

/** Takes the queued backup, if any, and runs it to its end; the run, or null when none was queued. */
export async function runQueued(deps: {
  knex: Knex;
  config: Config;
  log: Logger;
}): Promise<BackupRun | null> {
  const { knex, config, log } = deps;
  const claimed = (
    await knex.raw(
      `update backup_runs set status = 'running', started_at = now(), alive_at = now(), node = ?
       where id = (select id from backup_runs where status = 'queued' order by created_at limit 1
                   for update skip locked)
       returning id`,
      [thisNode()],
    )
  ).rows as { id: string }[];
  const id = claimed[0]?.id;
  if (!id) return null;
  return recordRun(knex, id, log, () => {
    const keys = configuredKeys(config);
    if (!keys) throw new Error("no encryption key is configured");
    return createBackup({
      config,
      keys,
      includeModels: config.backup.includeModels,
      keep: config.backup.keep,
      log,
    });
  });
}

/**
 * Runs a backup as the run `id` (status running): keeps it alive meanwhile, then records how it ended. Returns
 * the finished run; the backup's own error is recorded, not thrown.
 */
async function recordRun(
  knex: Knex,
  id: string,
  log: Logger,
  backup: () => Promise<BackupResult>,
): Promise<BackupRun> {
  const alive = setInterval(() => {
    knex("backup_runs")
      .where({ id, status: "running" })
      .update({ alive_at: knex.fn.now() })
      .catch((err: unknown) => log.warn({ err }, "could not mark the backup alive"));
  }, HEARTBEAT_MS);
  alive.unref();
  let outcome: Record<string, unknown>;
  try {
    const r = await backup();
    outcome = { status: "succeeded", file: r.file, bytes: r.bytes, files: r.manifest.files.length };
    log.info({ file: r.file, bytes: r.bytes, removed: r.removed.length }, "backup written");
  } catch (err) {
    outcome = { status: "failed", error: (err as Error).message.slice(0, 1000) };
    log.error({ err }, "backup failed");
  } finally {
    clearInterval(alive);
  }
  const [row] = (await knex("backup_runs")
    .where({ id })
    .update({ ...outcome, finished_at: knex.fn.now() })
    .returning("*")) as Record<string, unknown>[];
  return toRun(row as Record<string, unknown>);
}

/**
 * `worksynapse backup` on PostgreSQL: the command's backup is a run too (trigger "command"), so the admin page
 * lists what a cron job or systemd timer took. Refused while the worker's backup is queued or running. Returns
 * the backup's result, or throws its error once recorded.
 */
export async function recordCommandBackup(
  knex: Knex,
  log: Logger,
  backup: () => Promise<BackupResult>,
): Promise<BackupResult> {
  await expireDeadRuns(knex);
  let id: string;
  try {
    id = (
      (await knex("backup_runs")
        .insert({
          trigger: "command",
          status: "running",
          started_at: knex.fn.now(),
          alive_at: knex.fn.now(),
          node: thisNode(),
        })
        .returning("id")) as { id: string }[]
    )[0]?.id as string;
  } catch (err) {
    if ((err as { code?: string }).code === "23505")
      throw new Error(
        "a backup is already queued or running (the worker's); wait for it, or see the admin page",
        { cause: err },
      );
    throw err;
  }
  // Recorded, then thrown as it came (the command reports it).
  let failure: unknown;
  let result: BackupResult | undefined;
  await recordRun(knex, id, log, async () => {
    try {
      return (result = await backup());
    } catch (err) {
      failure = err;
      throw err;
    }
  });
  if (!result) throw failure;
  return result;
}

/** Subject the web role wakes the workers on when someone asks for a backup. */
export const backupRequested = (prefix: string) => `${prefix}.system.backups.requested`;

/**
 * The worker's loop: every `intervalMs` (and when woken) it expires dead runs, queues the scheduled backup when
 * due and runs what is queued, one at a time. Returns the stop function (waits for a run under way).
 */
export function startBackupScheduler(deps: {
  knex: Knex;
  config: Config;
  log: Logger;
  bus?: Pick<Bus, "listen" | "prefix">;
  intervalMs?: number;
}): () => Promise<void> {
  let running: Promise<unknown> = Promise.resolve();
  let busy = false;
  let stopped = false;
  const tick = () => {
    if (busy || stopped) return;
    busy = true;
    running = (async () => {
      await expireDeadRuns(deps.knex);
      await queueScheduled(deps.knex, deps.config);
      while (!stopped && (await runQueued(deps))) {
        /* the next queued one, if any */
      }
    })()
      .catch((err: unknown) => deps.log.error({ err }, "backup scheduler pass failed"))
      .finally(() => (busy = false));
  };
  const unlisten = deps.bus?.listen(backupRequested(deps.bus.prefix), tick);
  const timer = setInterval(tick, deps.intervalMs ?? 30_000);
  timer.unref();
  tick();
  return async () => {
    stopped = true;
    clearInterval(timer);
    unlisten?.();
    await running;
  };
}
