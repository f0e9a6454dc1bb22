import { z } from "zod";
import { RetentionPolicy, StorageType, DiscardPolicy, type StreamConfig } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";

/** A domain event: a name under `<prefix>.events.` and the schema of its payload. */
export interface EventDef<T extends z.ZodType = z.ZodType> {
  name: string;
  schema: T;
}

/** A durable work queue: its name, payload schema and delivery policy. */
export interface QueueDef<T extends z.ZodType = z.ZodType> {
  name: string;
  schema: T;
  /** Deliveries before a job is moved to the dead letters. */
  maxAttempts: number;
  /** Delay before each retry after a failure (the last value repeats). */
  backoffMs: number[];
  /** How long a delivery may stay unacknowledged before it is redelivered (a crashed worker). */
  ackWaitMs: number;
  /** Jobs handled at once by one worker process. */
  concurrency: number;
}

/** Declares an event. */
export function defineEvent<T extends z.ZodType>(name: string, schema: T): EventDef<T> {
  return { name, schema };
}

/** Declares a work queue with sane delivery defaults. */
export function defineQueue<T extends z.ZodType>(
  name: string,
  schema: T,
  opts: Partial<Omit<QueueDef, "name" | "schema">> = {},
): QueueDef<T> {
  if (!/^[a-z0-9_-]+$/.test(name)) throw new Error(`queue name ${name} must be [a-z0-9_-]`);
  return {
    name,
    schema,
    maxAttempts: opts.maxAttempts ?? 5,
    backoffMs: opts.backoffMs ?? [1000, 5000, 30000, 120000],
    ackWaitMs: opts.ackWaitMs ?? 30000,
    concurrency: opts.concurrency ?? 4,
  };
}

/** Subject of an event. */
export const eventSubject = (prefix: string, name: string) => `${prefix}.events.${name}`;
/** Subject of a queue's jobs. */
export const jobSubject = (prefix: string, queue: string) => `${prefix}.jobs.${queue}`;
/** Stream names of an installation. */
export const streamNames = (prefix: string) => ({ events: `${prefix}_EVENTS`, jobs: `${prefix}_JOBS` });

/** The window in which a repeated message id is dropped by JetStream. */
export const DEDUPE_WINDOW_MS = 10 * 60 * 1000;

/** Queues of the platform itself; modules list theirs in modules/catalog.ts (MODULE_QUEUES). */
export const QUEUES: QueueDef[] = [];

/** The events of every module. */
export const EVENTS: EventDef[] = [
  defineEvent("system.started", z.object({ node: z.string(), roles: z.array(z.string()) })),
];

/** The streams of an installation: events (kept a week) and jobs (work queue: a job is kept until acknowledged). */
export function streamConfigs(prefix: string): (Partial<StreamConfig> & { name: string })[] {
  const names = streamNames(prefix);
  return [
    {
      name: names.events,
      subjects: [`${prefix}.events.>`],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: nanos(7 * 24 * 3600 * 1000),
      duplicate_window: nanos(DEDUPE_WINDOW_MS),
      discard: DiscardPolicy.Old,
    },
    {
      name: names.jobs,
      subjects: [`${prefix}.jobs.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: nanos(DEDUPE_WINDOW_MS),
    },
  ];
}
