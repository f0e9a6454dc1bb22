import { fork, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { connectBus, type Bus } from "../../core/src/platform/bus/bus.js";
import { openDatabase, openOwnerDatabase, type Database } from "../../core/src/platform/db/database.js";
import { silentLogger } from "../../core/src/platform/log.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";
import { testConfig } from "../support/config.js";
import { deleteStreams } from "../support/nats.js";
import { NATS_URL } from "../support/env.js";
// @ts-expect-error plain JS module shared with the worker process
import { crashQueue } from "../support/crash-worker.mjs";

const WORKER = new URL("../support/crash-worker.mjs", import.meta.url).pathname;
const JOBS = 1000;
const log = silentLogger();
const prefix = `crash${randomBytes(3).toString("hex")}`;
let pg: TestDatabase;
let db: Database;
let bus: Bus;
let nc: NatsConnection;
const children: ChildProcess[] = [];

function startWorker(): Promise<ChildProcess> {
  const child = fork(WORKER, [], {
    env: {
      ...process.env,
      DATABASE_URL: pg.url,
      NATS_URL,
      WORKSYNAPSE_NATS_PREFIX: prefix,
      WORKSYNAPSE_DATA_DIR: "/tmp",
    },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.once("message", () => resolve(child));
    child.once("exit", (code) => reject(new Error(`worker exited with ${code}`)));
  });
}

const count = async () => Number((await db.knex("crash_results").count("* as n").first())?.n ?? 0);
const waitFor = async (cond: () => Promise<boolean>, ms = 60000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
};

beforeAll(async () => {
  if (!existsSync(new URL("../../core/dist/src/index.js", import.meta.url))) {
    throw new Error("core is not built: run `npm run build` first (npm test does)");
  }
  pg = await createTestDatabase("crash");
  const config = testConfig({ DATABASE_URL: pg.url });
  db = await openDatabase(config, { migrate: true, log });
  const owner = openOwnerDatabase(config);
  await owner.knex.raw("create table crash_results (n int not null, job_id text not null)");
  await owner.knex.raw("grant select, insert on crash_results to worksynapse_app");
  await owner.close();
  bus = await connectBus({
    url: NATS_URL,
    prefix,
    name: "crash-test",
    log,
    deadLetters: async () => undefined,
    extraQueues: [crashQueue],
  });
  nc = await connect({ servers: NATS_URL });
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await bus?.close();
  await nc?.close();
  await db?.close();
  await pg?.drop();
  await deleteStreams(prefix);
});

describe("a worker killed with SIGKILL while working", () => {
  it(`completes all ${JOBS} jobs exactly once after restarts`, async () => {
    for (let n = 0; n < JOBS; n++) await bus.enqueue(crashQueue, { n }, `job-${n}`);

    let worker = await startWorker();
    await waitFor(async () => (await count()) >= 200);
    worker.kill("SIGKILL");
    const atFirstKill = await count();

    worker = await startWorker();
    await waitFor(async () => (await count()) >= 600);
    worker.kill("SIGKILL");
    const atSecondKill = await count();

    worker = await startWorker();
    const jsm = await jetstreamManager(nc);
    await waitFor(async () => {
      const info = await jsm.consumers.info(`${prefix}_JOBS`, "crash");
      return (await count()) >= JOBS && info.num_pending === 0 && info.num_ack_pending === 0;
    });
    // Longer than ack_wait: any delivery left unacknowledged by the killed workers has come back by now.
    await new Promise((r) => setTimeout(r, 3000));
    worker.kill("SIGTERM");

    expect(atFirstKill).toBeLessThan(JOBS);
    expect(atSecondKill).toBeLessThan(JOBS);
    const totals = await db
      .knex("crash_results")
      .select(db.knex.raw("count(*)::int as rows"), db.knex.raw("count(distinct n)::int as distinct_jobs"));
    expect(totals[0]).toEqual({ rows: JOBS, distinct_jobs: JOBS });
    const stream = await jsm.streams.info(`${prefix}_JOBS`);
    expect(stream.state.messages).toBe(0);
    const dead = await db.knex("dead_letters").count("* as n").first();
    expect(Number(dead?.n)).toBe(0);
  });
});
