// Scheduled directory sync: a durable job per due LDAP provider, claimed once across nodes.
import type { Knex } from "knex";
import { z } from "zod";
import type { Job } from "../../platform/bus/bus.js";
import type { Outbox } from "../../platform/bus/outbox.js";
import { defineQueue } from "../../platform/bus/topology.js";
import { withOrg } from "../../platform/db/tenant.js";
import type { Logger } from "../../platform/log.js";
import { audit } from "../identity/audit.js";
import type { DirectoryUser } from "./ldap.js";
import { directoryOf, endSessions, findProvider, rolesForGroups, setDirectoryRoles } from "./sso.service.js";

/** Brings every linked account of an organization's directory in line with the directory. */
export const SSO_SYNC_QUEUE = defineQueue(
  "sso-sync",
  z.object({ orgId: z.uuid(), providerId: z.uuid(), reason: z.enum(["scheduled", "manual"]) }),
  { concurrency: 1, ackWaitMs: 120_000, maxAttempts: 3, backoffMs: [30_000, 120_000] },
);

/** What one sync did. */
export interface SyncSummary {
  ok: boolean;
  directoryUsers: number;
  linkedUsers: number;
  deactivated: number;
  rolesChanged: number;
  error?: string;
}

/**
 * Runs one sync. Reading the directory happens before the transaction; applying it is one transaction, so a
 * crash applies all or nothing, and a repeated job finds nothing left to change (it is idempotent by design).
 */
export async function handleSyncJob(
  deps: { knex: Knex; masterKey: string; log: Logger },
  job: Job<z.infer<typeof SSO_SYNC_QUEUE.schema>>,
): Promise<void> {
  const { orgId, providerId } = job.payload;
  const p = await withOrg(deps.knex, orgId, (trx) => findProvider(trx, "ldap"));
  if (!p || p.id !== providerId || !p.enabled) return;
  let people: DirectoryUser[];
  try {
    people = await directoryOf(p, deps.masterKey).listUsers();
  } catch (err) {
    const error = (err as Error).message.slice(0, 300);
    await withOrg(deps.knex, orgId, (trx) =>
      trx("sso_providers")
        .where({ id: p.id })
        .update({ last_sync_at: trx.fn.now(), last_sync: JSON.stringify({ ok: false, error }) }),
    );
    throw err;
  }
  const summary = await withOrg(deps.knex, orgId, async (trx) => {
    const linked = (await trx("users")
      .where({ external_source: "ldap" })
      .select("id", "external_id", "status", "email")) as {
      id: string;
      external_id: string;
      status: string;
      email: string;
    }[];
    const byId = new Map(people.map((u) => [u.externalId, u]));
    const s: SyncSummary = {
      ok: true,
      directoryUsers: people.length,
      linkedUsers: linked.length,
      deactivated: 0,
      rolesChanged: 0,
    };
    // A directory that suddenly returns nobody is a misconfiguration or an outage, not a mass departure.
    if (people.length === 0 && linked.length > 0) {
      s.ok = false;
      s.error = "The directory returned no users; nothing was changed.";
    } else {
      for (const u of linked) {
        const person = byId.get(u.external_id);
        if (!person) {
          if (u.status !== "active") continue;
          await trx("users").where({ id: u.id }).update({ status: "deactivated" });
          await setDirectoryRoles(trx, orgId, u.id, []);
          const ended = await endSessions(trx, u.id);
          s.deactivated++;
          await audit(trx, {
            orgId,
            actorType: "system",
            actorId: "sso-sync",
            action: "sso.sync.deactivate",
            targetType: "user",
            targetId: u.id,
            outcome: "success",
            details: { email: u.email, reason: "not_in_directory", sessionsEnded: ended },
          });
          continue;
        }
        const roles = rolesForGroups(p, person.groups);
        if (await setDirectoryRoles(trx, orgId, u.id, roles)) {
          const ended = await endSessions(trx, u.id);
          s.rolesChanged++;
          await audit(trx, {
            orgId,
            actorType: "system",
            actorId: "sso-sync",
            action: "sso.sync.roles",
            targetType: "user",
            targetId: u.id,
            outcome: "success",
            details: { email: u.email, roles, sessionsEnded: ended },
          });
        }
      }
    }
    await trx("sso_providers")
      .where({ id: p.id })
      .update({ last_sync_at: trx.fn.now(), last_sync: JSON.stringify(s) });
    return s;
  });
  deps.log.info({ orgId, ...summary }, "directory sync done");
}

/** Enqueues a sync now (the admin's "Sync now"); returns the job id. */
export async function enqueueSync(
  trx: Knex.Transaction,
  outbox: Outbox,
  orgId: string,
  providerId: string,
): Promise<string> {
  const jobId = `sso-sync:${providerId}:manual:${Date.now()}`;
  await outbox.job(trx, SSO_SYNC_QUEUE, { orgId, providerId, reason: "manual" }, jobId);
  return jobId;
}

/**
 * Claims the due providers and enqueues their syncs in the same transaction (through the outbox): a node that
 * dies after claiming loses nothing, and two nodes never claim the same slot. Returns the jobs enqueued.
 */
export async function scheduleDueSyncs(knex: Knex, outbox: Outbox): Promise<string[]> {
  return knex.transaction(async (trx) => {
    const due = (await trx.raw("select * from sso_claim_due_syncs()")).rows as {
      org_id: string;
      provider_id: string;
      slot: Date;
    }[];
    const jobs: string[] = [];
    for (const d of due) {
      const jobId = `sso-sync:${d.provider_id}:${new Date(d.slot).toISOString()}`;
      await outbox.job(
        trx,
        SSO_SYNC_QUEUE,
        { orgId: d.org_id, providerId: d.provider_id, reason: "scheduled" },
        jobId,
      );
      jobs.push(jobId);
    }
    return jobs;
  });
}

/** Runs scheduleDueSyncs every `intervalMs` (the worker role); returns a function that stops it. */
export function startSyncScheduler(deps: {
  knex: Knex;
  outbox: Outbox;
  log: Logger;
  intervalMs?: number;
}): () => void {
  const tick = () =>
    scheduleDueSyncs(deps.knex, deps.outbox).catch((err: unknown) =>
      deps.log.warn({ err }, "could not schedule directory syncs"),
    );
  const timer = setInterval(() => void tick(), deps.intervalMs ?? 30_000);
  timer.unref();
  void tick();
  return () => clearInterval(timer);
}
