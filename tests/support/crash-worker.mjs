// A worker process for the crash test: consumes the "crash" queue, writing one row per job
// in the same transaction that records the job as done. The test kills it with SIGKILL.
import { z } from "zod";
import {
  claimJob,
  connectBus,
  databaseDeadLetters,
  defineQueue,
  loadConfig,
  openDatabase,
  silentLogger,
} from "../../core/dist/src/index.js";

export const crashQueue = defineQueue("crash", z.object({ n: z.number().int() }), {
  ackWaitMs: 2000,
  concurrency: 8,
  maxAttempts: 10,
  backoffMs: [100],
});

if (import.meta.url === `file://${process.argv[1]}`) {
  const log = silentLogger();
  const config = loadConfig();
  const db = await openDatabase(config, { migrate: false, log });
  const bus = await connectBus({
    url: config.nats.url,
    prefix: config.nats.prefix,
    name: "crash-worker",
    log,
    deadLetters: databaseDeadLetters(db.knex),
    extraQueues: [crashQueue],
  });
  await bus.work(crashQueue, async (job) => {
    await db.knex.transaction(async (trx) => {
      if (!(await claimJob(trx, "crash", job.id))) return;
      await trx("crash_results").insert({ n: job.payload.n, job_id: job.id });
    });
    // Work after the commit and before the ack (as real handlers do): a kill here must not repeat the effect.
    await new Promise((r) => setTimeout(r, 5));
  });
  process.send?.("ready");
}
