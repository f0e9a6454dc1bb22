import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as lancedb from "@lancedb/lancedb";
import { spawnCore, waitForOk, type CoreProcess } from "../support/process.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";
import { NATS_URL } from "../support/env.js";
import { deleteStreams } from "../support/nats.js";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { makePdf } from "../support/kb-fixtures.js";
import { KbIndex } from "../../core/src/modules/kb/kb.index.js";

const run = promisify(execFile);
const BIN = new URL("../../installer/bin/worksynapse.mjs", import.meta.url).pathname;
const DOCS = 50;
const ADMIN = {
  organizationName: "Crash Ward",
  name: "Ada",
  email: "ada@crash.example",
  password: "lantern-harbor-violet-7",
};
const prefix = `kbcrash${randomBytes(3).toString("hex")}`;
let pg: TestDatabase;
let dataDir: string;
let env: Record<string, string>;
let web: CoreProcess;
let url: string;
let cookie: string;
const workers: CoreProcess[] = [];

const headers = () => ({ "x-requested-with": "worksynapse", origin: url, cookie });

function startWorker(): CoreProcess {
  const w = spawnCore(env, ["--roles", "worker"]);
  workers.push(w);
  return w;
}
async function statuses(collection: string): Promise<{ id: string; status: string; chunks: number }[]> {
  const r = await fetch(`${url}/api/kb/collections/${collection}/documents`, { headers: headers() });
  if (r.status !== 200) throw new Error(`documents: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { data: { id: string; status: string; chunks: number }[] }).data;
}
async function waitIndexed(collection: string, atLeast: number, ms = 120_000) {
  const end = Date.now() + ms;
  for (;;) {
    const docs = await statuses(collection);
    const n = docs.filter((d) => d.status === "indexed").length;
    if (n >= atLeast) return docs;
    if (Date.now() > end)
      throw new Error(
        `only ${n} of ${atLeast} indexed: ${JSON.stringify(docs.filter((d) => d.status !== "indexed"))}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  pg = await createTestDatabase("kbcrash");
  dataDir = mkdtempSync(path.join(tmpdir(), "ws-kbcrash-"));
  env = {
    WORKSYNAPSE_DATA_DIR: dataDir,
    DATABASE_URL: pg.url,
    NATS_URL,
    WORKSYNAPSE_NATS_PREFIX: prefix,
    WORKSYNAPSE_AI_THREADS: "1",
    WORKSYNAPSE_KB_CHUNK_TOKENS: "60",
    // The test polls the document list; the per-caller API limit is not under test here.
    WORKSYNAPSE_AUTH_API_PER_MINUTE: "100000",
  };
  const model = path.join(dataDir, "tiny.gguf");
  makeTinyModel(model);
  await run(process.execPath, [BIN, "models", "import", model, "--name", "tiny", "--role", "embedding"], {
    env: { ...process.env, ...env },
  });
  // The web process serves the API only; ingestion runs in separate worker processes we can kill.
  web = spawnCore(env, ["--roles", "web"]);
  url = await web.url;
  await waitForOk(`${url}/readyz`);
  const h = { "content-type": "application/json", "x-requested-with": "worksynapse", origin: url };
  expect(
    (await fetch(`${url}/api/auth/setup`, { method: "POST", headers: h, body: JSON.stringify(ADMIN) }))
      .status,
  ).toBe(201);
  const login = await fetch(`${url}/api/auth/login`, {
    method: "POST",
    headers: h,
    body: JSON.stringify({ email: ADMIN.email, password: ADMIN.password }),
  });
  cookie = login.headers.getSetCookie()[0]?.split(";")[0] as string;
}, 120_000);
afterAll(async () => {
  for (const p of [...workers, web]) {
    p?.child.kill("SIGKILL");
    await p?.exit;
  }
  await deleteStreams(prefix);
  await pg?.drop();
});

describe("knowledge base crash safety", () => {
  it("kills the worker twice while 50 documents are ingested: all 50 indexed once, no duplicate chunks", async () => {
    const collection = (
      (await (
        await fetch(`${url}/api/kb/collections`, {
          method: "POST",
          headers: { ...headers(), "content-type": "application/json" },
          body: JSON.stringify({ name: "Crash test" }),
        })
      ).json()) as { data: { id: string } }
    ).data.id;
    // Three uploads (at most 20 files each), as a person would drop them.
    for (let start = 0; start < DOCS; start += 20) {
      const form = new FormData();
      for (let i = start; i < Math.min(DOCS, start + 20); i++) {
        const pdf = await makePdf([
          [`Document ${i} page one. ${"Ward procedure text for chunking. ".repeat(12)}`],
          [`Document ${i} page two. ${"Escalation steps and contacts. ".repeat(12)}`],
        ]);
        form.append("files", new Blob([new Uint8Array(pdf)]), `doc-${i}.pdf`);
      }
      const up = await fetch(`${url}/api/kb/collections/${collection}/documents`, {
        method: "POST",
        headers: headers(),
        body: form,
      });
      expect(up.status).toBe(201);
    }

    let w = startWorker();
    await waitIndexed(collection, 5);
    w.child.kill("SIGKILL");
    await w.exit;
    w = startWorker();
    await waitIndexed(collection, 20);
    w.child.kill("SIGKILL");
    await w.exit;
    w = startWorker();
    const docs = await waitIndexed(collection, DOCS);
    expect(docs.length).toBe(DOCS);
    expect(docs.every((d) => d.status === "indexed" && d.chunks > 0)).toBe(true);

    // The index holds exactly the chunks the rows say, each once.
    const orgId = (
      (await (await fetch(`${url}/api/auth/me`, { headers: headers() })).json()) as {
        data: { organization: { id: string } };
      }
    ).data.organization.id;
    const db = await lancedb.connect(path.join(dataDir, "kb"));
    const table = await db.openTable(KbIndex.tableOf(orgId));
    const rows = (await table.query().select(["id", "document_id"]).limit(1_000_000).toArray()) as {
      id: string;
      document_id: string;
    }[];
    const expected = docs.reduce((n, d) => n + d.chunks, 0);
    expect(rows.length).toBe(expected);
    expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length);
    expect(new Set(rows.map((r) => r.document_id)).size).toBe(DOCS);
    db.close();
    // The web process never wrote the index; it serves what the worker processes wrote.
    const found = await fetch(`${url}/api/kb/search`, {
      method: "POST",
      headers: { ...headers(), "content-type": "application/json" },
      body: JSON.stringify({ query: "Document 42 page two", mode: "fts", limit: 3 }),
    });
    const hits = ((await found.json()) as { data: { citation: { documentName: string; page: number } }[] })
      .data;
    expect(hits[0]?.citation).toMatchObject({ documentName: "doc-42.pdf", page: 2 });
    w.child.kill("SIGTERM");
    await w.exit;
  }, 240_000);
});
