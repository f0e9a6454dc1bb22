import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import type { z } from "zod";
import type { Logger } from "../log.js";
import type { Bus } from "./bus.js";
import { eventSubject, jobSubject, type EventDef, type QueueDef } from "./topology.js";

/** An event for Outbox.events. */
export interface OutboxEvent<T extends z.ZodType = z.ZodType> {
  def: EventDef<T>;
  payload: z.infer<T>;
}

/** Writes events and jobs into the outbox table inside the caller's transaction. */
export class Outbox {
  private readonly listeners = new Set<() => void>();

  constructor(readonly prefix: string) {}

  /** Publishes an event once the transaction commits. */
  async event<T extends z.ZodType>(
    trx: Knex.Transaction,
    def: EventDef<T>,
    payload: z.infer<T>,
    msgId = randomUUID(),
  ) {
    await this.add(trx, eventSubject(this.prefix, def.name), def.schema.parse(payload), msgId);
  }

  /** Publishes several events once the transaction commits (one statement per thousand). */
  async events(trx: Knex.Transaction, events: OutboxEvent[]) {
    for (let i = 0; i < events.length; i += 1000) {
      await trx("outbox")
        .insert(
          events.slice(i, i + 1000).map((e) => ({
            subject: eventSubject(this.prefix, e.def.name),
            payload: JSON.stringify(e.def.schema.parse(e.payload)),
            msg_id: randomUUID(),
          })),
        )
        .onConflict("msg_id")
        .ignore();
    }
    if (events.length) trx.executionPromise.then(() => this.committed()).catch(() => undefined);
  }

  /** Enqueues a job once the transaction commits; the job id dedupes repeated enqueues. */
  async job<T extends z.ZodType>(
    trx: Knex.Transaction,
    def: QueueDef<T>,
    payload: z.infer<T>,
    jobId: string,
  ) {
    await this.add(trx, jobSubject(this.prefix, def.name), def.schema.parse(payload), jobId);
  }

  private async add(trx: Knex.Transaction, subject: string, payload: unknown, msgId: string) {
    await trx("outbox")
      .insert({ subject, payload: JSON.stringify(payload), msg_id: msgId })
      .onConflict("msg_id")
      .ignore();
    // Wake the relay as soon as the row is visible, instead of waiting for its next poll.
    trx.executionPromise.then(() => this.committed()).catch(() => undefined);
  }

  /** Wakes the relay: rows were added by a statement that has committed (also one that wrote them in SQL). */
  committed(): void {
    this.listeners.forEach((l) => l());
  }

  /** Called after each commit that added rows. */
  onCommit(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

const CLEANUP_MS = 5 * 60_000;
/** How long a relay pass owns the rows it claimed (longer than a publish's timeout). */
const LEASE_SECONDS = 30;

/** Moves committed outbox rows to JetStream; safe on several nodes (SKIP LOCKED) and after crashes (msg id dedupe). */
export class OutboxRelay {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private cleaned = 0;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly knex: Knex,
    private readonly bus: Bus,
    private readonly log: Logger,
    private readonly opts: { pollMs?: number; batch?: number } = {},
  ) {}

  start(outbox?: Outbox): void {
    this.unsubscribe = outbox?.onCommit(() => this.kick());
    this.schedule();
  }

  /** Runs a relay pass now (or right after the one under way). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = this.drain()
      .catch((err: unknown) => this.log.warn({ err }, "outbox relay pass failed; will retry"))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        } else this.schedule();
      });
  }

  private schedule() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.kick(), this.opts.pollMs ?? 500);
  }

  /** Publishes until the outbox is empty. */
  async drain(): Promise<void> {
    const batch = this.opts.batch ?? 200;
    // The idle poll (every pollMs on every node, forever) is one statement on the partial index of unpublished
    // rows; the locking transaction runs only when there is something to publish.
    const pending = await this.knex("outbox").whereNull("published_at").first("id");
    for (let more = Boolean(pending); more;) {
      // Claim a batch with a lease, in one statement: no transaction stays open while the bus answers (or
      // does not), and another node skips these rows until the lease ends.
      const rows = (
        await this.knex.raw(
          `update outbox set lease_until = now() + make_interval(secs => ?)
           where id in (select id from outbox
             where published_at is null and (lease_until is null or lease_until < now())
             order by id limit ? for update skip locked)
           returning id, subject, payload, msg_id`,
          [LEASE_SECONDS, batch],
        )
      ).rows as { id: string; subject: string; payload: unknown; msg_id: string }[];
      if (rows.length === 0) break;
      rows.sort((a, b) => Number(a.id) - Number(b.id));
      // A publish that fails leaves its row to the next pass once the lease ends; the msg id makes a repeat of one
      // that did reach the stream a duplicate the stream drops.
      const results = await Promise.allSettled(
        rows.map((r) => this.bus.publish(r.subject, r.payload, r.msg_id)),
      );
      const done = rows.filter((_, i) => results[i]?.status === "fulfilled").map((r) => r.id);
      if (done.length)
        await this.knex("outbox")
          .whereIn("id", done)
          .update({ published_at: this.knex.fn.now(), lease_until: null });
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) {
        // Released at once, so the next pass (every pollMs) tries again as soon as the bus is back.
        const left = rows.filter((_, i) => results[i]?.status === "rejected").map((r) => r.id);
        await this.knex("outbox").whereIn("id", left).update({ lease_until: null });
        throw failed.reason;
      }
      more = rows.length === batch;
    }
    // Published rows are kept a day for inspection, then removed (looked at every few minutes, not every pass).
    if (Date.now() - this.cleaned < CLEANUP_MS) return;
    this.cleaned = Date.now();
    await this.knex("outbox").where("published_at", "<", this.knex.raw("now() - interval '1 day'")).delete();
  }

  /** Stops polling and waits for the pass under way, then relays what is left once more. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    clearTimeout(this.timer);
    await this.running;
    await this.drain().catch((err: unknown) => this.log.warn({ err }, "final outbox pass failed"));
  }
}
