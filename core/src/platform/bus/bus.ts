import { connect, createInbox, type Msg, type NatsConnection } from "@nats-io/transport-node";
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StreamConfig,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import type { Knex } from "knex";
import type { z } from "zod";
import type { Logger } from "../log.js";
import { withDeadline } from "../deadline.js";
import { jobSubject, streamConfigs, streamNames, type QueueDef, QUEUES } from "./topology.js";

/** A dead-lettered job, recorded where operators can see and replay it. */
export interface DeadLetter {
  queue: string;
  jobId: string;
  payload: unknown;
  error: string;
  deliveries: number;
}

/** Where dead letters go (the database in production; tests may pass a collector). */
export type DeadLetterSink = (dl: DeadLetter) => Promise<void>;

/** What a job handler is given. */
export interface Job<T> {
  id: string;
  payload: T;
  /** 1 on the first delivery. */
  attempt: number;
}

/** A running consumer of one queue. */
export interface Worker {
  /** Stops taking jobs and waits for the ones in hand to finish. */
  stop(): Promise<void>;
}

/** The bus as the rest of core sees it. */
export interface Bus {
  readonly prefix: string;
  /** Publishes to JetStream and waits for the stream's ack; a repeated msgId within the window is dropped. */
  publish(subject: string, payload: unknown, msgId?: string): Promise<{ duplicate: boolean }>;
  /** Adds a job directly (outside a transaction); use `enqueueAfterCommit` inside one. */
  enqueue<T extends z.ZodType>(
    queue: QueueDef<T>,
    payload: z.infer<T>,
    jobId: string,
  ): Promise<{ duplicate: boolean }>;
  /** Consumes a queue until stopped. */
  work<T extends z.ZodType>(
    queue: QueueDef<T>,
    handler: (job: Job<z.infer<T>>) => Promise<void>,
  ): Promise<Worker>;
  /** Sends an ephemeral message (core NATS, not stored): progress, presence. Lost if nobody listens. */
  notify(subject: string, payload: unknown): void;
  /** Listens to ephemeral messages on a subject (wildcards allowed); returns the function that stops it. */
  listen(subject: string, handler: (payload: unknown, subject: string) => void): () => void;
  /**
   * Sends an ephemeral message to the other processes only (a connection that never hears its own messages):
   * for fan-out a process also delivers locally, without the round trip through NATS. Broadcast subjects are
   * their own: the same subject is not also used with notify/listen.
   */
  broadcast(subject: string, payload: unknown): void;
  /** Listens to what other processes broadcast; returns the function that stops it. */
  onBroadcast(subject: string, handler: (payload: unknown, subject: string) => void): () => void;
  /**
   * Serves requests (core NATS request/reply): one member of the queue group gets each message, with the
   * subject to answer on (`answer`), which may be answered several times (streamed replies). Returns the
   * function that stops serving.
   */
  serve(
    subject: string,
    queue: string,
    handler: (payload: unknown, replyTo: string | undefined) => void,
  ): () => void;
  /** Sends a request whose answers go to `replyTo` (a subject under an inbox). */
  request(subject: string, payload: unknown, replyTo: string): void;
  /** Sends an answer to a request. */
  answer(replyTo: string, payload: unknown): void;
  /**
   * A private inbox: answers to subjects under `prefix` come to `handler`, with `noResponders` when nobody
   * served the request's subject. Returns the prefix and the function that stops it.
   */
  inbox(handler: (payload: unknown, subject: string, noResponders: boolean) => void): {
    prefix: string;
    stop: () => void;
  };
  isConnected(): boolean;
  /** A round trip to the server (PING/PONG); rejects when it does not come back within `timeoutMs`. */
  ping(timeoutMs: number): Promise<void>;
  /** Drains consumers and closes the connection. */
  close(): Promise<void>;
}

async function ensureStream(
  jsm: JetStreamManager,
  cfg: Partial<StreamConfig> & { name: string },
): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
    await jsm.streams.update(cfg.name, cfg);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.status === 404) await jsm.streams.add(cfg);
    else throw err;
  }
}

/** Creates or updates the streams and the durable consumer of each queue. */
export async function ensureTopology(
  jsm: JetStreamManager,
  prefix: string,
  queues: QueueDef[],
): Promise<void> {
  for (const cfg of streamConfigs(prefix)) await ensureStream(jsm, cfg);
  const stream = streamNames(prefix).jobs;
  for (const q of queues) {
    const cfg = {
      durable_name: q.name,
      filter_subject: jobSubject(prefix, q.name),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(q.ackWaitMs),
      // One more than our attempts: the extra delivery lets us dead-letter a job whose worker died each time.
      max_deliver: q.maxAttempts + 1,
      max_ack_pending: 1000,
    };
    try {
      await jsm.consumers.info(stream, q.name);
      await jsm.consumers.update(stream, q.name, cfg);
    } catch (err) {
      if (err instanceof JetStreamApiError && err.status === 404) await jsm.consumers.add(stream, cfg);
      else throw err;
    }
  }
}

export interface ConnectOptions {
  url: string;
  prefix: string;
  token?: string;
  name: string;
  log: Logger;
  deadLetters: DeadLetterSink;
  /** Queues besides the ones declared in topology.ts (tests). */
  extraQueues?: QueueDef[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Connects to NATS, ensures the topology, and returns the bus. */
export async function connectBus(opts: ConnectOptions): Promise<Bus> {
  const nc: NatsConnection = await connect({
    servers: opts.url,
    name: opts.name,
    token: opts.token,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
  });
  const log = opts.log.child({ module: "bus" });
  const others: NatsConnection = await connect({
    servers: opts.url,
    name: `${opts.name ?? "worksynapse"}-broadcast`,
    token: opts.token,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    noEcho: true,
  }).catch(async (err: unknown) => {
    await nc.close();
    throw err;
  });
  const jsm = await jetstreamManager(nc);
  const queues = [...QUEUES, ...(opts.extraQueues ?? [])];
  await ensureTopology(jsm, opts.prefix, queues);
  const js: JetStreamClient = jetstream(nc);
  const workers = new Set<Worker>();

  const publish = async (subject: string, payload: unknown, msgId?: string) => {
    const ack = await js.publish(
      subject,
      encoder.encode(JSON.stringify(payload)),
      msgId ? { msgID: msgId } : {},
    );
    return { duplicate: ack.duplicate };
  };

  const work = async <T extends z.ZodType>(
    queue: QueueDef<T>,
    handler: (job: Job<z.infer<T>>) => Promise<void>,
  ) => {
    const consumer = await js.consumers.get(streamNames(opts.prefix).jobs, queue.name);
    const messages: ConsumerMessages = await consumer.consume({ max_messages: queue.concurrency });
    const inFlight = new Set<Promise<void>>();
    const qlog = log.child({ queue: queue.name });

    const deadLetter = async (m: JsMsg, jobId: string, payload: unknown, error: string) => {
      await opts.deadLetters({ queue: queue.name, jobId, payload, error, deliveries: m.info.deliveryCount });
      m.term(error.slice(0, 200));
      qlog.error({ jobId, error, deliveries: m.info.deliveryCount }, "job moved to dead letters");
    };

    const handle = async (m: JsMsg) => {
      const jobId = m.headers?.get("Nats-Msg-Id") || `${queue.name}:${m.seq}`;
      let raw: unknown;
      try {
        raw = JSON.parse(decoder.decode(m.data));
      } catch {
        return deadLetter(m, jobId, decoder.decode(m.data), "payload is not JSON");
      }
      const parsed = queue.schema.safeParse(raw);
      if (!parsed.success) return deadLetter(m, jobId, raw, `payload invalid: ${parsed.error.message}`);
      const attempt = m.info.deliveryCount;
      if (attempt > queue.maxAttempts) {
        return deadLetter(m, jobId, raw, `no attempt finished after ${queue.maxAttempts} deliveries`);
      }
      // Keep the delivery ours while the handler runs longer than ack_wait.
      const heartbeat = setInterval(() => m.working(), Math.max(500, queue.ackWaitMs / 2));
      try {
        await handler({ id: jobId, payload: parsed.data, attempt });
        m.ack();
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        if (attempt >= queue.maxAttempts) await deadLetter(m, jobId, raw, message);
        else {
          const delay = queue.backoffMs[Math.min(attempt - 1, queue.backoffMs.length - 1)] ?? 1000;
          qlog.warn({ jobId, attempt, delay, err: message }, "job failed; will retry");
          m.nak(delay);
        }
      } finally {
        clearInterval(heartbeat);
      }
    };

    const loop = (async () => {
      for await (const m of messages) {
        const p = handle(m).catch((err: unknown) => {
          // Only the dead-letter sink can throw here; leaving the message unacked makes it come back.
          qlog.error({ err }, "job handling failed before ack");
        });
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
        while (inFlight.size >= queue.concurrency) await Promise.race(inFlight);
      }
    })();

    const worker: Worker = {
      stop: async () => {
        await messages.close();
        await loop;
        await Promise.all(inFlight);
        workers.delete(worker);
      },
    };
    workers.add(worker);
    return worker;
  };

  const send = (c: NatsConnection, subject: string, payload: unknown) => {
    if (!c.isClosed()) c.publish(subject, encoder.encode(JSON.stringify(payload)));
  };
  /**
   * Subscribes with JSON payloads; `queue`: one member of the group gets each message. A "no responders"
   * status (an empty message with a 503 header, sent to a request's reply subject) comes as an undefined payload.
   */
  const subscribe = (
    c: NatsConnection,
    subject: string,
    handler: (payload: unknown, m: Msg) => void,
    queue?: string,
  ) => {
    const sub = c.subscribe(subject, {
      queue,
      callback: (err, m) => {
        if (err) return;
        try {
          handler(m.headers?.code === 503 ? undefined : JSON.parse(decoder.decode(m.data)), m);
        } catch (e) {
          log.warn({ err: e, subject: m.subject }, "message handler failed");
        }
      },
    });
    return () => sub.unsubscribe();
  };

  return {
    prefix: opts.prefix,
    publish,
    enqueue: async (queue, payload, jobId) =>
      publish(jobSubject(opts.prefix, queue.name), queue.schema.parse(payload), jobId),
    work,
    notify: (subject, payload) => send(nc, subject, payload),
    listen: (subject, handler) => subscribe(nc, subject, (p, m) => handler(p, m.subject)),
    broadcast: (subject, payload) => send(others, subject, payload),
    onBroadcast: (subject, handler) => subscribe(others, subject, (p, m) => handler(p, m.subject)),
    serve: (subject, queue, handler) => subscribe(nc, subject, (p, m) => handler(p, m.reply), queue),
    request: (subject, payload, replyTo) => {
      if (!nc.isClosed()) nc.publish(subject, encoder.encode(JSON.stringify(payload)), { reply: replyTo });
    },
    answer: (replyTo, payload) => send(nc, replyTo, payload),
    inbox: (handler) => {
      const prefix = createInbox();
      const stop = subscribe(nc, `${prefix}.*`, (p, m) => handler(p, m.subject, m.headers?.code === 503));
      return { prefix, stop };
    },
    isConnected: () => !nc.isClosed() && !nc.isDraining(),
    ping: async (timeoutMs) => {
      if (nc.isClosed()) throw new Error("connection closed");
      // flush() waits for the server's PONG; while disconnected it waits for the reconnect.
      await withDeadline(nc.flush(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
    },
    close: async () => {
      await Promise.all([...workers].map((w) => w.stop()));
      if (!others.isClosed()) await others.drain();
      if (!nc.isClosed()) await nc.drain();
    },
  };
}

/** Records a job as done inside the transaction of its side effect; false when it already ran. */
export async function claimJob(trx: Knex.Transaction, queue: string, jobId: string): Promise<boolean> {
  const rows = await trx("processed_jobs")
    .insert({ job_id: jobId, queue })
    .onConflict("job_id")
    .ignore()
    .returning("job_id");
  return rows.length > 0;
}

/** Dead letters stored in the database's dead_letters table (one row per queue and job). */
export function databaseDeadLetters(knex: Knex): DeadLetterSink {
  return async (dl) => {
    await knex("dead_letters")
      .insert({
        queue: dl.queue,
        job_id: dl.jobId,
        payload: JSON.stringify(dl.payload ?? null),
        error: dl.error,
        deliveries: dl.deliveries,
      })
      .onConflict(["queue", "job_id"])
      .ignore();
  };
}
