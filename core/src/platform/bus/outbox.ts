import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import type { z } from "zod";
import type { Logger } from "../log.js";
import type { Bus } from "./bus.js";
import { eventSubject, jobSubject, type EventDef, type QueueDef } from "./topology.js";

/** Writes events and jobs into the outbox table inside the caller's transaction. */
export class Outbox {
  private readonly listeners = new Set<() => void>();

  constructor(private readonly prefix: string) {}

  /** Publishes an event once the transaction commits. */
  async event<T extends z.ZodType>(
    trx: Knex.Transaction,
    def: EventDef<T>,
    payload: z.infer<T>,
    msgId = randomUUID(),
  ) {
    await this.add(trx, eventSubject(this.prefix, def.name), def.schema.parse(payload), msgId);
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
    trx.executionPromise.then(() => this.listeners.forEach((l) => l())).catch(() => undefined);
  }

  /** Called after each commit that added rows. */
  onCommit(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

const CLEANUP_MS = 5 * 60_000;

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
      const sent = await this.knex.transaction(async (trx) => {
        const rows = (await trx("outbox")
          .select("id", "subject", "payload", "msg_id")
          .whereNull("published_at")
          .orderBy("id")
          .limit(batch)
          .forUpdate()
          .skipLocked()) as { id: string; subject: string; payload: unknown; msg_id: string }[];
        if (rows.length === 0) return 0;
        await Promise.all(rows.map((r) => this.bus.publish(r.subject, r.payload, r.msg_id)));
        await trx("outbox")
          .whereIn(
            "id",
            rows.map((r) => r.id),
          )
          .update({ published_at: trx.fn.now() });
        return rows.length;
      });
      more = sent === batch;
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
