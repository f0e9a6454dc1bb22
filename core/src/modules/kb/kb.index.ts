import type { Knex } from "knex";
import * as lancedb from "@lancedb/lancedb";
import { Field, FixedSizeList, Float32, Int32, Schema, Utf8 } from "apache-arrow";
import type { Chunk } from "./parse/chunk.js";

/** A chunk as stored in LanceDB. */
export interface ChunkRow {
  id: string;
  document_id: string;
  document_name: string;
  collection_id: string;
  generation: number;
  chunk_index: number;
  text: string;
  page: number | null;
  heading: string;
  start: number;
  end: number;
}

/** A chunk found by a search, with its rank in the list it came from. */
export interface Hit extends ChunkRow {
  /** The fused rank score (reciprocal rank fusion). */
  score: number;
  /** The full-text relevance (BM25) where full-text search found the chunk. */
  bm25: number | null;
  /** The vector distance where vector search found the chunk. */
  distance: number | null;
}

/** How to search: by meaning (vectors), by words (full text), or both fused by reciprocal rank. */
export type SearchMode = "hybrid" | "vector" | "fts";

/** Reciprocal rank fusion constant (the usual 60). */
const RRF_K = 60;
/** The columns full-text search reads. */
const FTS_COLUMNS = ["text", "heading"];
/** The columns a chunk is read with. */
export const COLUMNS = [
  "id",
  "document_id",
  "document_name",
  "collection_id",
  "generation",
  "chunk_index",
  "text",
  "page",
  "heading",
  "start",
  "end",
];
const HEADING_SEP = " › ";
const uuidList = (ids: string[]) => {
  for (const id of ids) if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error("bad id in filter");
  return ids.map((id) => `'${id}'`).join(", ");
};

/** Runs `fn`, a write to an organization's table, while no other writer of that table runs. */
export type Exclusive = <T>(orgId: string, fn: () => Promise<T>) => Promise<T>;

/**
 * The one-writer rule across processes (several workers on one shared volume): a PostgreSQL advisory lock per
 * organization's table, held by a transaction while the write runs (it ends with the transaction, or with the
 * connection of a process that died).
 */
export const databaseExclusive =
  (knex: Knex): Exclusive =>
  (orgId, fn) =>
    knex.transaction(async (trx) => {
      await trx.raw("select pg_advisory_xact_lock(hashtextextended(?, 0))", [`kb-index:${orgId}`]);
      return fn();
    });

/**
 * The knowledge base's vectors and full-text index: one LanceDB table per organization, so isolation does
 * not rest on a filter. Only the worker's ingestion writes; web processes read and see new versions
 * within a second (readConsistencyInterval).
 */
export class KbIndex {
  /** Tables known to have the heading full-text index. */
  private readonly headingIndexed = new Set<string>();

  private db?: Promise<lancedb.Connection>;
  private readonly tables = new Map<string, Promise<lancedb.Table | null>>();

  /**
   * @param exclusive runs a write to an organization's table while no other process writes to it (the
   *   one-writer rule of a LanceDB table on a shared volume; `databaseExclusive` across processes).
   */
  constructor(
    private readonly dir: string,
    private readonly exclusive: Exclusive = (_orgId, fn) => fn(),
  ) {}

  private conn(): Promise<lancedb.Connection> {
    return (this.db ??= lancedb.connect(this.dir, { readConsistencyInterval: 1 }));
  }

  /** The table name of an organization. */
  static tableOf(orgId: string): string {
    if (!/^[0-9a-f-]{36}$/.test(orgId)) throw new Error("bad organization id");
    return `org_${orgId.replaceAll("-", "")}`;
  }

  private async table(orgId: string): Promise<lancedb.Table | null> {
    const name = KbIndex.tableOf(orgId);
    let t = this.tables.get(name);
    if (!t) {
      t = (async () => {
        const db = await this.conn();
        return (await db.tableNames()).includes(name) ? db.openTable(name) : null;
      })();
      this.tables.set(name, t);
      // A table that does not exist yet may be created by the worker later: look again next time.
      void t.then((v) => v ?? this.tables.delete(name));
    }
    return t;
  }

  /** The vector dimension of an organization's table, null without vectors, undefined without a table. */
  async dimension(orgId: string): Promise<number | null | undefined> {
    const t = await this.table(orgId);
    if (!t) return undefined;
    const field = (await t.schema()).fields.find((f) => f.name === "vector");
    return field ? (field.type as FixedSizeList).listSize : null;
  }

  private async createTable(orgId: string, dimension: number | null): Promise<lancedb.Table> {
    const fields: Field[] = [
      new Field("id", new Utf8()),
      new Field("document_id", new Utf8()),
      new Field("document_name", new Utf8()),
      new Field("collection_id", new Utf8()),
      new Field("generation", new Int32()),
      new Field("chunk_index", new Int32()),
      new Field("text", new Utf8()),
      new Field("page", new Int32(), true),
      new Field("heading", new Utf8()),
      new Field("start", new Int32()),
      new Field("end", new Int32()),
    ];
    if (dimension)
      fields.push(new Field("vector", new FixedSizeList(dimension, new Field("item", new Float32(), true))));
    const name = KbIndex.tableOf(orgId);
    const t = await (await this.conn()).createEmptyTable(name, new Schema(fields), { existOk: true });
    this.tables.set(name, Promise.resolve(t));
    return t;
  }

  /** The organizations that have a table. */
  async organizations(): Promise<string[]> {
    const names = await (await this.conn()).tableNames();
    return names
      .filter((n) => /^org_[0-9a-f]{32}$/.test(n))
      .map((n) => n.slice(4).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5"));
  }

  /** Reads an organization's table end to end (its schema, row count and one full-text and one plain scan). */
  async check(orgId: string): Promise<void> {
    const t = await this.table(orgId);
    if (!t) return;
    await t.schema();
    await t.countRows();
    await t.query().select(["id"]).limit(1_000_000).toArray();
  }

  /** Drops an organization's table (re-index with another embedding model). */
  async drop(orgId: string): Promise<void> {
    return this.exclusive(orgId, () => this.dropNow(orgId));
  }

  private async dropNow(orgId: string): Promise<void> {
    const name = KbIndex.tableOf(orgId);
    const db = await this.conn();
    if ((await db.tableNames()).includes(name)) await db.dropTable(name);
    this.tables.delete(name);
    this.headingIndexed.delete(name);
  }

  /**
   * Stores one generation of a document's chunks, replacing any earlier attempt at the same generation (a
   * crashed job run again adds nothing twice), and brings the full-text index up to date. Older generations
   * stay until `dropOlderGenerations`: the database switches search to the new one in between.
   */
  async addGeneration(
    orgId: string,
    doc: { id: string; name: string; collectionId: string; generation: number },
    chunks: Chunk[],
    vectors: number[][] | null,
  ): Promise<void> {
    return this.exclusive(orgId, () => this.addNow(orgId, doc, chunks, vectors));
  }

  private async addNow(
    orgId: string,
    doc: { id: string; name: string; collectionId: string; generation: number },
    chunks: Chunk[],
    vectors: number[][] | null,
  ): Promise<void> {
    const dimension = vectors?.[0]?.length ?? null;
    let t = await this.table(orgId);
    if (t) {
      const have = await this.dimension(orgId);
      if ((have ?? null) !== dimension && chunks.length)
        throw new Error(
          `index dimension ${have} does not match the embeddings (${dimension}); re-index the organization`,
        );
    } else t = await this.createTable(orgId, dimension);
    await t.delete(`document_id = '${doc.id}' AND generation = ${doc.generation}`);
    if (chunks.length) {
      await t.add(
        chunks.map((c, i) => ({
          id: `${doc.id}:${doc.generation}:${c.index}`,
          document_id: doc.id,
          document_name: doc.name,
          collection_id: doc.collectionId,
          generation: doc.generation,
          chunk_index: c.index,
          text: c.text,
          page: c.page,
          heading: c.headings.join(HEADING_SEP),
          start: c.start,
          end: c.end,
          ...(vectors ? { vector: vectors[i] } : {}),
        })),
      );
    }
    await this.refreshFts(t);
  }

  /** Removes the generations of a document older than the one now served (deletions apply to reads at once). */
  async dropOlderGenerations(orgId: string, documentId: string, generation: number): Promise<void> {
    await this.exclusive(orgId, async () => {
      const t = await this.table(orgId);
      await t?.delete(`document_id = '${documentId}' AND generation < ${generation}`);
    });
  }

  /** Removes every chunk of a document. */
  async removeDocument(orgId: string, documentId: string): Promise<void> {
    await this.exclusive(orgId, async () => {
      const t = await this.table(orgId);
      if (!t) return;
      await t.delete(`document_id = '${documentId}'`);
      await this.refreshFts(t);
    });
  }

  /**
   * Full-text indexes on the chunk text and on its heading path (a word of a section's heading finds the
   * section's chunks, in every format that has headings), created once rows exist, then brought up to date.
   */
  private async refreshFts(t: lancedb.Table): Promise<void> {
    const indices = await t.listIndices();
    const missing = FTS_COLUMNS.filter((c) => !indices.some((i) => i.columns.includes(c)));
    if (missing.length) {
      if ((await t.countRows()) > 0)
        for (const c of missing)
          await t.createIndex(c, { config: lancedb.Index.fts({ withPosition: false }) });
    }
    if (missing.length < FTS_COLUMNS.length) {
      // Rows added since the index was built are not searchable by full text until the index is updated.
      await t.optimize({ cleanupOlderThan: new Date(Date.now() - 60_000) });
    }
  }

  /** The chunks of one document generation, in order. */
  async chunksOf(orgId: string, documentId: string, generation: number): Promise<ChunkRow[]> {
    const t = await this.table(orgId);
    if (!t) return [];
    const rows = (await t
      .query()
      .where(`document_id = '${documentId}' AND generation = ${generation}`)
      .select(COLUMNS)
      .limit(100_000)
      .toArray()) as ChunkRow[];
    return rows.map(plain).sort((a, b) => a.chunk_index - b.chunk_index);
  }

  /**
   * Searches the chunks of the given collections only. Hybrid fuses the vector and full-text lists by
   * reciprocal rank; without vectors (no embedding model) it is full text alone.
   */
  async search(
    orgId: string,
    q: { text: string; vector: number[] | null; collectionIds: string[]; limit: number; mode: SearchMode },
  ): Promise<Hit[]> {
    const t = await this.table(orgId);
    if (!t || !q.collectionIds.length) return [];
    const where = `collection_id IN (${uuidList(q.collectionIds)})`;
    const depth = Math.max(q.limit * 4, 20);
    const cols = COLUMNS;
    const useVector = q.vector && q.mode !== "fts";
    const useFts = q.mode !== "vector" || !q.vector;
    const [vec, fts] = await Promise.all([
      useVector
        ? t
            .vectorSearch(q.vector as number[])
            .where(where)
            .select([...cols, "_distance"])
            .limit(depth)
            .toArray()
        : Promise.resolve([]),
      useFts && q.text.trim()
        ? this.fullText(t, q.text, where, depth).catch((err: unknown) => {
            // A table whose rows all came before any text (or none yet) has no full-text index to search.
            if (/INVERTED index|no index/i.test(String(err))) return [];
            throw err;
          })
        : Promise.resolve([]),
    ]);
    const fused = new Map<string, Hit>();
    for (const [list, kind] of [
      [vec, "distance"],
      [fts, "bm25"],
    ] as [(ChunkRow & { _distance?: number; _score?: number })[], "distance" | "bm25"][]) {
      list.forEach((row, rank) => {
        const hit = fused.get(row.id) ?? { ...plain(row), score: 0, bm25: null, distance: null };
        hit.score += 1 / (RRF_K + rank + 1);
        hit[kind] = Number(kind === "distance" ? row._distance : row._score);
        fused.set(row.id, hit);
      });
    }
    return [...fused.values()].sort((a, b) => b.score - a.score);
  }

  /** Full-text search over text and headings (text alone on a table whose heading index is not built yet). */
  private async fullText(t: lancedb.Table, text: string, where: string, depth: number): Promise<ChunkRow[]> {
    // Once a table has it, it keeps it: looked up until then only (listIndices costs a search a round trip).
    let indexed = this.headingIndexed.has(t.name);
    if (!indexed && (await t.listIndices()).some((i) => i.columns.includes("heading"))) {
      this.headingIndexed.add(t.name);
      indexed = true;
    }
    return (await t
      .search(text, "fts", indexed ? FTS_COLUMNS : "text")
      .where(where)
      .select([...COLUMNS, "_score"])
      .limit(depth)
      .toArray()) as ChunkRow[];
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    const db = await this.db;
    db?.close();
    this.db = undefined;
    this.tables.clear();
  }
}

/** A row without LanceDB's own columns (distance, score). */
function plain(r: ChunkRow): ChunkRow {
  return {
    id: r.id,
    document_id: r.document_id,
    document_name: r.document_name,
    collection_id: r.collection_id,
    generation: Number(r.generation),
    chunk_index: Number(r.chunk_index),
    text: r.text,
    page: r.page === null || r.page === undefined ? null : Number(r.page),
    heading: r.heading,
    start: Number(r.start),
    end: Number(r.end),
  };
}

export { HEADING_SEP };
