import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { silentLogger } from "../log.js";
import { openDatabase, type Database } from "../db/database.js";
import { claimJob, connectBus, databaseDeadLetters, type Bus, type DeadLetter } from "./bus.js";
import { Outbox, OutboxRelay } from "./outbox.js";
import { defineEvent, defineQueue, eventSubject } from "./topology.js";
import { createTestDatabase, type TestDatabase } from "../../../../tests/support/pg.js";
import { testConfig } from "../../../../tests/support/config.js";
import { deleteStreams } from "../../../../tests/support/nats.js";
import { NATS_URL } from "../../../../tests/support/env.js";

const log = silentLogger();
const prefix = `t${randomBytes(4).toString("hex")}`;
const payload = z.object({ n: z.number() });
const quick = { backoffMs: [200, 400], ackWaitMs: 2000, concurrency: 2 };
const qOk = defineQueue("ok", payload, quick);
const qRetry = defineQueue("retry", payload, { ...quick, maxAttempts: 4 });
const qDead = defineQueue("dead", payload, { ...quick, maxAttempts: 3 });
const qPoison = defineQueue("poison", payload, quick);
const qDedupe = defineQueue("dedupe", payload, quick);
const qDb = defineQueue("db", payload, quick);
const evt = defineEvent("thing.happened", z.object({ id: z.string() }));

let pg: TestDatabase;
let db: Database;
let bus: Bus;
let nc: NatsConnection;
const deadLetters: DeadLetter[] = [];

beforeAll(async () => {
  pg = await createTestDatabase("bus");
  db = await openDatabase(testConfig({ DATABASE_URL: pg.url }), { migrate: true, log });
  const sink = databaseDeadLetters(db.knex);
  bus = await connectBus({
    url: NATS_URL,
    prefix,
    name: "bus-test",
    log,
    deadLetters: async (dl) => {
      deadLetters.push(dl);
      await sink(dl);
    },
    extraQueues: [qOk, qRetry, qDead, qPoison, qDedupe, qDb],
  });
  nc = await connect({ servers: NATS_URL });
});
afterAll(async () => {
  await bus?.close();
  await nc?.close();
  await db?.close();
  await pg?.drop();
  await deleteStreams(prefix);
});

const waitFor = async (cond: () => boolean | Promise<boolean>, ms = 15000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe("work queues", () => {
  it("deliver a job to its handler and acknowledge it once", async () => {
    const seen: number[] = [];
    const w = await bus.work(qOk, async (job) => {
      seen.push(job.payload.n);
    });
    await bus.enqueue(qOk, { n: 1 }, randomUUID());
    await bus.enqueue(qOk, { n: 2 }, randomUUID());
    await waitFor(() => seen.length === 2);
    await new Promise((r) => setTimeout(r, 2500)); // longer than ack_wait: nothing comes back
    await w.stop();
    expect(seen.sort()).toEqual([1, 2]);
  });

  it("redeliver a failed job with backoff until it succeeds", async () => {
    const times: number[] = [];
    const w = await bus.work(qRetry, async (job) => {
      times.push(Date.now());
      if (job.attempt < 3) throw new Error(`fail ${job.attempt}`);
    });
    await bus.enqueue(qRetry, { n: 1 }, randomUUID());
    await waitFor(() => times.length === 3);
    await new Promise((r) => setTimeout(r, 600));
    await w.stop();
    expect(times).toHaveLength(3);
    // The delays follow the queue's backoff: 200 ms, then 400 ms.
    expect((times[1] as number) - (times[0] as number)).toBeGreaterThanOrEqual(180);
    expect((times[2] as number) - (times[1] as number)).toBeGreaterThanOrEqual(380);
  });

  it("move a job that keeps failing to the dead letters after its delivery limit", async () => {
    let calls = 0;
    const w = await bus.work(qDead, async () => {
      calls += 1;
      throw new Error("always broken");
    });
    const jobId = randomUUID();
    await bus.enqueue(qDead, { n: 7 }, jobId);
    await waitFor(() => deadLetters.some((d) => d.jobId === jobId));
    await new Promise((r) => setTimeout(r, 1500));
    await w.stop();
    expect(calls).toBe(3);
    const rows = await db.knex("dead_letters").where({ job_id: jobId });
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      queue: "dead",
      error: "always broken",
      deliveries: 3,
      payload: { n: 7 },
    });
  });

  it("dead-letter a poison message at once without running the handler", async () => {
    let calls = 0;
    const w = await bus.work(qPoison, async () => {
      calls += 1;
    });
    const jobId = randomUUID();
    await bus.publish(`${prefix}.jobs.poison`, { n: "not a number" }, jobId);
    await waitFor(() => deadLetters.some((d) => d.jobId === jobId));
    await w.stop();
    expect(calls).toBe(0);
    expect(deadLetters.find((d) => d.jobId === jobId)?.error).toMatch(/payload invalid/);
  });

  it("drop a repeated job id (publish deduplication)", async () => {
    const seen: number[] = [];
    const jobId = randomUUID();
    expect((await bus.enqueue(qDedupe, { n: 1 }, jobId)).duplicate).toBe(false);
    expect((await bus.enqueue(qDedupe, { n: 1 }, jobId)).duplicate).toBe(true);
    const w = await bus.work(qDedupe, async (job) => {
      seen.push(job.payload.n);
    });
    await waitFor(() => seen.length === 1);
    await new Promise((r) => setTimeout(r, 500));
    await w.stop();
    expect(seen).toEqual([1]);
  });

  it("rejects a payload that does not match the queue's schema when enqueuing", async () => {
    await expect(bus.enqueue(qOk, { n: "x" } as unknown as { n: number }, randomUUID())).rejects.toThrow();
  });

  it("claimJob makes a side effect happen once even when the job is delivered twice", async () => {
    await db.knex.raw("select 1");
    let effects = 0;
    const w = await bus.work(qDb, async (job) => {
      await db.knex.transaction(async (trx) => {
        if (await claimJob(trx, "db", job.id)) effects += 1;
      });
      if (job.attempt === 1) throw new Error("crash after the commit, before the ack");
    });
    await bus.enqueue(qDb, { n: 1 }, randomUUID());
    await waitFor(async () => (await db.knex("processed_jobs").where({ queue: "db" })).length === 1);
    await new Promise((r) => setTimeout(r, 800));
    await w.stop();
    expect(effects).toBe(1);
  });
});

describe("outbox", () => {
  it("publishes events only after the transaction commits, never for a rollback", async () => {
    const outbox = new Outbox(prefix);
    const relay = new OutboxRelay(db.knex, bus, log, { pollMs: 100 });
    const got: string[] = [];
    const sub = nc.subscribe(eventSubject(prefix, evt.name), {
      callback: (_e, m) => {
        got.push((m.json() as { id: string }).id);
      },
    });
    relay.start(outbox);
    await db.knex
      .transaction(async (trx) => {
        await outbox.event(trx, evt, { id: "rolled-back" });
        throw new Error("abort");
      })
      .catch(() => undefined);
    await db.knex.transaction(async (trx) => {
      await outbox.event(trx, evt, { id: "committed" });
      // Not visible to subscribers before the commit.
      await new Promise((r) => setTimeout(r, 300));
      expect(got).toEqual([]);
    });
    await waitFor(() => got.length === 1);
    await new Promise((r) => setTimeout(r, 300));
    await relay.stop();
    sub.unsubscribe();
    expect(got).toEqual(["committed"]);
    const rows = await db.knex("outbox").select("published_at");
    expect(rows.every((r: { published_at: Date | null }) => r.published_at !== null)).toBe(true);
  });

  it("relays a row again after a crash between publish and mark, and the stream drops the copy", async () => {
    const msgId = randomUUID();
    const subject = eventSubject(prefix, evt.name);
    // As if a relay published and then died before marking the row.
    await db.knex("outbox").insert({ subject, payload: JSON.stringify({ id: "x" }), msg_id: msgId });
    expect((await bus.publish(subject, { id: "x" }, msgId)).duplicate).toBe(false);
    const relay = new OutboxRelay(db.knex, bus, log);
    await relay.drain();
    expect((await bus.publish(subject, { id: "x" }, msgId)).duplicate).toBe(true);
    const row = await db.knex("outbox").where({ msg_id: msgId }).first();
    expect(row.published_at).not.toBeNull();
  });

  it("notify reaches this process's own listeners; a broadcast reaches only the other processes", async () => {
    const other = await connectBus({
      url: NATS_URL,
      prefix,
      name: "bus-test-2",
      log,
      deadLetters: async () => undefined,
    });
    try {
      const live = `${prefix}.live.${randomUUID()}`;
      const fan = `${prefix}.fan.${randomUUID()}`;
      const heard: string[] = [];
      const stop = [
        bus.listen(live, (p) => heard.push(`listen:${(p as { m: string }).m}`)),
        bus.onBroadcast(fan, (p) => heard.push(`self:${(p as { m: string }).m}`)),
        other.onBroadcast(fan, (p) => heard.push(`other:${(p as { m: string }).m}`)),
      ];
      // Subscriptions reach the server before the messages do.
      await new Promise((r) => setTimeout(r, 200));
      bus.notify(live, { m: "notified" });
      bus.broadcast(fan, { m: "from-bus" });
      other.broadcast(fan, { m: "from-other" });
      await waitFor(() => heard.length >= 3);
      await new Promise((r) => setTimeout(r, 300));
      expect(heard.sort()).toEqual(["listen:notified", "other:from-bus", "self:from-other"]);
      stop.forEach((s) => s());
    } finally {
      await other.close();
    }
  });
});
