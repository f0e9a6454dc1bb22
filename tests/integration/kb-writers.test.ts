// The one-writer rule of the knowledge-base index on a shared volume: two worker processes' indexes (two
// KbIndex instances on one directory, each with its own PostgreSQL pool) write to one organization's LanceDB
// table at once; the advisory lock lets one write at a time, and every document's passages are there after.
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import knexFactory, { type Knex } from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseExclusive, KbIndex, type Exclusive } from "../../core/src/modules/kb/kb.index.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";

let pg: TestDatabase;
const pools: Knex[] = [];

beforeAll(async () => {
  pg = await createTestDatabase("kbw");
  for (let i = 0; i < 2; i++)
    pools.push(knexFactory({ client: "pg", connection: pg.url, pool: { min: 0, max: 4 } }));
});
afterAll(async () => {
  for (const k of pools) await k.destroy();
  await pg?.drop();
});

describe("knowledge-base index writers", () => {
  it("two processes' writes to one organization's table take turns, and none is lost", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "ws-kbw-"));
    const orgId = randomUUID();
    let writing = 0;
    let most = 0;
    // Counts the writers inside the lock (both "processes" share this counter, as they share the table).
    const counted =
      (inner: Exclusive): Exclusive =>
      (org, fn) =>
        inner(org, async () => {
          most = Math.max(most, ++writing);
          try {
            return await fn();
          } finally {
            writing--;
          }
        });
    const workers = pools.map((k) => new KbIndex(dir, counted(databaseExclusive(k))));
    const docs = Array.from({ length: 8 }, () => randomUUID());
    await Promise.all(
      docs.map((id, i) =>
        (workers[i % 2] as KbIndex).addGeneration(
          orgId,
          { id, name: `doc ${i}`, collectionId: randomUUID(), generation: 1 },
          Array.from({ length: 5 }, (_, c) => ({
            index: c,
            text: `passage ${c} of document ${i}, about harbour lanterns`,
            page: null,
            headings: [],
            start: c * 10,
            end: c * 10 + 9,
          })),
          null,
        ),
      ),
    );
    expect(most).toBe(1);
    const reader = new KbIndex(dir);
    for (const id of docs) expect(await reader.chunksOf(orgId, id, 1)).toHaveLength(5);
    // Removing documents from both at once: the same rule, nothing left behind.
    await Promise.all(docs.map((id, i) => (workers[i % 2] as KbIndex).removeDocument(orgId, id)));
    expect(most).toBe(1);
    // A fresh reader (an open one sees other processes' writes within its one-second consistency interval).
    const after = new KbIndex(dir);
    for (const id of docs) expect(await after.chunksOf(orgId, id, 1)).toHaveLength(0);
    for (const w of [...workers, reader, after]) await w.close();
  });
});
