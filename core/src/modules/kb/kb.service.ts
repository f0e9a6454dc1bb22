import { createReadStream } from "node:fs";
import path from "node:path";
import type { Knex } from "knex";
import type { Config } from "../../config/schema.js";
import { can, type Caller } from "../../platform/auth/caller.js";
import type { Outbox } from "../../platform/bus/outbox.js";
import { withDeadline } from "../../platform/deadline.js";
import { AppError } from "../../platform/http/errors.js";
import { actorOf, audit } from "../identity/audit.js";
import { listGrants, replaceGrants, type Grant } from "../identity/grants.js";
import { orgModels, presentModel, type ModelRow } from "../ai/models.service.js";
import type { Inference } from "../ai/runtime.js";
import { KB_INDEX_QUEUE } from "./kb.events.js";
import { HEADING_SEP, type Hit, type KbIndex, type SearchMode } from "./kb.index.js";

/** An authenticated service call: who asks, in which org-scoped transaction. */
export interface Svc {
  caller: Caller;
  trx: Knex.Transaction;
}

/** What the knowledge base needs from the process. */
export interface KbDeps {
  config: Config;
  index: KbIndex;
  outbox: Outbox;
  ai: Inference | null;
}

/** What the caller may do with a collection. */
export type CollectionAccess = "owner" | "manage" | "view";

/** Where the knowledge base keeps its files and index. */
export const kbDir = (config: Config) => config.kb.dir ?? path.join(config.dataDir, "kb");
/** The folder of one document's stored files. */
export const documentDir = (config: Config, orgId: string, documentId: string) =>
  path.join(kbDir(config), "files", orgId, documentId);

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

// ---------- collections ----------

/** Collections joined with what the caller may do with each (kb.admin manages them all). */
function collectionsOf(svc: Svc) {
  const { caller, trx } = svc;
  const admin = can(caller, "kb.admin");
  const access = admin
    ? trx.raw("coalesce(kb_collection_access(c.id, c.owner_id, ?), 'manage') as access", [caller.userId])
    : trx.raw("kb_collection_access(c.id, c.owner_id, ?) as access", [caller.userId]);
  const q = trx({ c: "kb_collections" })
    .join({ o: "users" }, "o.id", "c.owner_id")
    .select(
      "c.*",
      "o.display_name as owner_name",
      access,
      trx.raw("(select count(*)::int from kb_documents d where d.collection_id = c.id) as documents"),
    );
  if (!admin) q.whereRaw("kb_collection_access(c.id, c.owner_id, ?) is not null", [caller.userId]);
  return q;
}

function presentCollection(r: Record<string, unknown>) {
  return {
    id: r.id as string,
    name: r.name as string,
    description: r.description as string,
    owner: { id: r.owner_id as string, displayName: r.owner_name as string },
    access: r.access as CollectionAccess,
    documents: r.documents as number,
    createdAt: iso(r.created_at as Date) as string,
  };
}

/** The collections the caller may read. */
export async function listCollections(svc: Svc) {
  return ((await collectionsOf(svc).orderByRaw("lower(c.name)")) as Record<string, unknown>[]).map(
    presentCollection,
  );
}

/** One collection the caller may read, or 404. */
async function collectionRow(svc: Svc, id: string, need: "view" | "manage" | "owner" = "view") {
  const row = (await collectionsOf(svc).where("c.id", id).first()) as Record<string, unknown> | undefined;
  if (!row) throw AppError.notFound("Collection not found.");
  const access = row.access as CollectionAccess;
  if (need === "manage" && access === "view")
    throw AppError.forbidden("You can read this collection but not change it.");
  if (need === "owner" && access !== "owner" && !can(svc.caller, "kb.admin"))
    throw AppError.forbidden("Only the collection's owner can do that.");
  return row;
}

/** The collection ids the caller may read (all of them for kb.admin). */
export async function readableCollectionIds(svc: Svc): Promise<string[]> {
  return ((await collectionsOf(svc).clearSelect().select("c.id")) as { id: string }[]).map((r) => r.id);
}

/** One collection with its shares. */
export async function getCollection(svc: Svc, id: string) {
  const row = await collectionRow(svc, id);
  return { ...presentCollection(row), shares: await sharesOf(svc.trx, id) };
}

/** Creates a collection owned by the caller. */
export async function createCollection(svc: Svc, input: { name: string; description?: string }) {
  try {
    const [c] = await svc
      .trx("kb_collections")
      .insert({
        org_id: svc.caller.orgId,
        owner_id: svc.caller.userId,
        name: input.name,
        description: input.description ?? "",
      })
      .returning("id");
    return getCollection(svc, c.id as string);
  } catch (err) {
    if ((err as { code?: string }).code === "23505")
      throw AppError.conflict("A collection with this name exists.", { field: "name" });
    throw err;
  }
}

/** Renames or describes a collection. */
export async function updateCollection(svc: Svc, id: string, input: { name?: string; description?: string }) {
  await collectionRow(svc, id, "manage");
  try {
    await svc.trx("kb_collections").where({ id }).update(input);
  } catch (err) {
    if ((err as { code?: string }).code === "23505")
      throw AppError.conflict("A collection with this name exists.", { field: "name" });
    throw err;
  }
  return getCollection(svc, id);
}

/** Deletes a collection; its documents' files and chunks are removed by the worker. */
export async function deleteCollection(svc: Svc, deps: KbDeps, id: string) {
  const row = await collectionRow(svc, id, "owner");
  const docs = (await svc.trx("kb_documents").where({ collection_id: id }).select("id", "generation")) as {
    id: string;
    generation: number;
  }[];
  await svc.trx("kb_collections").where({ id }).delete();
  for (const d of docs) await enqueueIndex(svc, deps, d.id, d.generation + 1, "delete");
  await audit(svc.trx, {
    ...actorOf(svc.caller),
    action: "kb.collection.delete",
    targetType: "kb_collection",
    targetId: id,
    outcome: "success",
    details: { name: row.name as string, documents: docs.length },
  });
}

/** One grant of a collection. */
export type ShareInput = Grant<"view" | "manage">;

const COLLECTION_GRANTS = { table: "kb_collection_shares", key: "collection_id" };

const sharesOf = (trx: Knex.Transaction, collectionId: string) =>
  listGrants<ShareInput["access"]>(trx, COLLECTION_GRANTS, collectionId);

/** Replaces who a collection is shared with (managers and the owner; audited). */
export async function setShares(svc: Svc, id: string, shares: ShareInput[]) {
  const row = await collectionRow(svc, id, "manage");
  return replaceGrants(
    svc.trx,
    svc.caller,
    COLLECTION_GRANTS,
    { id, ownerId: row.owner_id as string, type: "kb_collection", action: "kb.collection.share" },
    shares,
  );
}

// ---------- documents ----------

/** A document as the API shows it. */
export function presentDocument(r: Record<string, unknown>) {
  return {
    id: r.id as string,
    collectionId: r.collection_id as string,
    name: r.name as string,
    path: (r.path as string | undefined) ?? (r.name as string),
    kind: r.kind as string,
    sizeBytes: Number(r.size_bytes),
    sha256: r.sha256 as string,
    status: r.status as "queued" | "extracting" | "chunking" | "embedding" | "indexed" | "failed",
    progress: r.progress as number,
    error: (r.error as string | null) ?? null,
    pages: (r.pages as number | null) ?? null,
    chunks: r.chunk_count as number,
    hasVectors: r.has_vectors as boolean,
    createdAt: iso(r.created_at as Date) as string,
    indexedAt: iso(r.indexed_at as Date | null),
  };
}

/** The documents of a collection. */
export async function listDocuments(svc: Svc, collectionId: string) {
  await collectionRow(svc, collectionId);
  const rows = await svc.trx("kb_documents").where({ collection_id: collectionId }).orderByRaw("lower(path)");
  return rows.map(presentDocument);
}

/** A document the caller may read (through its collection), or 404. */
export async function documentRow(svc: Svc, id: string, need: "view" | "manage" = "view") {
  const doc = await svc.trx("kb_documents").where({ id }).first();
  if (!doc) throw AppError.notFound("Document not found.");
  await collectionRow(svc, doc.collection_id as string, need).catch((err: unknown) => {
    // A document in a collection the caller cannot read does not exist for them.
    if (err instanceof AppError && err.status === 404) throw AppError.notFound("Document not found.");
    throw err;
  });
  return doc as Record<string, unknown>;
}

/** One document with its chunks (text, page, heading) as indexed. */
export async function getDocument(svc: Svc, deps: KbDeps, id: string) {
  const doc = await documentRow(svc, id);
  const served = doc.indexed_generation as number | null;
  const chunks =
    served === null
      ? []
      : await withDeadline(deps.index.chunksOf(svc.caller.orgId, id, served), INDEX_DEADLINE_MS, indexLate);
  return {
    ...presentDocument(doc),
    chunkList: chunks.map((c) => ({
      index: c.chunk_index,
      text: c.text,
      page: c.page,
      heading: c.heading ? c.heading.split(HEADING_SEP) : [],
      start: c.start,
      end: c.end,
    })),
  };
}

/** The stored file of a document, for download. */
export async function documentFile(svc: Svc, deps: KbDeps, id: string) {
  const doc = await documentRow(svc, id);
  const file = path.join(documentDir(deps.config, svc.caller.orgId, id), doc.sha256 as string);
  return {
    name: doc.name as string,
    mime: doc.mime as string,
    size: Number(doc.size_bytes),
    stream: () => createReadStream(file),
  };
}

/** Queues the index job that brings one document's chunks in line with its row (after commit). */
export async function enqueueIndex(
  svc: Svc,
  deps: KbDeps,
  documentId: string,
  generation: number,
  reason: "upload" | "retry" | "delete" | "reindex",
) {
  await deps.outbox.job(
    svc.trx,
    KB_INDEX_QUEUE,
    { orgId: svc.caller.orgId, documentId, generation },
    `kb:${documentId}:${generation}:${reason}`,
  );
}

/** Deletes a document; the worker removes its file and chunks (search stops returning them at once). */
export async function deleteDocument(svc: Svc, deps: KbDeps, id: string) {
  const doc = await documentRow(svc, id, "manage");
  await svc.trx("kb_documents").where({ id }).delete();
  await svc
    .trx("kb_document_tombstones")
    .insert({ document_id: id, org_id: svc.caller.orgId })
    .onConflict()
    .ignore();
  await enqueueIndex(svc, deps, id, (doc.generation as number) + 1, "delete");
  await audit(svc.trx, {
    ...actorOf(svc.caller),
    action: "kb.document.delete",
    targetType: "kb_document",
    targetId: id,
    outcome: "success",
    details: { name: doc.name as string, collectionId: doc.collection_id as string },
  });
}

/** Ingests a document again (after a failure, or to pick up new chunking settings). */
export async function retryDocument(svc: Svc, deps: KbDeps, id: string) {
  const doc = await documentRow(svc, id, "manage");
  const generation = (doc.generation as number) + 1;
  await svc
    .trx("kb_documents")
    .where({ id })
    .update({ generation, status: "queued", progress: 0, error: null, updated_at: svc.trx.fn.now() });
  await enqueueIndex(svc, deps, id, generation, "retry");
  return presentDocument(await svc.trx("kb_documents").where({ id }).first());
}

// ---------- embedding model and re-index ----------

/** The embedding model an organization's index uses: only a model registered for embeddings is fit. */
export async function embeddingChoice(trx: Knex.Transaction, orgId: string) {
  const { embedding } = await orgModels(trx, orgId);
  const fit = !!embedding?.roles.includes("embedding") && !!embedding.metadata.embeddingLength;
  return { model: fit ? (embedding ?? null) : null, unfit: !fit && embedding ? embedding : null };
}

/** The index's model (as built), the organization's current choice, and what the admin should know. */
export async function indexStatus(svc: Svc) {
  const state = await svc.trx("kb_index_state").where({ org_id: svc.caller.orgId }).first();
  const { model, unfit } = await embeddingChoice(svc.trx, svc.caller.orgId);
  const indexModel = state?.embedding_model_id
    ? ((await svc.trx("ai_models").where({ id: state.embedding_model_id }).first("id", "name")) ?? null)
    : null;
  const warnings: string[] = [];
  if (unfit)
    warnings.push(
      `The embedding model ${unfit.name} is not an embedding model (it is registered for ${unfit.roles.join(" and ")}); search uses full text only. Import an embedding model with --role embedding and choose it.`,
    );
  else if (!model) warnings.push("No embedding model is installed; search uses full text only.");
  const reindexNeeded = !!state && (state.embedding_model_id ?? null) !== (model?.id ?? null);
  if (reindexNeeded)
    warnings.push(
      "The index was built with another embedding model; re-index to search with the current one.",
    );
  let reindexing: { remaining: number } | null = null;
  if (state?.reindexing) {
    const [{ n }] = (await svc
      .trx("kb_documents")
      .whereNot({ status: "failed" })
      .whereRaw("generation is distinct from indexed_generation")
      .count({ n: "*" })) as [{ n: string }];
    reindexing = { remaining: Number(n) };
    warnings.push(
      `Re-indexing: ${n} documents to go. Meanwhile every document is found by its earlier passages, by full text.`,
    );
  }
  return {
    embeddingModel: model ? { id: model.id, name: model.name } : null,
    indexModel: indexModel ? { id: indexModel.id as string, name: indexModel.name as string } : null,
    reindexNeeded,
    reindexing,
    warnings,
  };
}

/** Rebuilds the organization's index with its current embedding model (kb.admin; audited). */
export async function reindex(svc: Svc, deps: KbDeps) {
  const stamp = Date.now();
  await deps.outbox.job(
    svc.trx,
    KB_INDEX_QUEUE,
    { orgId: svc.caller.orgId, generation: 0, reindex: true },
    `kb:reindex:${svc.caller.orgId}:${stamp}`,
  );
  await audit(svc.trx, {
    ...actorOf(svc.caller),
    action: "kb.reindex",
    targetType: "organization",
    targetId: svc.caller.orgId,
    outcome: "success",
  });
}

// ---------- search ----------

/** A piece of a snippet; `match` marks the words of the query. */
export interface SnippetPart {
  text: string;
  match: boolean;
}

const STOP = new Set([
  "the",
  "and",
  "for",
  "are",
  "but",
  "not",
  "you",
  "all",
  "any",
  "can",
  "was",
  "our",
  "out",
  "has",
  "how",
  "what",
  "with",
  "this",
  "that",
  "from",
  "into",
]);

/** Terms of a query worth highlighting: words of 3+ letters, not stop words, matched by their first 5 letters. */
function queryTerms(query: string): string[] {
  return [
    ...new Set(
      (query.toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) ?? [])
        .filter((w) => !STOP.has(w))
        .map((w) => w.slice(0, 5)),
    ),
  ];
}

/** A window of the chunk around its first matched term, split into plain and matched parts. */
export function snippetOf(text: string, query: string, width = 280): SnippetPart[] {
  const terms = queryTerms(query);
  const words = [...text.matchAll(/[\p{L}\p{N}]+/gu)];
  const matches = words.filter((m) => terms.some((t) => m[0].toLowerCase().startsWith(t)));
  const first = matches[0]?.index ?? 0;
  const from = Math.max(0, Math.min(first - Math.floor(width / 3), text.length - width));
  const start = from > 0 ? text.indexOf(" ", from) + 1 || from : 0;
  const end = Math.min(text.length, start + width);
  const parts: SnippetPart[] = [];
  let pos = start;
  for (const m of matches) {
    const at = m.index as number;
    if (at < start || at + m[0].length > end) continue;
    if (at > pos) parts.push({ text: text.slice(pos, at), match: false });
    parts.push({ text: m[0], match: true });
    pos = at + m[0].length;
  }
  if (pos < end) parts.push({ text: text.slice(pos, end), match: false });
  if (start > 0) parts.unshift({ text: "… ", match: false });
  if (end < text.length) parts.push({ text: " …", match: false });
  return parts;
}

/** What a search asks for. */
export interface SearchInput {
  query: string;
  collectionIds?: string[];
  limit: number;
  mode: SearchMode;
}

/** What a search needs from the database, read in one statement before the index is queried. */
export interface SearchPlan {
  orgId: string;
  /** Readable collections (id -> name); the index is queried with exactly these (or the asked subset). */
  collections: Map<string, string>;
  collectionIds: string[];
  /**
   * Documents whose chunks must be checked one by one, with the generation served (null: none yet): not
   * yet indexed, being replaced, or with chunks of an older generation still in the index.
   */
  unsettled: Map<string, number | null>;
  /** Deleted documents whose chunks the worker has not removed yet. */
  deleted: Set<string>;
  model: ModelRow | null;
  /** The index is being rebuilt in place: its vectors are of two models, so search runs on full text. */
  reindexing: boolean;
}

/**
 * Step 1 (in the request's transaction, one statement): the collections the caller may read, the
 * documents search must check chunk by chunk, deleted documents, and the index's model.
 */
export async function planSearch(svc: Svc, input: SearchInput): Promise<SearchPlan> {
  const { caller, trx } = svc;
  const readable = can(caller, "kb.admin")
    ? "true"
    : "kb_collection_access(c.id, c.owner_id, :user) is not null";
  const row = (
    await trx
      .raw(
        `with readable as (select c.id, c.name from kb_collections c where ${readable})
       select
         (select coalesce(json_agg(json_build_array(r.id, r.name)), '[]') from readable r) as collections,
         (select coalesce(json_agg(json_build_array(d.id, d.indexed_generation)), '[]') from kb_documents d
           where (d.stale or d.indexed_generation is distinct from d.generation)
             and d.collection_id in (select id from readable)) as unsettled,
         (select coalesce(json_agg(t.document_id), '[]') from kb_document_tombstones t) as deleted,
         (select row_to_json(m) from kb_index_state s join ai_models m on m.id = s.embedding_model_id
           where s.org_id = :org) as model,
         coalesce((select s.reindexing from kb_index_state s where s.org_id = :org), false) as reindexing`,
        { user: caller.userId, org: caller.orgId },
      )
      .options({ name: can(caller, "kb.admin") ? "kb_search_plan_all" : "kb_search_plan" })
  ) // parsed once per connection
  .rows[0] as {
    collections: [string, string][];
    unsettled: [string, number | null][];
    deleted: string[];
    model: Record<string, unknown> | null;
    reindexing: boolean;
  };
  const collections = new Map(row.collections);
  const collectionIds = input.collectionIds?.length
    ? input.collectionIds.filter((id) => collections.has(id))
    : [...collections.keys()];
  return {
    orgId: caller.orgId,
    collections,
    collectionIds,
    unsettled: new Map(row.unsettled),
    deleted: new Set(row.deleted),
    model: row.model ? presentModel(row.model) : null,
    reindexing: row.reindexing,
  };
}

/** What a search ran: the hits, the mode that actually ran, and why it differs from the one asked for. */
export interface SearchRun {
  hits: Hit[];
  mode: SearchMode;
  /**
   * no_embedding_model: the index has no vectors; embedding_unavailable: the query could not be embedded;
   * reindexing: the index is being rebuilt with another embedding model.
   */
  reason: "no_embedding_model" | "embedding_unavailable" | "reindexing" | null;
}

/**
 * Step 2 (no transaction: embedding takes time): the query's vector and the index's hits. Without an embedding
 * model, or when the query cannot be embedded (the AI busy or away), the search runs on full text and says so.
 */
export async function runSearch(
  deps: KbDeps,
  plan: Pick<SearchPlan, "orgId" | "collectionIds" | "model" | "reindexing">,
  input: SearchInput,
): Promise<SearchRun> {
  if (!plan.collectionIds.length) return { hits: [], mode: input.mode, reason: null };
  let vector: number[] | null = null;
  let reason: SearchRun["reason"] = null;
  if (input.mode !== "fts") {
    if (!plan.model) reason = "no_embedding_model";
    else if (plan.reindexing) reason = "reindexing";
    else if (!deps.ai) reason = "embedding_unavailable";
    else {
      try {
        vector = (await deps.ai.embed(plan.model, [input.query]))[0] ?? null;
      } catch {
        reason = "embedding_unavailable";
      }
    }
  }
  const mode = vector ? input.mode : "fts";
  const hits = await searchWithin(deps.index, plan.orgId, {
    text: input.query,
    vector,
    collectionIds: plan.collectionIds,
    limit: input.limit,
    mode,
  });
  return { hits, mode, reason };
}

/** What the search response says of the mode (the UI shows `message` when the mode is not the one asked for). */
export function searchModeOf(input: SearchInput, run: SearchRun) {
  return {
    requested: input.mode,
    mode: run.mode,
    reason: run.reason,
    message:
      run.reason === "no_embedding_model"
        ? "No embedding model is set for this organization's index: searched by full text only."
        : run.reason === "embedding_unavailable"
          ? "The AI could not embed the query just now: searched by full text only."
          : run.reason === "reindexing"
            ? "The index is being rebuilt with another embedding model: searched by full text until it is done."
            : null,
  };
}

/**
 * Step 3 (no database): every hit is checked against the plan, so a chunk of a deleted document, of a
 * generation not served (a replacement being written, or old chunks not yet removed), or of a collection
 * the caller cannot read never comes back. Adds citations and highlighted snippets.
 */
export function finishSearch(plan: SearchPlan, hits: Hit[], input: SearchInput) {
  const out = [];
  for (const h of hits) {
    const collectionName = plan.collections.get(h.collection_id);
    if (collectionName === undefined || plan.deleted.has(h.document_id)) continue;
    if (plan.unsettled.has(h.document_id) && plan.unsettled.get(h.document_id) !== h.generation) continue;
    out.push({
      chunkId: h.id,
      score: h.score,
      relevance: { bm25: h.bm25, distance: h.distance },
      text: h.text,
      snippet: snippetOf(h.text, input.query),
      citation: {
        documentId: h.document_id,
        documentName: h.document_name,
        collectionId: h.collection_id,
        collectionName,
        page: h.page,
        heading: h.heading ? h.heading.split(HEADING_SEP) : [],
        chunkIndex: h.chunk_index,
        start: h.start,
        end: h.end,
      },
    });
    if (out.length >= input.limit) break;
  }
  return out;
}

/**
 * Search latency hiding: the index query of the caller's last search with the same request is started as soon as
 * the credential is identified (see RouteDef.early), alongside loading the caller, the plan's statement and the
 * commit. Its hits are used only if the fresh plan searches exactly the same collections with the same model;
 * otherwise the index is queried again with the plan. Either way finishSearch checks every hit against the fresh
 * plan, so a guess can only save time, never let a chunk through. A guess is taken out when used and put back only
 * by a search that planned, so a credential refused since costs at most one wasted query.
 */
export class SearchGuesses {
  private readonly last = new Map<
    string,
    Pick<SearchPlan, "orgId" | "collectionIds" | "model" | "reindexing">
  >();
  constructor(private readonly max = 10_000) {}

  /** Starts the index query of this credential's last plan for the same request, if there was one. */
  start(deps: KbDeps, who: { orgId: string; rateKey: string }, input: SearchInput): SearchGuess {
    const asked = input.collectionIds?.length ? [...input.collectionIds].sort().join(",") : "*";
    const key = `${who.orgId}:${who.rateKey}:${input.mode}:${asked}`;
    const guess = this.last.get(key);
    if (!guess) return { key, started: null };
    this.last.delete(key);
    const hits = runSearch(deps, guess, input);
    hits.catch(() => undefined); // awaited (and its error met) only if the guess is used
    return { key, started: { ...guess, hits } };
  }

  /** The hits for a fresh plan: the guessed query's if it searched the same, else a new query. */
  run(deps: KbDeps, plan: SearchPlan, input: SearchInput, guess: SearchGuess): Promise<SearchRun> {
    if (this.last.size >= this.max) this.last.delete(this.last.keys().next().value as string);
    this.last.set(guess.key, {
      orgId: plan.orgId,
      collectionIds: plan.collectionIds,
      model: plan.model,
      reindexing: plan.reindexing,
    });
    const g = guess.started;
    const same =
      g !== null &&
      g.orgId === plan.orgId &&
      g.collectionIds.length === plan.collectionIds.length &&
      g.collectionIds.every((id, i) => id === plan.collectionIds[i]) &&
      g.model?.id === plan.model?.id &&
      g.model?.sha256 === plan.model?.sha256 &&
      g.reindexing === plan.reindexing;
    return same ? g.hits : runSearch(deps, plan, input);
  }
}

/** A search's guess (see SearchGuesses): its key, and the index query started on it, if any. */
export interface SearchGuess {
  key: string;
  started:
    | (Pick<SearchPlan, "orgId" | "collectionIds" | "model" | "reindexing"> & { hits: Promise<SearchRun> })
    | null;
}

/** The three steps, for the AI tool (which runs in its own transaction). */
export async function search(svc: Svc, deps: KbDeps, input: SearchInput) {
  const plan = await planSearch(svc, input);
  return finishSearch(plan, (await runSearch(deps, plan, input)).hits, input);
}

/** How long a request waits for the LanceDB index before answering 503. */
const INDEX_DEADLINE_MS = 10_000;
const indexLate = () =>
  AppError.unavailable("The knowledge-base index did not answer in time. Try again in a moment.", 5);

/** A search of the index that answers 503 (with Retry-After) rather than hang when the index stalls. */
function searchWithin(index: KbIndex, orgId: string, q: Parameters<KbIndex["search"]>[1]) {
  return withDeadline(index.search(orgId, q), INDEX_DEADLINE_MS, indexLate);
}
