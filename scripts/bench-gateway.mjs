// npm run bench:gateway — webhook ingest through WorkSynapse (signature check, replay check, store, enqueue,
// acknowledge: POST /api/hooks/:connection with the generic HMAC scheme, each request a new signed delivery)
// against a bare Koa handler that only checks the HMAC. Alternating rounds in the same run, medians; core and
// the baseline pinned to CPU 0, wrk to CPU 1. Goal: at least 0.7 of the baseline's requests/s.
// Core processes the deliveries it stores (the generic plugin's handler: an event recorded and published) in
// the same process, as a one-node installation does: during a WorkSynapse round that work competes with the
// ingest, and before every round the bench waits until the queue is empty, so that no round (the baseline's
// least of all) runs beside the backlog of the one before. The drain rate is reported too.
import { execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { compare, cpuSeconds, requireWrk, settings, startPinned, stopChild } from "./bench/load.mjs";
import { forkCore } from "./bench/core.mjs";

const PG = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const NATS = process.env.BENCH_NATS_URL ?? "nats://127.0.0.1:4222";
requireWrk();

/**
 * A wrk script whose every request is a distinct delivery, signed now (valid for the 300 s window). The signed
 * requests are in a data file the script reads line by line (a Lua table literal this large has too many
 * constants).
 */
function signedRequests(secret, hookPath, count) {
  const ts = String(Math.floor(Date.now() / 1000));
  const lines = [];
  for (let i = 0; i < count; i++) {
    const body = JSON.stringify({
      summary: `build ${i} passed`,
      n: i,
      nonce: randomBytes(6).toString("hex"),
    });
    const sig = `v1=${createHmac("sha256", secret).update(`${ts}.${body}`).digest("hex")}`;
    lines.push(`${sig}\t${body}`);
  }
  const dir = mkdtempSync(path.join(tmpdir(), "ws-bench-hook-"));
  const data = path.join(dir, "hooks.tsv");
  writeFileSync(data, lines.join("\n") + "\n");
  const file = path.join(dir, "hooks.lua");
  writeFileSync(
    file,
    `local sigs, bodies = {}, {}
for line in io.lines(${JSON.stringify(data)}) do
  local tab = string.find(line, "\t", 1, true)
  sigs[#sigs + 1] = string.sub(line, 1, tab - 1)
  bodies[#bodies + 1] = string.sub(line, tab + 1)
end
math.randomseed(os.time())
-- Each run starts at a random place: rounds do not replay each other's deliveries (a replay is not stored).
local i = math.random(#sigs)
request = function()
  i = i % #sigs + 1
  return wrk.format("POST", ${JSON.stringify(hookPath)}, {["Content-Type"] = "application/json", ["X-Webhook-Timestamp"] = "${ts}", ["X-Webhook-Signature"] = sigs[i]}, bodies[i])
end
`,
  );
  return file;
}

const dbName = `ws_bench_${randomBytes(4).toString("hex")}`;
const dbUrl = Object.assign(new URL(PG), { pathname: `/${dbName}` }).toString();
execFileSync("psql", [PG, "-qc", `create database ${dbName}`]);
const core = forkCore({
  DATABASE_URL: dbUrl,
  NATS_URL: NATS,
  WORKSYNAPSE_NATS_PREFIX: `benchhook${process.pid}`,
  WORKSYNAPSE_DATA_DIR: mkdtempSync(path.join(tmpdir(), "ws-bench-gw-")),
  WORKSYNAPSE_HTTP_HOST: "127.0.0.1",
  WORKSYNAPSE_HTTP_PORT: "0",
});
try {
  const url = await core.url;
  execFileSync("taskset", ["-apc", "0", String(core.pid)], { stdio: "ignore" });
  const headers = { "content-type": "application/json", "x-requested-with": "worksynapse", origin: url };
  const setup = await fetch(`${url}/api/auth/setup`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      organizationName: "Bench",
      name: "Ada",
      email: "ada@bench.example",
      password: "lantern-harbor-violet-7",
    }),
  });
  const cookie = setup.headers.getSetCookie()[0].split(";")[0];
  const api = async (method, p, body) => {
    const r = await fetch(`${url}${p}`, {
      method,
      headers: { ...headers, cookie },
      body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  await api("PUT", "/api/integrations/plugins/webhook", { enabled: true });
  const { data } = await api("POST", "/api/integrations/connections", {
    plugin: "webhook",
    name: "bench",
    baseUrl: "https://ci.bench.example",
    auth: { kind: "none" },
  });
  const secret = data.webhookSecret;
  // Enough distinct deliveries that no round replays one (a replay is cheaper: it is not stored).
  const script = signedRequests(secret, data.connection.webhookUrl, 120_000);
  const bare = await startPinned(new URL("./bench/webhook-bare.mjs", import.meta.url).pathname, [], {
    BENCH_SECRET: secret,
  });
  // Waits (synchronously: the load driver is) until every stored delivery is processed; counts the time.
  const drain = { deliveries: 0, seconds: 0, cpu: 0 };
  const count = (where) =>
    Number(
      execFileSync("psql", [dbUrl, "-tAc", `select count(*) from webhook_deliveries ${where}`], {
        encoding: "utf8",
      }).trim(),
    );
  const waitIdle = () => {
    const start = performance.now();
    const cpu0 = cpuSeconds(core.pid);
    const queued = count("where status = 'queued'");
    for (let left = queued; left > 0; left = count("where status = 'queued'")) {
      if (performance.now() - start > 300_000) throw new Error(`${left} deliveries still queued after 300 s`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    }
    drain.deliveries += queued;
    drain.seconds += (performance.now() - start) / 1000;
    drain.cpu += cpuSeconds(core.pid) - cpu0;
  };
  let r;
  try {
    r = compare([
      {
        name: "bareKoaHmac",
        url: `http://127.0.0.1:${bare.port}/hook`,
        pid: bare.child.pid,
        script,
        before: waitIdle,
      },
      {
        name: "worksynapse",
        url: `${url}${data.connection.webhookUrl}`,
        pid: core.pid,
        script,
        before: waitIdle,
      },
    ]);
  } finally {
    await stopChild(bare);
  }
  waitIdle();
  const stored = count("");
  const failed = count("where status <> 'processed'");
  const ratio = Number((r.worksynapse.rps / r.bareKoaHmac.rps).toFixed(3));
  const drainPerSecond = Math.round(drain.deliveries / Math.max(drain.seconds, 0.001));
  const report = {
    ...settings,
    results: r,
    ratio,
    goal: 0.7,
    storedDeliveries: stored,
    notProcessed: failed,
    backlogDrainedPerSecond: drainPerSecond,
    backlogCoreCpuShare: Number((drain.cpu / Math.max(drain.seconds, 0.001)).toFixed(2)),
  };
  mkdirSync("test-results", { recursive: true });
  writeFileSync("test-results/bench-gateway.json", JSON.stringify(report, null, 2));
  for (const [name, x] of Object.entries(r))
    console.log(`${name.padEnd(12)} ${x.rps.toFixed(0)} req/s, p50 ${x.p50} ms, p99 ${x.p99} ms`);
  console.log(
    `webhook ingest ratio to bare Koa + HMAC (goal >= 0.7): ${ratio}; deliveries stored: ${stored}, ` +
      `not processed: ${failed}; backlog processed at ${drainPerSecond}/s`,
  );
} finally {
  core.kill("SIGTERM");
  await new Promise((r) => core.once("exit", r));
  execFileSync("psql", [PG, "-qc", `drop database if exists ${dbName} with (force)`]);
}
