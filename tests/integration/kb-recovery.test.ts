// Recovery of the knowledge base. The stall watchdog: a document left in a non-terminal state with no job to move it (lost with a dead bus, a
// hung worker) is queued again, and after two re-queues without progress it fails with a reason.
import { readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createTestOrg, type Client, type TestOrg } from "../support/identity.js";
import { settledDocs, uploadFilesOk } from "../support/kb.js";
import { rescueStalledDocuments } from "../../core/src/modules/kb/kb.watchdog.js";
import { silentLogger } from "../../core/src/platform/log.js";
import { startServer } from "../../core/src/server.js";
import { KbIndex } from "../../core/src/modules/kb/kb.index.js";
import { kbDir } from "../../core/src/modules/kb/kb.service.js";

type Data<T> = { data: T };
const servers: TestServer[] = [];
afterAll(() => Promise.all(servers.map((s) => s.close())));

async function setup(
  env: Record<string, string>,
): Promise<{ srv: TestServer; org: TestOrg; collection: string }> {
  const srv = await getTestServer({ env });
  servers.push(srv);
  const org = await createTestOrg(srv, "stall");
  const collection = (
    await org.owner.json<Data<{ id: string }>>("POST", "/api/kb/collections", { name: "Stalls" }, 201)
  ).data.id;
  return { srv, org, collection };
}

describe("the stall watchdog", () => {
  it("queues a document whose job was lost again, and it gets indexed", async () => {
    const { srv, org, collection } = await setup({ WORKSYNAPSE_KB_STALL_AFTER_MS: "2000" });
    const [r] = await uploadFilesOk(srv, org.owner, collection, [
      { name: "ward.txt", data: "The ward opens at eight." },
    ]);
    const id = r?.document?.id as string;
    await settledDocs(org.owner, collection, [id]);
    // A new generation that no job will ever carry, stuck half-way, as after a lost job.
    const db = new pg.Client({ connectionString: srv.pg.url });
    await db.connect();
    await db.query(
      "update kb_documents set generation = generation + 1, status = 'embedding', progress = 40, updated_at = now() - interval '1 hour' where id = $1",
      [id],
    );
    await db.end();
    const docs = await settledDocs(org.owner, collection, [id]);
    expect(docs.get(id)?.status).toBe("indexed");
  });

  it("fails a document that makes no progress after two re-queues, with a reason", async () => {
    // The web role alone: nothing consumes the queue, so nothing moves the document.
    const { srv, org, collection } = await setup({ WORKSYNAPSE_ROLES: "web" });
    const [r] = await uploadFilesOk(srv, org.owner, collection, [
      { name: "stuck.txt", data: "Never indexed." },
    ]);
    const id = r?.document?.id as string;
    const db = new pg.Client({ connectionString: srv.pg.url });
    await db.connect();
    const age = () =>
      db.query("update kb_documents set updated_at = now() - interval '1 hour' where id = $1", [id]);
    const deps = { knex: srv.db.knex, outbox: srv.outbox, config: srv.config, log: silentLogger() };
    for (const retry of [1, 2]) {
      await age();
      expect(await rescueStalledDocuments(deps)).toBe(1);
      const row = (await db.query("select status, stall_retries from kb_documents where id = $1", [id]))
        .rows[0];
      expect(row).toEqual({ status: "queued", stall_retries: retry });
      const jobs = await db.query("select msg_id from outbox where msg_id like $1", [
        `kb:${id}:%:stall${retry}`,
      ]);
      expect(jobs.rows.length).toBe(1);
    }
    // Not stalled yet (just re-queued): nothing to do.
    expect(await rescueStalledDocuments(deps)).toBe(0);
    await age();
    expect(await rescueStalledDocuments(deps)).toBe(1);
    await db.end();
    const doc = (
      await org.owner.json<Data<{ id: string; status: string; error: string }[]>>(
        "GET",
        `/api/kb/collections/${collection}/documents`,
      )
    ).data.find((d) => d.id === id);
    expect(doc?.status).toBe("failed");
    expect(doc?.error).toMatch(/made no progress \(queued\).*Try again/);
  });
});

describe("the index check at start", () => {
  it("rebuilds an organization's damaged table from the documents, and search answers again", async () => {
    const { srv, org, collection } = await setup({});
    const [r] = await uploadFilesOk(srv, org.owner, collection, [
      { name: "repair.txt", data: "The night pharmacist covers the east wing." },
    ]);
    const id = r?.document?.id as string;
    await settledDocs(org.owner, collection, [id]);
    const search = async (s: { url: string; fetch: TestServer["fetch"] }, cookie: Client) =>
      s.fetch("/api/kb/search", {
        method: "POST",
        headers: { ...cookie.headers({ "content-type": "application/json" }), origin: s.url },
        body: JSON.stringify({ query: "night pharmacist", mode: "fts" }),
      });
    expect(((await (await search(srv, org.owner)).json()) as Data<unknown[]>).data.length).toBe(1);
    // No embedding model on this server: a search by meaning runs on full text and says so.
    const hybrid = (await (
      await srv.fetch("/api/kb/search", {
        method: "POST",
        headers: { ...org.owner.headers({ "content-type": "application/json" }), origin: srv.url },
        body: JSON.stringify({ query: "night pharmacist", mode: "hybrid" }),
      })
    ).json()) as Data<unknown[]> & { search: { mode: string; reason: string; message: string } };
    expect(hybrid.data.length).toBe(1);
    expect(hybrid.search).toMatchObject({
      mode: "fts",
      reason: "no_embedding_model",
      message: "No embedding model is set for this organization's index: searched by full text only.",
    });
    await srv.stop();
    // Damage the organization's table: every data file replaced by garbage.
    const table = path.join(kbDir(srv.config), `${KbIndex.tableOf(org.orgId)}.lance`);
    const files = readdirSync(path.join(table, "data"));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) writeFileSync(path.join(table, "data", f), "not a lance file");
    const again = await startServer(srv.config, silentLogger());
    try {
      const at = {
        url: again.url as string,
        fetch: (p: string, init?: RequestInit) => fetch(`${again.url}${p}`, init),
      };
      const deadline = Date.now() + 30_000;
      let found = 0;
      while (Date.now() < deadline && found !== 1) {
        const res = await search(at, org.owner);
        if (res.status === 200) found = ((await res.json()) as Data<unknown[]>).data.length;
        if (found !== 1) await new Promise((res) => setTimeout(res, 300));
      }
      expect(found).toBe(1);
    } finally {
      await again.stop();
    }
  });
});
