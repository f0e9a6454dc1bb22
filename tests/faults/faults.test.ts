// Fault injection (`npm run test:faults`, part of `npm test`). A web process and a worker process, as a small
// site runs them, on a PostgreSQL server and a data directory of the suite's own (the data directory on a
// size-limited tmpfs where the machine allows mounting one), the web process supervising the local nats-server
// the worker also uses. Under a steady mixed load (uploads, searches, chat posts, notes, assistant questions on
// the tiny model), the suite in turn kills -9 the worker, the parser, the web server and the nats-server, stops
// the bus (SIGSTOP) for 30 s, restarts PostgreSQL and fills the data disk. After each fault and its recovery it
// checks: every acknowledged write is there, once; no document is left unfinished and none was indexed twice;
// search answers; /readyz told the truth (sampled every 500 ms); at the end, no process is left behind.
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTinyModel, TINY } from "../../scripts/make-tiny-model.js";
import { freePort } from "../support/slapd.js";
import { startPgServer, type PgServer } from "../support/pg-server.js";
import { setUpInstallation, spawnCore, waitForOk, type CoreProcess } from "../support/process.js";
import { makePdf } from "../support/kb-fixtures.js";

const CLI = new URL("../../installer/bin/worksynapse.mjs", import.meta.url).pathname;
const PASSWORD = "lantern-harbor-violet-7";

let pg: PgServer;
/** The process a test is killing on purpose (its exit is no failure). */
let expectedExit: CoreProcess | undefined;
/** Set when the last test stops both processes. */
let ending = false;
// The data directory, on a tmpfs of its own where the machine lets us mount one (root with CAP_SYS_ADMIN, as
// CI runs): decided when the file loads, since it decides whether the disk-full fault runs.
const dataDir = mkdtempSync(path.join(tmpdir(), "ws-faults-"));
const tmpfs = (() => {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=400m", "tmpfs", dataDir], { stdio: "ignore" });
    return true;
  } catch (err) {
    console.warn(
      `no tmpfs for the data directory (${(err as Error).message}): the disk-full fault is skipped`,
    );
    return false;
  }
})();
let env: Record<string, string>;
let web: CoreProcess;
let worker: CoreProcess;
let url: string;
let cookie: string;
let collection: string;
let channel: string;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const until = async (what: string, ok: () => boolean | Promise<boolean>, ms = 60_000) => {
  const end = Date.now() + ms;
  for (;;) {
    // A process that died on its own ends the wait at once, saying why.
    for (const [name, p] of [
      ["web", web],
      ["worker", worker],
    ] as const)
      if (p && !ending && expectedExit !== p && (p.child.exitCode !== null || p.child.signalCode !== null))
        throw new Error(`the ${name} process died on its own while waiting for: ${what}\n${lastWords()}`);
    try {
      if (await ok()) return;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await sleep(200);
  }
};
const alive = (pid: number | undefined) => {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
/** Processes whose command line mentions `text` (and are not zombies). */
const processesWith = (text: string) =>
  readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        if (/\) Z /.test(stat)) return false;
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(text);
      } catch {
        return false;
      }
    })
    .map(Number);
const childrenOf = (ppid: number) =>
  readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        return Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ")[1]) === ppid;
      } catch {
        return false;
      }
    })
    .map(Number);
const natsPid = () => {
  const f = path.join(dataDir, "nats", "nats-server.pid");
  return existsSync(f) ? Number(readFileSync(f, "utf8")) : 0;
};

const headers = (json = true) => ({
  ...(json ? { "content-type": "application/json" } : {}),
  "x-requested-with": "worksynapse",
  origin: url,
  cookie,
});
async function call<T>(
  method: string,
  p: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<{ status: number; body: T }> {
  const send = () =>
    fetch(`${url}${p}`, {
      method,
      headers: headers(),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  // A GET on a kept-alive connection the server closed meanwhile is sent once more, as browsers do (RFC 9110
  // section 9.2.2: idempotent requests may be retried automatically); anything else fails the test.
  const r = await send().catch((err: unknown) => {
    const code = ((err as { cause?: { code?: string } }).cause ?? {}).code;
    if (method === "GET" && (code === "ECONNRESET" || code === "UND_ERR_SOCKET")) return send();
    throw err;
  });
  const text = await r.text();
  return { status: r.status, body: (text ? JSON.parse(text) : undefined) as T };
}

function startWeb(): CoreProcess {
  web = spawnCore({ ...env, WORKSYNAPSE_ROLES: "web" });
  return web;
}
async function startWorker(): Promise<CoreProcess> {
  worker = spawnCore({
    ...env,
    WORKSYNAPSE_ROLES: "worker",
    NATS_URL: `nats://127.0.0.1:${env.WORKSYNAPSE_NATS_LOCAL_PORT}`,
  });
  await until("the worker started", () => worker.lines.some((l) => l.includes('"msg":"started"')), 60_000);
  return worker;
}
async function restartWeb() {
  startWeb();
  url = await web.url;
  await waitForOk(`${url}/readyz`, 60_000);
}

// ---------- the load ----------

const acked = {
  notes: new Map<string, string>(),
  messages: new Map<string, string>(),
  docs: new Set<string>(),
  answers: new Map<string, string>(),
};
const outcomes = new Map<string, number>();
let loadOn = false;
let loadLoop: Promise<void> | undefined;
let n = 0;

async function uploadText(name: string, text: string): Promise<string | null> {
  const form = new FormData();
  form.append("files", new Blob([text]), name);
  const r = await fetch(`${url}/api/kb/collections/${collection}/documents`, {
    method: "POST",
    headers: headers(false),
    body: form,
    signal: AbortSignal.timeout(15_000),
  });
  const b = (await r.json()) as { data?: { outcome: string; document?: { id: string } }[] };
  const doc = b.data?.[0];
  if (r.status === 201 && doc?.document && doc.outcome !== "refused") return doc.document.id;
  throw Object.assign(new Error("upload refused"), { status: r.status });
}

async function loadStep() {
  const i = n++;
  const kind = [
    "note",
    "chat",
    "upload",
    "search",
    "note",
    "chat",
    "search",
    "upload",
    "chat",
    "note",
    "search",
    "assistant",
  ][i % 12] as string;
  let status: number;
  try {
    if (kind === "note") {
      const title = `Fault note ${i}`;
      const r = await call<{ data: { id: string } }>("POST", "/api/notes", { title, body: `body ${i}` });
      status = r.status;
      if (r.status === 201) acked.notes.set(r.body.data.id, title);
    } else if (kind === "chat") {
      const text = `fault message ${i}`;
      const r = await call<{ data: { id: string } }>("POST", `/api/chat/channels/${channel}/messages`, {
        body: text,
      });
      status = r.status;
      if (r.status === 201) acked.messages.set(r.body.data.id, text);
    } else if (kind === "upload") {
      const id = await uploadText(`load-${i}.txt`, `Load document ${i}. The pharmacy restocks on day ${i}.`);
      status = 201;
      if (id) acked.docs.add(id);
    } else if (kind === "search") {
      status = (await call("POST", "/api/kb/search", { query: "pharmacy restocks", limit: 3 })).status;
    } else {
      const conv = await call<{ data: { id: string } }>("POST", "/api/assistant/conversations", {});
      status = conv.status;
      if (conv.status === 201) {
        const r = await fetch(`${url}/api/assistant/conversations/${conv.body.data.id}/messages`, {
          method: "POST",
          headers: headers(),
          body: JSON.stringify({ content: `question ${i}`, grounded: false }),
          signal: AbortSignal.timeout(30_000),
        });
        status = r.status;
        const events = await r.text();
        if (r.status === 200 && events.includes("event: done"))
          acked.answers.set(conv.body.data.id, `question ${i}`);
      }
    }
  } catch (err) {
    status = (err as { status?: number }).status ?? -1;
  }
  const key = `${kind}:${status}`;
  outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
}

function startLoad() {
  loadOn = true;
  loadLoop = (async () => {
    while (loadOn) {
      await loadStep();
      await sleep(120);
    }
  })();
}
async function stopLoad() {
  loadOn = false;
  await loadLoop;
}

// ---------- readiness ----------

const samples: { t: number; status: number; bus?: boolean; database?: boolean }[] = [];
let sampling = false;
let sampler: Promise<void> | undefined;
function startSampling() {
  sampling = true;
  sampler = (async () => {
    while (sampling) {
      const t = Date.now();
      try {
        const r = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2500) });
        const b = (await r.json()) as { checks: { bus: { ok: boolean }; database: { ok: boolean } } };
        samples.push({ t, status: r.status, bus: b.checks.bus.ok, database: b.checks.database.ok });
      } catch {
        samples.push({ t, status: 0 });
      }
      await sleep(Math.max(0, 500 - (Date.now() - t)));
    }
  })();
}
const samplesBetween = (from: number, to: number) => samples.filter((s) => s.t >= from && s.t <= to);

// ---------- invariants ----------

/** What the two processes said last, for a failure's message (a process that died says why here). */
const lastWords = () =>
  [web, worker]
    .map(
      (p, i) =>
        `${i ? "worker" : "web"} pid ${p?.child.pid} exit ${p?.child.exitCode ?? p?.child.signalCode ?? "running"}: ` +
        `${p?.stderr().slice(-800) ?? ""} ${
          p?.lines
            .filter((l) => /"level":(50|60)/.test(l))
            .slice(-3)
            .join(" ") ?? ""
        }`,
    )
    .join("\n");

async function checkInvariants(label: string) {
  try {
    await invariants(label);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${lastWords()}`, { cause: err });
  }
}

async function invariants(label: string) {
  await until(`${label}: ready again`, async () => (await fetch(`${url}/readyz`)).status === 200, 90_000);
  // Every acknowledged note is there, once, as written.
  for (const [id, title] of acked.notes) {
    const r = await call<{ data: { title: string } }>("GET", `/api/notes/${id}`);
    expect(r.status, `${label}: note ${id}`).toBe(200);
    expect(r.body.data.title).toBe(title);
  }
  // Every acknowledged chat message, once.
  const seen = new Map<string, number>();
  for (let after = 0; ;) {
    const page = await call<{ data: { id: string; seq: number }[] }>(
      "GET",
      `/api/chat/channels/${channel}/messages?afterSeq=${after}&limit=200`,
    );
    for (const m of page.body.data) seen.set(m.id, (seen.get(m.id) ?? 0) + 1);
    if (page.body.data.length < 200) break;
    after = Math.max(...page.body.data.map((m) => m.seq));
  }
  for (const id of acked.messages.keys()) expect(seen.get(id), `${label}: message ${id}`).toBe(1);
  // Every acknowledged upload ends indexed (or failed with a reason), none left half-way.
  await until(
    `${label}: every document finished`,
    async () => {
      const docs = await call<{ data: { id: string; status: string }[] }>(
        "GET",
        `/api/kb/collections/${collection}/documents`,
      );
      const mine = docs.body.data.filter((d) => acked.docs.has(d.id));
      return (
        mine.length === acked.docs.size && mine.every((d) => d.status === "indexed" || d.status === "failed")
      );
    },
    120_000,
  );
  // Indexed once: each chunk of a document's served generation is in the index exactly once.
  // (The web process reads the index the worker writes: it sees a write within a second, kb.index.ts.)
  for (const id of acked.docs) {
    let last = "";
    await until(
      `${label}: the chunks of ${id} once each`,
      async () => {
        const d = await call<{
          data: { name: string; status: string; chunks: number; chunkList: { index: number }[] };
        }>("GET", `/api/kb/documents/${id}`);
        if (d.body.data.status !== "indexed") return true;
        const idx = d.body.data.chunkList.map((c) => c.index);
        last = `${d.body.data.name}: ${idx.length} chunks listed, ${new Set(idx).size} distinct, ${d.body.data.chunks} counted`;
        return new Set(idx).size === idx.length && idx.length === d.body.data.chunks;
      },
      5000,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}: ${last}`);
    });
  }
  // Every answered assistant question is stored with its answer.
  for (const conv of acked.answers.keys()) {
    const c = await call<{ data: { messages: { role: string }[] } }>(
      "GET",
      `/api/assistant/conversations/${conv}`,
    );
    expect(
      c.body.data.messages.map((m) => m.role),
      `${label}: conversation ${conv}`,
    ).toEqual(["user", "assistant"]);
  }
  // Search answers.
  const t0 = Date.now();
  expect((await call("POST", "/api/kb/search", { query: "pharmacy restocks", limit: 3 })).status).toBe(200);
  expect(Date.now() - t0).toBeLessThan(5000);
}

// ---------- set-up ----------

beforeAll(async () => {
  pg = await startPgServer();
  env = {
    DATABASE_URL: pg.url,
    WORKSYNAPSE_DATA_DIR: dataDir,
    WORKSYNAPSE_NATS_LOCAL_PORT: String(await freePort()),
    WORKSYNAPSE_LOG_LEVEL: "info",
    WORKSYNAPSE_AI_THREADS: "1",
    WORKSYNAPSE_KB_CHUNK_TOKENS: "120",
    WORKSYNAPSE_KB_CHUNK_OVERLAP: "20",
    WORKSYNAPSE_KB_STALL_AFTER_MS: "20000",
    WORKSYNAPSE_SHUTDOWN_DEADLINE_MS: "15000",
    WORKSYNAPSE_AUTH_API_PER_MINUTE: "100000",
    WORKSYNAPSE_ASSISTANT_MAX_STEPS: "2",
  };
  // The tiny model, sideloaded for chat and embeddings as an admin would.
  mkdirSync(path.join(dataDir, "import"), { recursive: true });
  for (const [name, role, seed] of [
    ["tiny-chat", "chat", 42],
    ["tiny-embed", "embedding", 7],
  ] as const) {
    const model = path.join(dataDir, "import", `${name}.gguf`);
    makeTinyModel(model, { ...TINY, seed });
    execFileSync(process.execPath, [CLI, "models", "import", model, "--name", name, "--role", role], {
      env: { ...process.env, ...env },
      stdio: "ignore",
    });
    rmSync(model);
  }
  await restartWeb();
  await startWorker();
  cookie = await setUpInstallation(url, {
    organizationName: "Fault Clinic",
    name: "Ada",
    email: "ada@faults.example",
    password: PASSWORD,
  });
  collection = (await call<{ data: { id: string } }>("POST", "/api/kb/collections", { name: "Faults" })).body
    .data.id;
  channel = (
    await call<{ data: { id: string } }>("POST", "/api/chat/channels", {
      kind: "public",
      name: "faults",
      memberIds: [],
    })
  ).body.data.id;
  startSampling();
  startLoad();
  await sleep(3000);
}, 180_000);

afterAll(async () => {
  await stopLoad();
  sampling = false;
  await sampler;
  for (const p of [web, worker])
    if (p && p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  await sleep(500);
  if (tmpfs) execFileSync("umount", ["-l", dataDir], { stdio: "ignore" });
  rmSync(dataDir, { recursive: true, force: true });
  pg?.stop();
  // What the load met, for the log.
  console.log("fault suite load outcomes:", Object.fromEntries([...outcomes].sort()));
});

describe("fault injection under load", () => {
  it("kill -9 of the worker: its jobs are redelivered to the restarted worker", async () => {
    // A few uploads in flight when it dies.
    for (let i = 0; i < 3; i++) {
      const id = await uploadText(
        `worker-${i}.txt`,
        `Worker fault ${i}. ${"The pharmacy restocks. ".repeat(200)}`,
      );
      if (id) acked.docs.add(id);
    }
    await sleep(300);
    expectedExit = worker;
    worker.child.kill("SIGKILL");
    await worker.exit;
    await sleep(2000);
    await startWorker();
    await checkInvariants("worker killed");
  });

  it("kill -9 of the parser: its document is read again by a new parser", async () => {
    const pdf = await makePdf(
      Array.from({ length: 80 }, (_, i) => [`Parser fault page ${i + 1}.`, "The pharmacy restocks."]),
    );
    const form = new FormData();
    form.append("files", new Blob([new Uint8Array(pdf)]), "parser-fault.pdf");
    const r = await fetch(`${url}/api/kb/collections/${collection}/documents`, {
      method: "POST",
      headers: headers(false),
      body: form,
    });
    const doc = ((await r.json()) as { data: { document: { id: string } }[] }).data[0]?.document.id as string;
    acked.docs.add(doc);
    let killed = 0;
    await until(
      "the parser at work",
      () => {
        for (const pid of childrenOf(worker.child.pid as number))
          if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("parse/worker.js")) {
            process.kill(pid, "SIGKILL");
            killed = pid;
          }
        return killed > 0;
      },
      30_000,
    );
    await checkInvariants("parser killed");
    expect(alive(killed)).toBe(false);
  });

  it("kill -9 of the web server: restarted, nothing acknowledged is lost", async () => {
    const oldNats = natsPid();
    expectedExit = web;
    web.child.kill("SIGKILL");
    await web.exit;
    // Its nats-server dies with it (no orphan holding the port and the store).
    await until("the old nats-server gone", () => !alive(oldNats), 5000);
    await restartWeb();
    await checkInvariants("web killed");
  });

  it("kill -9 of the local nats-server: restarted by the server, clients reconnect", async () => {
    const before = natsPid();
    const t0 = Date.now();
    process.kill(before, "SIGKILL");
    await until("a new nats-server", () => natsPid() !== before && alive(natsPid()), 20_000);
    expect(web.lines.some((l) => l.includes("local nats-server exited; restarting it"))).toBe(true);
    await checkInvariants("nats killed");
    expect(Date.now() - t0).toBeLessThan(120_000);
  });

  it("the bus stopped for 30 s (SIGSTOP): /readyz says not ready meanwhile, and everything resumes", async () => {
    const pid = natsPid();
    process.kill(pid, "SIGSTOP");
    const stoppedAt = Date.now();
    const notesBefore = acked.notes.size;
    const messagesBefore = acked.messages.size;
    await sleep(30_000);
    // A bus outage delays background work, never a person's request: writes went on meanwhile.
    expect(acked.notes.size).toBeGreaterThan(notesBefore + 5);
    expect(acked.messages.size).toBeGreaterThan(messagesBefore + 5);
    process.kill(pid, "SIGCONT");
    const contAt = Date.now();
    const during = samplesBetween(stoppedAt + 4000, contAt - 500);
    // Each probe takes up to its 2 s check deadline while the bus cannot answer.
    expect(during.length).toBeGreaterThan(8);
    // Never "ready" while the bus cannot answer; each probe answered (within its 2.5 s timeout).
    expect(during.filter((s) => s.status === 200)).toEqual([]);
    expect(during.every((s) => s.status === 503 && s.bus === false)).toBe(true);
    await checkInvariants("bus stopped");
  }, 180_000);

  it("PostgreSQL restarted: requests fail cleanly meanwhile, then everything resumes", async () => {
    const t0 = Date.now();
    pg.restart();
    const restartedAt = Date.now();
    await checkInvariants("database restarted");
    // Whatever /readyz said while it was down, it was never a hang.
    for (const s of samplesBetween(t0, restartedAt + 2000)) expect([0, 200, 503]).toContain(s.status);
  }, 180_000);

  it.skipIf(!tmpfs)(
    "the data disk full: uploads are refused with a clear error, the server stays up, then recovers",
    async () => {
      const filler = path.join(dataDir, "filler.bin");
      // Fill the disk to the last few kilobytes.
      try {
        const mb = Buffer.alloc(1024 * 1024, 1);
        for (;;) writeFileSync(filler, mb, { flag: "a" });
      } catch {
        // ENOSPC: full
      }
      try {
        const form = new FormData();
        form.append("files", new Blob(["x".repeat(256 * 1024)]), "full-disk.txt");
        const r = await fetch(`${url}/api/kb/collections/${collection}/documents`, {
          method: "POST",
          headers: headers(false),
          body: form,
        });
        expect(r.status).toBeGreaterThanOrEqual(400);
        const b = (await r.json()) as { error: { code: string; message: string } };
        expect(b.error.code).toBe("disk_full");
        expect((await fetch(`${url}/livez`)).status).toBe(200);
      } finally {
        rmSync(filler, { force: true });
      }
      await checkInvariants("disk full");
    },
    180_000,
  );

  it("SIGTERM ends both processes within the deadline, and nothing is left behind", async () => {
    await stopLoad();
    const nats = natsPid();
    const t0 = Date.now();
    ending = true;
    worker.child.kill("SIGTERM");
    web.child.kill("SIGTERM");
    const [w, s] = await Promise.all([worker.exit, web.exit]);
    expect(Date.now() - t0).toBeLessThan(16_000);
    expect([0, 1]).toContain(w.code);
    expect([0, 1]).toContain(s.code);
    await until("nats-server gone", () => !alive(nats), 5000);
    expect(processesWith(dataDir)).toEqual([]);
    // The load was real: it made writes of every kind.
    expect(acked.notes.size).toBeGreaterThan(10);
    expect(acked.messages.size).toBeGreaterThan(10);
    expect(acked.docs.size).toBeGreaterThan(10);
  });
});
