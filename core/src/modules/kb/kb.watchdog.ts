import type { Knex } from "knex";
import type { Config } from "../../config/schema.js";
import type { Outbox } from "../../platform/bus/outbox.js";
import { withOrg } from "../../platform/db/tenant.js";
import type { Logger } from "../../platform/log.js";
import { KB_INDEX_QUEUE } from "./kb.events.js";

/** Re-queues of one generation before a stalled document is failed. */
const STALL_RETRIES = 2;

/**
 * Finds documents stuck in a non-terminal state (no progress for kb.stallAfterMs: a job lost with a dead bus, a
 * worker that hung) in every organization; queues each again, and after STALL_RETRIES re-queues without
 * progress fails it with a reason the person sees. Returns how many it touched.
 */
export async function rescueStalledDocuments(deps: {
  knex: Knex;
  outbox: Outbox;
  config: Config;
  log: Logger;
}): Promise<number> {
  const seconds = deps.config.kb.stallAfterMs / 1000;
  const stalled = (await deps.knex.raw("select * from kb_stalled_documents(?)", [seconds])).rows as {
    org_id: string;
    id: string;
    generation: number;
  }[];
  let touched = 0;
  for (const s of stalled) {
    await withOrg(deps.knex, s.org_id, async (trx) => {
      // Checked again under the row's lock: it may have moved on since the scan.
      const doc = (await trx("kb_documents")
        .where({ id: s.id, generation: s.generation })
        .whereNotIn("status", ["indexed", "failed"])
        .where("updated_at", "<", trx.raw("now() - make_interval(secs => ?)", [seconds]))
        .forUpdate()
        .first("id", "status", "stall_retries")) as
        { id: string; status: string; stall_retries: number } | undefined;
      if (!doc) return;
      touched += 1;
      if (doc.stall_retries >= STALL_RETRIES) {
        const minutes = Math.round(deps.config.kb.stallAfterMs / 60_000);
        await trx("kb_documents")
          .where({ id: s.id })
          .update({
            status: "failed",
            progress: 0,
            error: `Indexing made no progress (${doc.status}) for ${minutes || 1} minutes, ${STALL_RETRIES + 1} times, and was stopped. Try again from the document's menu.`,
            updated_at: trx.fn.now(),
          });
        deps.log.error({ orgId: s.org_id, documentId: s.id, status: doc.status }, "stalled document failed");
        return;
      }
      const retry = doc.stall_retries + 1;
      await trx("kb_documents")
        .where({ id: s.id })
        .update({ stall_retries: retry, updated_at: trx.fn.now() });
      await deps.outbox.job(
        trx,
        KB_INDEX_QUEUE,
        { orgId: s.org_id, documentId: s.id, generation: s.generation },
        `kb:${s.id}:${s.generation}:stall${retry}`,
      );
      deps.log.warn(
        { orgId: s.org_id, documentId: s.id, status: doc.status, retry },
        "stalled document queued again",
      );
    });
  }
  return touched;
}

/** Runs the stall watchdog in the worker every quarter of kb.stallAfterMs (at most every minute). */
export function startStallWatchdog(deps: {
  knex: Knex;
  outbox: Outbox;
  config: Config;
  log: Logger;
}): () => void {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      await rescueStalledDocuments(deps);
    } catch (err) {
      deps.log.warn({ err }, "stall watchdog pass failed; will retry");
    } finally {
      running = false;
    }
  };
  const timer = setInterval(
    () => void tick(),
    Math.min(60_000, Math.max(1000, deps.config.kb.stallAfterMs / 4)),
  );
  timer.unref();
  return () => clearInterval(timer);
}
