// The supervised local nats-server under faults, as an operator would meet them on the embedded defaults: killed,
// it is restarted and its exit logged; /readyz tells the truth meanwhile; background work resumes with no restart
// of the server; SIGTERM ends within its deadline; and a killed server leaves no nats-server behind.
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  apiAs,
  setUpInstallation,
  sideloadTinyModel,
  spawnCore,
  waitForOk,
  type CoreProcess,
} from "../support/process.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";

const dbs: TestDatabase[] = [];
const cores: CoreProcess[] = [];
afterAll(async () => {
  for (const c of cores)
    if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
  await Promise.all(dbs.map((d) => d.drop()));
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const natsPid = (core: CoreProcess) => {
  const file = path.join(core.dataDir, "nats", "nats-server.pid");
  return existsSync(file) ? Number(readFileSync(file, "utf8")) : 0;
};
const until = async (what: string, ok: () => boolean | Promise<boolean>, ms = 20_000) => {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

async function startCore(): Promise<{ core: CoreProcess; url: string }> {
  const db = await createTestDatabase("busfault");
  dbs.push(db);
  // No NATS_URL: the server starts and supervises its own nats-server, as on the embedded defaults.
  const core = spawnCore({
    DATABASE_URL: db.url,
    WORKSYNAPSE_LOG_LEVEL: "info",
    WORKSYNAPSE_SHUTDOWN_DEADLINE_MS: "15000",
  });
  cores.push(core);
  const url = await core.url;
  await waitForOk(`${url}/readyz`);
  return { core, url };
}

describe("the supervised local nats-server", () => {
  it("is restarted after a kill -9, /readyz says so meanwhile, and background work goes on", async () => {
    const { core, url } = await startCore();
    const first = natsPid(core);
    expect(alive(first)).toBe(true);
    // /readyz sampled every 200 ms while the bus is killed and comes back.
    const samples: { status: number; bus: boolean }[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const t0 = Date.now();
        const r = await fetch(`${url}/readyz`);
        const body = (await r.json()) as { checks: { bus: { ok: boolean } } };
        samples.push({ status: r.status, bus: body.checks.bus.ok });
        expect(Date.now() - t0).toBeLessThan(3000);
        await new Promise((res) => setTimeout(res, 200));
      }
    })();
    process.kill(first, "SIGKILL");
    await until("a new nats-server", () => natsPid(core) !== first && alive(natsPid(core)));
    await until("ready again", () => samples.at(-1)?.status === 200);
    sampling = false;
    await sampler;
    expect(samples.some((s) => s.status === 503 && !s.bus)).toBe(true);
    expect(core.lines.some((l) => l.includes("local nats-server exited; restarting it"))).toBe(true);
    expect(core.lines.some((l) => l.includes("local nats-server restarted"))).toBe(true);

    // Work through the bus after the restart: a document is ingested (outbox -> relay -> queue -> worker).
    const cookie = await setUpInstallation(url, {
      organizationName: "Bus Fault Clinic",
      name: "Ada",
      email: "ada@busfault.example",
      password: "lantern-harbor-violet-7",
    });
    const api = apiAs(url, cookie);
    const col = await api<{ data: { id: string } }>("POST", "/api/kb/collections", { name: "After" });
    const form = new FormData();
    form.append("files", new Blob(["The ward opens at eight after the bus came back."]), "ward.txt");
    const up = await fetch(`${url}/api/kb/collections/${col.data.id}/documents`, {
      method: "POST",
      headers: { cookie, "x-requested-with": "worksynapse", origin: url },
      body: form,
    });
    expect(up.status).toBe(201);
    await until(
      "the document indexed",
      async () => {
        const docs = await api<{ data: { status: string }[] }>(
          "GET",
          `/api/kb/collections/${col.data.id}/documents`,
        );
        return docs.data[0]?.status === "indexed";
      },
      30_000,
    );

    // SIGTERM: a clean exit within the deadline, and the nats-server goes with it.
    const last = natsPid(core);
    const t0 = Date.now();
    core.child.kill("SIGTERM");
    const exit = await core.exit;
    expect(exit.code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(15_000);
    await until("nats-server gone", () => !alive(last), 5000);
  }, 120_000);

  it("on the embedded defaults (PGlite), a kill during ingestion: every document indexed, requests answering throughout", async () => {
    // One database connection: an outbox relay holding it while the bus did not answer used to stall every
    // request and leave documents queued.
    const dataDir = mkdtempSync(path.join(tmpdir(), "ws-busfault-pglite-"));
    await sideloadTinyModel({ WORKSYNAPSE_DATA_DIR: dataDir }, "embedding");
    const core = spawnCore({
      WORKSYNAPSE_DATA_DIR: dataDir,
      WORKSYNAPSE_LOG_LEVEL: "info",
      WORKSYNAPSE_AI_THREADS: "1",
      WORKSYNAPSE_KB_CHUNK_TOKENS: "120",
    });
    cores.push(core);
    const url = await core.url;
    await waitForOk(`${url}/readyz`);
    const cookie = await setUpInstallation(url, {
      organizationName: "Embedded Clinic",
      name: "Ada",
      email: "ada@embedded.example",
      password: "lantern-harbor-violet-7",
    });
    const api = apiAs(url, cookie);
    const col = await api<{ data: { id: string } }>("POST", "/api/kb/collections", { name: "Ward" });
    const form = new FormData();
    for (let i = 0; i < 12; i++)
      form.append(
        "files",
        new Blob([`Ward note ${i}. ${"The nurses rotate at eight. ".repeat(120)}`]),
        `w${i}.txt`,
      );
    const up = await fetch(`${url}/api/kb/collections/${col.data.id}/documents`, {
      method: "POST",
      headers: { cookie, "x-requested-with": "worksynapse", origin: url },
      body: form,
    });
    expect(up.status).toBe(201);
    await until("ingestion under way", async () => {
      const d = await api<{ data: { status: string }[] }>(
        "GET",
        `/api/kb/collections/${col.data.id}/documents`,
      );
      return d.data.some((x) => x.status !== "queued");
    });
    process.kill(natsPid(core), "SIGKILL");
    const killedAt = Date.now();
    let slowest = 0;
    await until(
      "all documents indexed",
      async () => {
        const t0 = Date.now();
        const d = await api<{ data: { status: string }[] }>(
          "GET",
          `/api/kb/collections/${col.data.id}/documents`,
        );
        const s = await api<{ data: unknown[] }>("POST", "/api/kb/search", {
          query: "nurses rotate",
          limit: 3,
        });
        slowest = Math.max(slowest, Date.now() - t0);
        return d.data.length === 12 && d.data.every((x) => x.status === "indexed") && s.data.length > 0;
      },
      60_000,
    );
    expect(Date.now() - killedAt).toBeLessThan(60_000);
    expect(slowest).toBeLessThan(3000);
    core.child.kill("SIGTERM");
    expect((await core.exit).code).toBe(0);
  }, 120_000);

  it("dies with a server killed by SIGKILL (no orphan)", async () => {
    const { core } = await startCore();
    const pid = natsPid(core);
    expect(alive(pid)).toBe(true);
    core.child.kill("SIGKILL");
    await core.exit;
    await until("the orphaned nats-server gone", () => !alive(pid), 5000);
  }, 60_000);
});
