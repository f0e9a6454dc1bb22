// Deadline reminders: rows in task_reminders, written when a task's due time, assignees or state change
// (projects.service syncReminders), fired by every worker on a timer through one SQL function that claims each
// due row and writes its notification in the same statement: once, whichever worker gets there first.
import type { Knex } from "knex";
import type { Logger } from "../../platform/log.js";

const BATCH = 200;

/** Fires the reminders that are due now; returns how many fired. */
export async function fireDueReminders(knex: Knex): Promise<number> {
  let fired = 0;
  for (;;) {
    const rows = (await knex.raw("select * from projects_fire_due_reminders(?)", [BATCH])).rows as unknown[];
    fired += rows.length;
    if (rows.length < BATCH) return fired;
  }
}

/** Runs fireDueReminders every `intervalMs` (the worker role); returns a function that stops it. */
export function startReminderScheduler(deps: { knex: Knex; log: Logger; intervalMs: number }): () => void {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      const n = await fireDueReminders(deps.knex);
      if (n) deps.log.info({ fired: n }, "task reminders sent");
    } catch (err) {
      deps.log.warn({ err }, "could not send task reminders; will retry");
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void tick(), deps.intervalMs);
  timer.unref();
  void tick();
  return () => clearInterval(timer);
}
