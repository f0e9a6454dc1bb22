import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { settledDocs, uploadFiles, uploadFilesOk, type KbFile } from "../support/kb.js";
import { getTestServer, type TestServer } from "../support/server.js";
import { Client, createMember, createTestOrg, type TestOrg } from "../support/identity.js";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { importModel } from "../../core/src/modules/ai/models.service.js";
import { kbDir } from "../../core/src/modules/kb/kb.service.js";
import {
  makeCorruptPdf,
  makeDocx,
  makeEncryptedPdf,
  makeExternalImageDocx,
  makeLoopingPdf,
  makePdf,
  makeZip,
  makeZipBombDocx,
} from "../support/kb-fixtures.js";

let srv: TestServer;
let org: TestOrg;
let other: TestOrg;
let alice: { id: string; client: Client };
let bob: { id: string; client: Client };
let collectionId: string;
const dir = mkdtempSync(path.join(tmpdir(), "ws-kb-"));

type Data<T> = { data: T };
interface Doc {
  id: string;
  name: string;
  path: string;
  status: string;
  error: string | null;
  chunks: number;
  pages: number | null;
  hasVectors: boolean;
}
interface UploadResult {
  name: string;
  outcome: string;
  document?: Doc;
  error?: { code: string; message: string };
}
interface Hit {
  chunkId: string;
  text: string;
  snippet: { text: string; match: boolean }[];
  citation: { documentId: string; documentName: string; page: number | null; heading: string[] };
}

const upload = (c: Client, collection: string, files: KbFile[]) => uploadFiles(srv, c, collection, files);
const uploadOk = (c: Client, collection: string, files: KbFile[]) =>
  uploadFilesOk(srv, c, collection, files) as Promise<UploadResult[]>;
const settled = (c: Client, collection: string, ids: string[]) =>
  settledDocs(c, collection, ids) as Promise<Map<string, Doc>>;
const search = async (c: Client, query: string, extra: Record<string, unknown> = {}) =>
  (await c.json<Data<Hit[]>>("POST", "/api/kb/search", { query, ...extra })).data;

beforeAll(async () => {
  srv = await getTestServer({
    env: {
      WORKSYNAPSE_AI_THREADS: "1",
      WORKSYNAPSE_KB_PARSE_TIMEOUT_MS: "3000",
      WORKSYNAPSE_KB_MAX_FILE_BYTES: String(4 * 1024 * 1024),
      WORKSYNAPSE_KB_CHUNK_TOKENS: "120",
      WORKSYNAPSE_KB_CHUNK_OVERLAP: "20",
    },
  });
  const tiny = path.join(dir, "tiny.gguf");
  makeTinyModel(tiny);
  await importModel(srv.db.knex, await srv.ai!.llama(), srv.config, {
    file: tiny,
    name: "tiny-embed",
    role: "embedding",
  });
  org = await createTestOrg(srv, "kb");
  other = await createTestOrg(srv, "kbother");
  alice = await createMember(org, ["member"], "alice");
  bob = await createMember(org, ["member"], "bob");
  collectionId = (
    await alice.client.json<Data<{ id: string }>>(
      "POST",
      "/api/kb/collections",
      { name: "Clinical protocols" },
      201,
    )
  ).data.id;
}, 120_000);
afterAll(() => srv?.close());

describe("knowledge base: ingestion and retrieval", () => {
  let pdfId: string;
  let docxId: string;

  it("ingests PDF, DOCX, TXT, Markdown and HTML to indexed, with vectors and pages", async () => {
    const results = await uploadOk(alice.client, collectionId, [
      {
        name: "sepsis.pdf",
        data: await makePdf([
          ["Sepsis protocol. Overview of the ward procedures for suspected infection."],
          ["Within one hour give broad-spectrum antibiotics after drawing lactate and blood cultures."],
          ["Escalate to the intensive care outreach team when the mean arterial pressure stays low."],
        ]),
      },
      {
        name: "hygiene.docx",
        data: await makeDocx([
          {
            h1: "Infection control",
            h2: "Hand hygiene",
            paragraphs: ["Rub hands with alcohol gel for thirty seconds before every patient contact."],
          },
          {
            h1: "Isolation",
            paragraphs: ["Patients with norovirus stay in side rooms until forty-eight hours symptom free."],
          },
        ]),
      },
      {
        name: "handover.txt",
        data: "Handover happens at the bedside.\n\nUse the SBAR structure for every patient.",
      },
      {
        name: "oncall.md",
        data: "# On call\n\n## Paging\n\nPage the registrar on extension 4411 for urgent reviews.\n",
      },
      {
        name: "visiting.html",
        data: "<html><body><h1>Visiting</h1><p>Visiting hours end at twenty hundred.</p><script>evil()</script></body></html>",
      },
    ]);
    expect(results.map((r) => r.outcome)).toEqual(["queued", "queued", "queued", "queued", "queued"]);
    const ids = results.map((r) => r.document!.id);
    const docs = await settled(alice.client, collectionId, ids);
    for (const d of docs.values()) {
      expect(d, d.name).toMatchObject({ status: "indexed", hasVectors: true });
      expect(d.chunks, d.name).toBeGreaterThan(0);
    }
    pdfId = ids[0]!;
    docxId = ids[1]!;
    expect(docs.get(pdfId)?.pages).toBe(3);
  });

  it("cites the right page of a PDF and the right heading of a DOCX, with highlighted snippets", async () => {
    const [top] = await search(alice.client, "broad-spectrum antibiotics lactate");
    expect(top?.citation).toMatchObject({ documentId: pdfId, documentName: "sepsis.pdf", page: 2 });
    expect(top?.snippet.filter((p) => p.match).map((p) => p.text.toLowerCase())).toEqual(
      expect.arrayContaining(["antibiotics", "lactate"]),
    );
    const [hyg] = await search(alice.client, "alcohol gel hands");
    expect(hyg?.citation).toMatchObject({
      documentId: docxId,
      heading: ["Infection control", "Hand hygiene"],
    });
    const [md] = await search(alice.client, "registrar extension 4411");
    expect(md?.citation).toMatchObject({ documentName: "oncall.md", heading: ["On call", "Paging"] });
    // Words only a DOCX heading holds find its section by full text ("Isolation" is in no paragraph).
    const [iso] = await search(alice.client, "isolation", { mode: "fts" });
    expect(iso?.citation).toMatchObject({ documentId: docxId, heading: ["Isolation"] });
    // Each mode works on its own too, says that it ran, and shows the relevance under the fused rank.
    for (const mode of ["vector", "fts", "hybrid"]) {
      const r = await alice.client.json<
        Data<(Hit & { relevance: { bm25: number | null; distance: number | null } })[]> & {
          search: { requested: string; mode: string; reason: string | null };
        }
      >("POST", "/api/kb/search", { query: "norovirus side rooms", mode });
      expect(r.data.length, mode).toBeGreaterThan(0);
      expect(r.search).toMatchObject({ requested: mode, mode, reason: null });
      const top = r.data[0]?.relevance;
      if (mode === "vector") expect(top).toMatchObject({ bm25: null, distance: expect.any(Number) });
      if (mode === "fts") expect(top).toMatchObject({ bm25: expect.any(Number), distance: null });
      if (mode === "hybrid")
        expect(r.data.some((h) => h.relevance.bm25 !== null && h.relevance.distance !== null)).toBe(true);
    }
    const detail = await alice.client.json<Data<{ chunkList: { page: number | null; text: string }[] }>>(
      "GET",
      `/api/kb/documents/${pdfId}`,
    );
    expect(detail.data.chunkList.find((c) => c.text.includes("antibiotics"))?.page).toBe(2);
    const file = await alice.client.request("GET", `/api/kb/documents/${pdfId}/file`);
    expect(file.headers.get("content-type")).toBe("application/pdf");
    expect(file.headers.get("content-disposition")).toContain("sepsis.pdf");
    expect(
      Buffer.from(await file.arrayBuffer())
        .subarray(0, 5)
        .toString(),
    ).toBe("%PDF-");
  });

  it("never gives a chunk of a collection to someone without access: API, tool, and another organization", async () => {
    expect(await search(bob.client, "antibiotics lactate")).toEqual([]);
    expect((await bob.client.request("GET", `/api/kb/collections/${collectionId}`)).status).toBe(404);
    expect((await bob.client.request("GET", `/api/kb/documents/${pdfId}`)).status).toBe(404);
    expect((await bob.client.request("GET", `/api/kb/documents/${pdfId}/file`)).status).toBe(404);
    const bobCaller = {
      orgId: org.orgId,
      userId: bob.id,
      email: "",
      permissions: new Set(["kb.read"]),
      systemAdmin: false,
      via: "session" as const,
    };
    const viaTool = await srv.tools!.invoke(srv.db.knex, bobCaller, "kb.search", {
      query: "antibiotics lactate",
    });
    expect(viaTool).toEqual({ status: "ok", output: [] });

    // Shared view-only: Bob reads and searches, but cannot upload or delete.
    await alice.client.json("PUT", `/api/kb/collections/${collectionId}/shares`, {
      shares: [{ granteeType: "user", granteeId: bob.id, access: "view" }],
    });
    expect((await search(bob.client, "antibiotics lactate"))[0]?.citation.documentId).toBe(pdfId);
    const toolHit = await srv.tools!.invoke(srv.db.knex, bobCaller, "kb.search", {
      query: "antibiotics lactate",
    });
    expect((toolHit as { output: { documentId: string; page: number }[] }).output[0]).toMatchObject({
      documentId: pdfId,
      page: 2,
    });
    expect((await upload(bob.client, collectionId, [{ name: "x.txt", data: "x" }])).status).toBe(403);
    expect((await bob.client.request("DELETE", `/api/kb/documents/${pdfId}`)).status).toBe(403);

    // A search repeated starts its index query on the last plan (latency hiding): same hits. Once the share is
    // revoked, the query started on the old plan is thrown away and nothing comes back.
    const again = await search(bob.client, "antibiotics lactate");
    expect(again.map((h) => h.chunkId)).toEqual(
      (await search(bob.client, "antibiotics lactate")).map((h) => h.chunkId),
    );
    expect(again[0]?.citation.documentId).toBe(pdfId);
    await alice.client.json("PUT", `/api/kb/collections/${collectionId}/shares`, { shares: [] });
    expect(await search(bob.client, "antibiotics lactate")).toEqual([]);
    expect(await search(bob.client, "antibiotics lactate")).toEqual([]);

    // Another organization: nothing, by search or by id.
    expect(await search(other.owner, "antibiotics lactate")).toEqual([]);
    expect((await other.owner.request("GET", `/api/kb/documents/${pdfId}`)).status).toBe(404);
    expect(
      (
        await other.owner.request("POST", "/api/kb/search", {
          query: "antibiotics",
          collectionIds: [collectionId],
        })
      ).status,
    ).toBe(200);
    expect(await search(other.owner, "antibiotics", { collectionIds: [collectionId] })).toEqual([]);
  });

  it("detects duplicates, replaces a re-uploaded document atomically, and deletes file, row and chunks", async () => {
    const dup = await uploadOk(alice.client, collectionId, [
      {
        name: "handover-copy.txt",
        data: "Handover happens at the bedside.\n\nUse the SBAR structure for every patient.",
      },
    ]);
    expect(dup[0]?.outcome).toBe("duplicate");

    const first = await uploadOk(alice.client, collectionId, [
      { name: "parking.txt", data: "Staff parking is in the zebra lot." },
    ]);
    const id = first[0]!.document!.id;
    await settled(alice.client, collectionId, [id]);
    expect((await search(alice.client, "zebra lot", { mode: "fts" })).length).toBe(1);
    const replaced = await uploadOk(alice.client, collectionId, [
      { name: "parking.txt", data: "Staff parking moved to the giraffe garage." },
    ]);
    expect(replaced[0]).toMatchObject({ outcome: "replaced", document: { id } });
    await settled(alice.client, collectionId, [id]);
    expect(await search(alice.client, "zebra lot", { mode: "fts" })).toEqual([]);
    expect((await search(alice.client, "giraffe garage", { mode: "fts" }))[0]?.citation.documentId).toBe(id);
    const files = path.join(kbDir(srv.config), "files", org.orgId, id);
    expect(readdirSync(files)).toHaveLength(1);
    // Two files of one name in one request: the second replaces the first, and the document indexes (the first
    // one's job, superseded, must not remove the second one's file).
    const twice = await uploadOk(alice.client, collectionId, [
      { name: "rota.txt", data: "The rota is pinned by the lifts." },
      { name: "rota.txt", data: "The rota moved to the staff room noticeboard." },
    ]);
    expect(twice.map((r) => r.outcome)).toEqual(["queued", "replaced"]);
    const rota = twice[1]!.document!.id;
    expect(twice[0]!.document!.id).toBe(rota);
    const [done] = [...(await settled(alice.client, collectionId, [rota])).values()];
    expect(done?.status, done?.error ?? "").toBe("indexed");
    expect(
      (await search(alice.client, "staff room noticeboard", { mode: "fts" }))[0]?.citation.documentId,
    ).toBe(rota);
    expect(readdirSync(path.join(kbDir(srv.config), "files", org.orgId, rota))).toHaveLength(1);

    await alice.client.json("DELETE", `/api/kb/documents/${id}`, undefined, 204);
    // Gone from search at once; the worker removes the file and chunks.
    expect(await search(alice.client, "giraffe garage", { mode: "fts" })).toEqual([]);
    const deadline = Date.now() + 20_000;
    while (existsSync(files) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(files)).toBe(false);
  });
});

describe("knowledge base: folder uploads", () => {
  it("keeps paths: one name in two folders is two documents, and a path again replaces only its own", async () => {
    const folders = (
      await alice.client.json<Data<{ id: string }>>("POST", "/api/kb/collections", { name: "Handbook" }, 201)
    ).data.id;
    const up = await uploadOk(alice.client, folders, [
      {
        name: "handbook/install/index.md",
        data: "# Install\n\nRun the installer from the USB stick in room 4.",
      },
      { name: "handbook/backup/index.md", data: "# Backup\n\nBackups go to the tape library every night." },
      // A path is a label: `..` segments are dropped, nothing is written anywhere by it.
      { name: "../../etc/notes.txt", data: "Visitors sign in at the front desk." },
    ]);
    expect(up.map((r) => [r.outcome, r.name, r.document?.path, r.document?.name])).toEqual([
      ["queued", "handbook/install/index.md", "handbook/install/index.md", "index.md"],
      ["queued", "handbook/backup/index.md", "handbook/backup/index.md", "index.md"],
      ["queued", "etc/notes.txt", "etc/notes.txt", "notes.txt"],
    ]);
    const ids = up.map((r) => r.document!.id);
    expect(new Set(ids).size).toBe(3);
    for (const d of (await settled(alice.client, folders, ids)).values()) expect(d.status).toBe("indexed");
    const [tape] = await search(alice.client, "tape library", { mode: "fts", collectionIds: [folders] });
    expect(tape?.citation).toMatchObject({ documentId: ids[1], documentName: "handbook/backup/index.md" });
    // The same path again replaces that document only.
    const again = await uploadOk(alice.client, folders, [
      {
        name: "handbook/install/index.md",
        data: "# Install\n\nThe installer now lives on the DVD in room 5.",
      },
    ]);
    expect(again[0]).toMatchObject({ outcome: "replaced", document: { id: ids[0] } });
    await settled(alice.client, folders, [ids[0]!]);
    const listed = (await alice.client.json<Data<Doc[]>>("GET", `/api/kb/collections/${folders}/documents`))
      .data;
    expect(listed.map((d) => d.path)).toEqual([
      "etc/notes.txt",
      "handbook/backup/index.md",
      "handbook/install/index.md",
    ]);
    expect(
      (await search(alice.client, "DVD room", { mode: "fts", collectionIds: [folders] }))[0]?.citation,
    ).toMatchObject({ documentId: ids[0], documentName: "handbook/install/index.md" });
  });

  it("unpacks a zip archive into documents with their paths, refusing what it must and bombs whole", async () => {
    const zipped = (
      await alice.client.json<Data<{ id: string }>>("POST", "/api/kb/collections", { name: "Zipped" }, 201)
    ).data.id;
    const archive = await makeZip([
      { name: "site/guide/index.md", data: Buffer.from("# Guide\n\nThe generator room is behind ward 9.") },
      { name: "site/faq/index.md", data: Buffer.from("# FAQ\n\nVisiting hours end at eight.") },
      // Renamed to ../../outside.txt below (zip writers refuse to write such a name; attackers do not).
      { name: "aa/aa/outside.txt", data: Buffer.from("Only a label: written nowhere but the store.") },
      { name: "site/logo.png", data: Buffer.from("not really a picture") },
    ]);
    const hostile = Buffer.from(
      archive.toString("latin1").replaceAll("aa/aa/outside.txt", "../../outside.txt"),
      "latin1",
    );
    const up = await uploadOk(alice.client, zipped, [{ name: "site.zip", data: hostile }]);
    expect(up.map((r) => [r.name, r.outcome, r.error?.code ?? null])).toEqual([
      ["site/guide/index.md", "queued", null],
      ["site/faq/index.md", "queued", null],
      ["outside.txt", "queued", null],
      ["site/logo.png", "refused", "unsupported_type"],
    ]);
    const ids = up.filter((r) => r.document).map((r) => r.document!.id);
    for (const d of (await settled(alice.client, zipped, ids)).values()) expect(d.status).toBe("indexed");
    const [room] = await search(alice.client, "generator room", { mode: "fts", collectionIds: [zipped] });
    expect(room?.citation).toMatchObject({ documentName: "site/guide/index.md" });
    // A bomb (a small archive that unpacks past the upload limit) and a file that is no zip: refused whole.
    const bomb = await makeZip([{ name: "zeros.txt", data: Buffer.alloc(210 * 1024 * 1024) }]);
    // Every file refused: 400, with each file's reason.
    const r = await upload(alice.client, zipped, [
      { name: "bomb.zip", data: bomb },
      { name: "fake.zip", data: "plain text, not an archive" },
    ]);
    expect(r.status).toBe(400);
    const refused = ((await r.json()) as { error: { details: { files: UploadResult[] } } }).error.details
      .files;
    expect(refused.map((f) => [f.name, f.outcome, f.error?.code])).toEqual([
      ["bomb.zip", "refused", "zip_too_large"],
      ["fake.zip", "refused", "not_zip"],
    ]);
    const listed = (await alice.client.json<Data<Doc[]>>("GET", `/api/kb/collections/${zipped}/documents`))
      .data;
    expect(listed.map((d) => d.path)).toEqual(["outside.txt", "site/faq/index.md", "site/guide/index.md"]);
    expect(readdirSync(path.join(kbDir(srv.config), "tmp"))).toEqual([]);
  });
});

describe("knowledge base: hostile uploads", () => {
  const livez = async () => (await srv.fetch("/livez")).status;
  const tmpEmpty = () => {
    const tmp = path.join(kbDir(srv.config), "tmp");
    return !existsSync(tmp) || readdirSync(tmp).length === 0;
  };

  it("refuses a lying extension, an empty file and a file over the limit at upload, leaving nothing behind", async () => {
    const before = (
      await alice.client.json<Data<Doc[]>>("GET", `/api/kb/collections/${collectionId}/documents`)
    ).data.length;
    const cases: [string, Buffer | string, number, string][] = [
      ["invoice.pdf", "this is plain text pretending to be a PDF", 400, "type_mismatch"],
      [
        "photo.txt",
        Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]),
        400,
        "type_mismatch",
      ],
      ["empty.txt", "", 400, "empty_file"],
      ["huge.txt", Buffer.alloc(5 * 1024 * 1024, 0x61), 413, "file_too_large"],
      ["tool.exe", "MZ...", 400, "unsupported_type"],
    ];
    for (const [name, data, status, code] of cases) {
      const r = await upload(alice.client, collectionId, [{ name, data }]);
      const body = (await r.json()) as { error: { code: string; message: string } };
      expect(r.status, name).toBe(status);
      expect(body.error.code, name).toBe(code);
      expect(body.error.message, name).toContain(name);
      expect(await livez()).toBe(200);
    }
    expect(
      (await alice.client.json<Data<Doc[]>>("GET", `/api/kb/collections/${collectionId}/documents`)).data
        .length,
    ).toBe(before);
    expect(tmpEmpty()).toBe(true);
    // Not multipart at all.
    const json = await alice.client.request("POST", `/api/kb/collections/${collectionId}/documents`, {
      files: [],
    });
    expect(json.status).toBe(415);
  });

  it("fails corrupted, encrypted, looping and zip-bomb documents with reasons, reads no linked file, and stays up", async () => {
    const secret = path.join(dir, "secret-note.png");
    (await import("node:fs")).writeFileSync(secret, "TOP-SECRET-4242");
    const results = await uploadOk(alice.client, collectionId, [
      { name: "broken.pdf", data: makeCorruptPdf() },
      { name: "locked.pdf", data: makeEncryptedPdf() },
      { name: "loop.pdf", data: makeLoopingPdf() },
      { name: "bomb.docx", data: await makeZipBombDocx(150) },
      { name: "linked.docx", data: await makeExternalImageDocx(secret, "Linked image policy text.") },
    ]);
    const ids = results.map((r) => r.document!.id);
    const started = Date.now();
    while (Date.now() - started < 60_000) {
      expect(await livez()).toBe(200);
      const docs = await settled(alice.client, collectionId, ids).catch(() => null);
      if (docs) {
        const by = (name: string) => [...docs.values()].find((d) => d.name === name);
        expect(by("broken.pdf")).toMatchObject({ status: "failed", error: expect.stringMatching(/damaged/) });
        expect(by("locked.pdf")).toMatchObject({
          status: "failed",
          error: expect.stringMatching(/password/),
        });
        expect(by("loop.pdf")).toMatchObject({
          status: "failed",
          // Its 400,000 pages pass the page limit: refused before any is read.
          error: expect.stringMatching(/pages; at most/),
        });
        expect(by("bomb.docx")).toMatchObject({ status: "failed", error: expect.stringMatching(/zip bomb/) });
        expect(by("linked.docx")).toMatchObject({ status: "indexed" });
        for (const d of docs.values()) if (d.status === "failed") expect(d.chunks).toBe(0);
        break;
      }
    }
    const linked = await search(alice.client, "linked image policy", { mode: "fts" });
    expect(JSON.stringify(linked)).not.toContain("TOP-SECRET");
    expect(linked.length).toBeGreaterThan(0);
    expect(await livez()).toBe(200);
  }, 120_000);
});

describe("knowledge base: progress events", () => {
  it("pushes the stages of an ingestion to a browser listening on /api/kb/events", async () => {
    const ac = new AbortController();
    // Another organization listens too, and must hear nothing of it.
    const foreign = await srv.fetch("/api/kb/events", { headers: other.owner.headers(), signal: ac.signal });
    const foreignReader = foreign.body!.getReader();
    let foreignText = "";
    void (async () => {
      for (;;) {
        const { value, done } = await foreignReader.read().catch(() => ({ value: undefined, done: true }));
        if (done) return;
        foreignText += new TextDecoder().decode(value);
      }
    })();
    const r = await srv.fetch("/api/kb/events", { headers: alice.client.headers(), signal: ac.signal });
    expect(r.headers.get("content-type")).toContain("text/event-stream");
    const reader = r.body!.getReader();
    const seen: string[] = [];
    const reading = (async () => {
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += new TextDecoder().decode(value);
        for (const m of buf.matchAll(/data: (\{.*\})/g))
          seen.push((JSON.parse(m[1]!) as { status: string }).status);
        buf = buf.slice(buf.lastIndexOf("\n\n") + 2);
        if (seen.includes("indexed")) return;
      }
    })();
    await new Promise((res) => setTimeout(res, 200));
    await uploadOk(alice.client, collectionId, [
      { name: "events.txt", data: "Fire doors close automatically at night." },
    ]);
    await Promise.race([reading, new Promise((res) => setTimeout(res, 30_000))]);
    ac.abort();
    expect(seen).toEqual(expect.arrayContaining(["extracting", "chunking", "embedding", "indexed"]));
    expect(foreignText).not.toContain("progress");
    await alice.client.json("PUT", `/api/kb/collections/${collectionId}/shares`, { shares: [] });
  });
});
