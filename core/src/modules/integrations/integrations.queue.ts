import { z } from "zod";
import { defineQueue } from "../../platform/bus/topology.js";

/** Verified deliveries waiting to be processed: a group of one organization's deliveries per job. */
export const WEBHOOK_QUEUE = defineQueue(
  "integration-webhooks",
  z.object({ orgId: z.uuid(), deliveryIds: z.array(z.uuid()).min(1).max(100) }),
  // A short ack wait (the consumer heartbeats while a handler runs): deliveries held by a crashed process come back soon.
  { concurrency: 4, ackWaitMs: 15_000, maxAttempts: 5, backoffMs: [5_000, 30_000, 120_000, 600_000] },
);
