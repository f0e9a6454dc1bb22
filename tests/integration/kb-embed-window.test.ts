// Embeddings that fit the model: an embedding model with a 128-token window (as many real ones have 512) on
// 2,000-character passages. Every document indexes with vectors; a passage longer than the window is embedded
// window by window (the whole passage counts, not only its first part). Real llama.cpp on the generated model.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createTestOrg, type TestOrg } from "../support/identity.js";
import { settledDocs, uploadFilesOk } from "../support/kb.js";
import { makeTinyModel, TINY } from "../../scripts/make-tiny-model.js";
import { importModel, type ModelRow } from "../../core/src/modules/ai/models.service.js";

type Data<T> = { data: T };
let srv: TestServer;
let org: TestOrg;
let model: ModelRow;

const words = ["ward", "dialysis", "handover", "pharmacist", "triage", "oxygen", "consent", "discharge"];
/** A paragraph of about `chars` characters of varied text. */
const prose = (seed: number, chars: number) => {
  let s = "";
  for (let i = 0; s.length < chars; i++)
    s += `${words[(seed * 7 + i * 3) % words.length]} note ${seed}-${i}. `;
  return s;
};

beforeAll(async () => {
  srv = await getTestServer({
    env: {
      WORKSYNAPSE_AI_THREADS: "1",
      // About 2,000 characters per passage.
      WORKSYNAPSE_KB_CHUNK_TOKENS: "500",
      WORKSYNAPSE_KB_CHUNK_OVERLAP: "20",
    },
  });
  const file = path.join(mkdtempSync(path.join(tmpdir(), "ws-kbwin-")), "short-window.gguf");
  makeTinyModel(file, { ...TINY, context: 128 });
  model = await importModel(srv.db.knex, await srv.ai!.llama(), srv.config, {
    file,
    name: "short-window",
    role: "embedding",
  });
  org = await createTestOrg(srv, "kbwin");
}, 120_000);
afterAll(() => srv?.close());

describe("embeddings within the model's window", () => {
  it("indexes every document with vectors when passages are far longer than the model's 128 tokens", async () => {
    expect(model.metadata.contextLength).toBe(128);
    const long = prose(1, 2000);
    expect(await srv.ai!.countTokens(model, long)).toBeGreaterThan(128 * 3);
    const collection = (
      await org.owner.json<Data<{ id: string }>>("POST", "/api/kb/collections", { name: "Ward notes" }, 201)
    ).data.id;
    const files = Array.from({ length: 4 }, (_, i) => ({ name: `notes-${i}.txt`, data: prose(i + 2, 7000) }));
    const up = await uploadFilesOk(srv, org.owner, collection, files);
    const ids = up.map((u) => u.document?.id as string);
    const docs = await settledDocs(org.owner, collection, ids);
    for (const d of docs.values()) {
      expect(d.status, d.error ?? "").toBe("indexed");
      expect(d.chunks).toBeGreaterThan(2);
    }
    for (const id of ids) {
      const detail = await org.owner.json<Data<{ hasVectors: boolean }>>("GET", `/api/kb/documents/${id}`);
      expect(detail.data.hasVectors).toBe(true);
    }
    // Search by meaning runs on those vectors.
    const r = await org.owner.json<Data<unknown[]> & { search: { mode: string; reason: string | null } }>(
      "POST",
      "/api/kb/search",
      { query: "dialysis handover", mode: "vector" },
    );
    expect(r.search).toMatchObject({ mode: "vector", reason: null });
    expect(r.data.length).toBeGreaterThan(0);
  });

  it("embeds all of a long passage, window by window, not only its first window", async () => {
    // Two passages that share their first 1,200 characters (far more than one window) and differ after: cut
    // to the window they would get the same vector; embedded window by window they do not.
    const start = prose(3, 1200);
    expect(await srv.ai!.countTokens(model, start)).toBeGreaterThan(128);
    const [a, b] = await srv.ai!.embed(model, [
      start + prose(5, 800),
      start + prose(6, 800).replaceAll("note", "entry"),
    ]);
    expect(a).toHaveLength(b!.length);
    const diff = a!.reduce((n, x, i) => n + Math.abs(x - (b![i] as number)), 0);
    expect(diff).toBeGreaterThan(1e-3);
    expect(a!.every(Number.isFinite)).toBe(true);
  });

  it("re-indexes in place: every search finds the documents meanwhile, by full text, and says why", async () => {
    const collection = (
      await org.owner.json<Data<{ id: string }>>("POST", "/api/kb/collections", { name: "Long notes" }, 201)
    ).data.id;
    // One long document besides the four above, so that the re-index takes a while.
    const [big] = await uploadFilesOk(srv, org.owner, collection, [
      { name: "long.txt", data: prose(9, 120_000) },
    ]);
    await settledDocs(org.owner, collection, [big!.document!.id]);
    type Status = { data: { reindexing: { remaining: number } | null; warnings: string[] } };
    type Found = Data<unknown[]> & { search: { mode: string; reason: string | null } };
    expect((await org.owner.json<Status>("GET", "/api/kb/status")).data.reindexing).toBeNull();
    await org.owner.json("POST", "/api/kb/reindex", {}, 202);
    const seen = new Set<string>();
    let sawRemaining = false;
    for (let i = 0; i < 600; i++) {
      const words = await org.owner.json<Found>("POST", "/api/kb/search", {
        query: "dialysis handover",
        mode: "fts",
      });
      expect(words.data.length, `poll ${i}`).toBeGreaterThan(0);
      const meaning = await org.owner.json<Found>("POST", "/api/kb/search", {
        query: "dialysis handover",
        mode: "vector",
      });
      expect(meaning.data.length, `poll ${i}`).toBeGreaterThan(0);
      seen.add(`${meaning.search.mode}:${meaning.search.reason}`);
      const status = (await org.owner.json<Status>("GET", "/api/kb/status")).data;
      if (status.reindexing) {
        sawRemaining = true;
        expect(status.warnings.join(" ")).toMatch(/Re-indexing: \d+ documents to go/);
      } else if (seen.has("fts:reindexing")) break;
      await new Promise((r) => setTimeout(r, 30));
    }
    expect(sawRemaining).toBe(true);
    expect(seen).toContain("fts:reindexing");
    // Done: search by meaning runs on the new vectors again.
    const after = await org.owner.json<Found>("POST", "/api/kb/search", {
      query: "dialysis",
      mode: "vector",
    });
    expect(after.search).toMatchObject({ mode: "vector", reason: null });
  }, 60_000);
});
