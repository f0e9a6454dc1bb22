import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Knex } from "knex";
import type { z } from "zod";
import type { Bus, Job } from "../../platform/bus/bus.js";
import { withOrg } from "../../platform/db/tenant.js";
import type { Logger } from "../../platform/log.js";
import type { ModelRow } from "../ai/models.service.js";
import { presentModel } from "../ai/models.service.js";
import { KB_INDEX_QUEUE, progressSubject, type KbProgress } from "./kb.events.js";
import { documentDir, embeddingChoice, type KbDeps } from "./kb.service.js";
import { chunkBlocks } from "./parse/chunk.js";
import { ParseFailed, parseDocument, type Kind } from "./parse/parser.js";

/** What the ingestion worker needs. */
export interface IngestDeps extends KbDeps {
  knex: Knex;
  bus: Bus;
  log: Logger;
}

type Payload = z.infer<typeof KB_INDEX_QUEUE.schema>;
const EMBED_BATCH = 16;

/** The organization's index model, fixed on first use (changing it takes a re-index). */
async function indexModel(deps: IngestDeps, orgId: string): Promise<ModelRow | null> {
  return withOrg(deps.knex, orgId, async (trx) => {
    const state = await trx("kb_index_state").where({ org_id: orgId }).first();
    if (state) {
      if (!state.embedding_model_id) return null;
      const row = await trx("ai_models").where({ id: state.embedding_model_id }).first();
      return row ? presentModel(row) : null;
    }
    return fixIndexModel(trx, orgId, false);
  });
}

/** Records the organization's current embedding model as the index's (`replace`: also over an earlier one). */
async function fixIndexModel(
  trx: Knex.Transaction,
  orgId: string,
  replace: boolean,
): Promise<ModelRow | null> {
  const { model } = await embeddingChoice(trx, orgId);
  const values = {
    embedding_model_id: model?.id ?? null,
    dimension: model?.metadata.embeddingLength ?? null,
  };
  const insert = trx("kb_index_state")
    .insert({ org_id: orgId, ...values })
    .onConflict("org_id");
  await (replace ? insert.merge({ ...values, updated_at: trx.fn.now() }) : insert.ignore());
  return model;
}

/** Handles one index job: ingest a document's current generation, remove a deleted one, or re-index all. */
export async function handleIndexJob(deps: IngestDeps, job: Job<Payload>): Promise<void> {
  await indexJob(deps, job);
  if (!job.payload.reindex) await endReindexWhenDone(deps, job.payload.orgId);
}

/** Ends an in-place re-index once no document waits for its new passages (failed ones keep their old). */
async function endReindexWhenDone(deps: IngestDeps, orgId: string): Promise<void> {
  await withOrg(deps.knex, orgId, (trx) =>
    trx("kb_index_state")
      .where({ org_id: orgId, reindexing: true })
      .whereNotExists(
        trx("kb_documents")
          .where({ org_id: orgId })
          .whereNot({ status: "failed" })
          .whereRaw("generation is distinct from indexed_generation"),
      )
      .update({ reindexing: false, updated_at: trx.fn.now() }),
  );
}

async function indexJob(deps: IngestDeps, job: Job<Payload>): Promise<void> {
  const p = job.payload;
  if (p.reindex) return reindexOrganization(deps, p.orgId);
  if (!p.documentId) return;
  const doc = await withOrg(deps.knex, p.orgId, (trx) =>
    trx("kb_documents").where({ id: p.documentId }).first(),
  );
  if (!doc) {
    // Deleted: its chunks and files go too; then search no longer needs to leave it out by hand.
    await deps.index.removeDocument(p.orgId, p.documentId);
    await rm(documentDir(deps.config, p.orgId, p.documentId), { recursive: true, force: true });
    await withOrg(deps.knex, p.orgId, (trx) =>
      trx("kb_document_tombstones").where({ document_id: p.documentId }).delete(),
    );
    return;
  }
  // A newer upload or retry superseded this job, or a redelivery of a job that finished.
  if (doc.generation !== p.generation) return;
  if (doc.status === "indexed") {
    // Redelivered after the switch: only the old generations' removal may be left to do.
    await settle(deps, p.orgId, p.documentId, p.generation);
    return;
  }
  await ingest(deps, job, doc as Record<string, unknown>);
}

async function ingest(deps: IngestDeps, job: Job<Payload>, doc: Record<string, unknown>) {
  const orgId = job.payload.orgId;
  const id = doc.id as string;
  const generation = doc.generation as number;
  const collectionId = doc.collection_id as string;
  /** Records progress; false when a newer upload has superseded this generation (nothing was recorded). */
  const stage = async (status: string, progress: number, extra: Record<string, unknown> = {}) => {
    const updated = await withOrg(deps.knex, orgId, (trx) =>
      trx("kb_documents")
        .where({ id, generation })
        // Progress: the stall watchdog (kb.watchdog.ts) starts counting again.
        .update({ status, progress, updated_at: trx.fn.now(), stall_retries: 0, ...extra }),
    );
    if (updated === 0) return false;
    const msg: KbProgress = {
      documentId: id,
      collectionId,
      status,
      progress,
      error: (extra.error as string | undefined) ?? null,
    };
    deps.bus.notify(progressSubject(deps.bus.prefix, orgId), msg);
    return true;
  };

  await stage("extracting", 5);
  const file = path.join(documentDir(deps.config, orgId, id), doc.sha256 as string);
  let extracted;
  try {
    extracted = await parseDocument(file, doc.kind as Kind, {
      timeoutMs: deps.config.kb.parseTimeoutMs,
      memoryMb: deps.config.kb.parseMemoryMb,
      zipMaxEntries: deps.config.kb.zipMaxEntries,
      zipMaxBytes: deps.config.kb.zipMaxBytes,
      maxPages: deps.config.kb.maxPages,
      maxTextChars: deps.config.kb.maxTextChars,
    });
  } catch (err) {
    // A document that cannot be read fails for good (with its reason); trying again would fail the same way.
    if (err instanceof ParseFailed) {
      deps.log.warn({ documentId: id, code: err.code }, "document could not be read");
      await stage("failed", 0, { error: err.message });
      return;
    }
    throw err;
  }

  await stage("chunking", 25, { pages: extracted.pages ?? null });
  const chunks = chunkBlocks(extracted.blocks, {
    tokens: deps.config.kb.chunkTokens,
    overlap: deps.config.kb.chunkOverlap,
  });

  const model = deps.ai ? await indexModel(deps, orgId) : null;
  let vectors: number[][] | null = null;
  if (model && deps.ai) {
    await stage("embedding", 30);
    vectors = [];
    try {
      for (let i = 0; i < chunks.length; i += EMBED_BATCH) {
        vectors.push(
          ...(await deps.ai.embed(
            model,
            chunks.slice(i, i + EMBED_BATCH).map((c) => c.text),
          )),
        );
        const done = Math.min(chunks.length, i + EMBED_BATCH);
        if (done < chunks.length) await stage("embedding", 30 + Math.floor((60 * done) / chunks.length));
      }
    } catch (err) {
      if (job.attempt >= KB_INDEX_QUEUE.maxAttempts) {
        await stage("failed", 0, { error: `Embedding failed: ${(err as Error).message}`.slice(0, 300) });
        return;
      }
      throw err;
    }
  }
  // Superseded meanwhile (the same name uploaded again): the newer generation's job indexes it.
  if (!(await stage("embedding", 92))) return;
  // New chunks in, then search switches to them (one row update), then the old ones go: no gap, no mix.
  await deps.index.addGeneration(
    orgId,
    { id, name: (doc.path ?? doc.name) as string, collectionId, generation },
    chunks,
    vectors,
  );
  await stage("indexed", 100, {
    chunk_count: chunks.length,
    has_vectors: !!vectors,
    error: null,
    indexed_at: new Date(),
    indexed_generation: generation,
    stale: true,
  });
  await settle(deps, orgId, id, generation);
  // Files of earlier generations (a replaced upload) are no longer needed. The row is read again: a newer upload
  // of the same name (the same request may hold two) may have come in meanwhile, and its file must stay.
  const current = await withOrg(deps.knex, orgId, (trx) =>
    trx("kb_documents").where({ id }).first("sha256", "generation"),
  );
  if (current?.generation !== generation) return;
  const dir = documentDir(deps.config, orgId, id);
  for (const name of await readdir(dir).catch(() => [] as string[]))
    if (name !== current.sha256) await rm(path.join(dir, name), { force: true });
}

/** Removes the chunks of generations older than the served one, then marks the document settled. */
async function settle(deps: IngestDeps, orgId: string, id: string, generation: number) {
  await deps.index.dropOlderGenerations(orgId, id, generation);
  await withOrg(deps.knex, orgId, (trx) =>
    trx("kb_documents").where({ id, generation, indexed_generation: generation }).update({ stale: false }),
  );
}

/** Drops the organization's index, fixes the current embedding model, and queues every document again. */
async function reindexOrganization(deps: IngestDeps, orgId: string) {
  // With a model of the old one's vector size the table stays: each document keeps serving its passages (by
  // full text; vectors of two models do not compare) until its new ones are in, as a re-uploaded document
  // does. Otherwise the table must be made again, and search finds nothing until documents come back.
  const { model } = await withOrg(deps.knex, orgId, (trx) => embeddingChoice(trx, orgId));
  const have = await deps.index.dimension(orgId);
  const inPlace = have !== undefined && have === (model?.metadata.embeddingLength ?? null);
  if (!inPlace) await deps.index.drop(orgId);
  await withOrg(deps.knex, orgId, async (trx) => {
    await fixIndexModel(trx, orgId, true);
    await trx("kb_index_state").where({ org_id: orgId }).update({ reindexing: inPlace });
    const docs = (await trx("kb_documents")
      .update({
        generation: trx.raw("generation + 1"),
        ...(inPlace ? { stale: true } : { indexed_generation: null }),
        status: "queued",
        progress: 0,
        error: null,
      })
      .returning(["id", "generation"])) as { id: string; generation: number }[];
    for (const d of docs)
      await deps.outbox.job(
        trx,
        KB_INDEX_QUEUE,
        { orgId, documentId: d.id, generation: d.generation },
        `kb:${d.id}:${d.generation}:reindex`,
      );
  });
}
