import { z } from "zod";
import { defineQueue } from "../../platform/bus/topology.js";

/**
 * Brings the index in line with one document row: ingest its current generation, or remove its chunks
 * and file when the row is gone. With `reindex`, rebuilds the organization's whole index.
 */
export const KB_INDEX_QUEUE = defineQueue(
  "kb-index",
  z.object({
    orgId: z.uuid(),
    documentId: z.uuid().optional(),
    generation: z.number().int().min(0),
    reindex: z.boolean().optional(),
  }),
  // One document at a time per worker: parsing and embedding use the CPU fully, and one writer per table.
  { concurrency: 1, ackWaitMs: 15_000, maxAttempts: 4, backoffMs: [2000, 10000, 60000] },
);

/** The subject of ephemeral progress messages of an organization's documents. */
export const progressSubject = (prefix: string, orgId: string) => `${prefix}.kb.progress.${orgId}`;

/** One progress message. */
export interface KbProgress {
  documentId: string;
  collectionId: string;
  status: string;
  progress: number;
  error: string | null;
}
