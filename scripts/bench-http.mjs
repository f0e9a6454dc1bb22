// npm run bench:http — two comparisons, each measured in the same run (alternating rounds, medians):
// 1. GET /livez through WorkSynapse's full middleware stack vs a bare Koa server with one route;
// 2. an authenticated JSON endpoint with one indexed query (session cookie, API key) vs bare Koa and vs
//    a raw pool.query loop of the same query.
import { execFileSync, fork } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { compare, cpuSeconds, requireWrk, settings, startPinned, stopChild } from "./bench/load.mjs";

const SERVER = new URL("./bench/http-servers.mjs", import.meta.url).pathname;
const PG = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
requireWrk();

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
function rawLoop(url, id) {
  const child = fork(SERVER, ["raw", url, id, String(settings.SECONDS)], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  execFileSync("taskset", ["-pc", "0", String(child.pid)], { stdio: "ignore" });
  return new Promise((resolve) => child.once("message", (m) => resolve(m.qps)));
}

const dbName = `ws_bench_${randomBytes(4).toString("hex")}`;
const dbUrl = Object.assign(new URL(PG), { pathname: `/${dbName}` }).toString();
execFileSync("psql", [PG, "-qc", `create database ${dbName}`]);
try {
  const bare = await startPinned(SERVER, ["bare"]);
  const minimal = await startPinned(SERVER, ["minimal"]);
  const full = await startPinned(SERVER, ["full"]);
  const auth = await startPinned(SERVER, ["auth"], { BENCH_DATABASE_URL: dbUrl });
  const userPath = `http://127.0.0.1:${auth.port}/api/bench/users/${auth.info.userId}`;
  const r = compare([
    { name: "koaNoRouter", url: `http://127.0.0.1:${minimal.port}/livez`, pid: minimal.child.pid },
    { name: "bareKoa", url: `http://127.0.0.1:${bare.port}/livez`, pid: bare.child.pid },
    { name: "worksynapse", url: `http://127.0.0.1:${full.port}/livez`, pid: full.child.pid },
    { name: "authSession", url: userPath, pid: auth.child.pid, headers: { cookie: auth.info.cookie } },
    { name: "authApiKey", url: userPath, pid: auth.child.pid, headers: { "x-api-key": auth.info.apiKey } },
  ]);
  const raw = [];
  for (let i = 0; i < settings.ROUNDS; i++) raw.push(await rawLoop(dbUrl, auth.info.userId));
  const rawQps = median(raw);
  await Promise.all([bare, minimal, full, auth].map(stopChild));
  void cpuSeconds;

  const ratio = (a, b) => Number((a / b).toFixed(3));
  const report = {
    ...settings,
    results: { ...r, rawPoolQuery: { qps: rawQps } },
    livez: {
      ratioToKoa: ratio(r.worksynapse.rps, r.bareKoa.rps),
      cpuRatio: ratio(r.worksynapse.perCpuSecond, r.bareKoa.perCpuSecond),
      ratioToKoaWithoutRouter: ratio(r.worksynapse.rps, r.koaNoRouter.rps),
      goal: 0.8,
    },
    authenticated: {
      sessionToKoa: ratio(r.authSession.rps, r.bareKoa.rps),
      apiKeyToKoa: ratio(r.authApiKey.rps, r.bareKoa.rps),
      sessionToRawQuery: ratio(r.authSession.rps, rawQps),
      apiKeyToRawQuery: ratio(r.authApiKey.rps, rawQps),
    },
  };
  mkdirSync("test-results", { recursive: true });
  writeFileSync("test-results/bench-http.json", JSON.stringify(report, null, 2));
  for (const [name, x] of Object.entries(r)) {
    console.log(
      `${name.padEnd(12)} ${x.rps.toFixed(0)} req/s, ${x.perCpuSecond.toFixed(0)} req per server CPU-s, p50 ${x.p50} ms, p99 ${x.p99} ms`,
    );
  }
  console.log(`rawPoolQuery ${rawQps.toFixed(0)} queries/s (pg pool of 10, 32 loops)`);
  console.log(
    `/livez ratio to Koa + one route (goal >= 0.8): req/s ${report.livez.ratioToKoa}, per CPU-s ${report.livez.cpuRatio}`,
  );
  console.log(
    `authenticated, session: ${report.authenticated.sessionToKoa} of bare Koa, ${report.authenticated.sessionToRawQuery} of the raw query loop`,
  );
  console.log(
    `authenticated, API key: ${report.authenticated.apiKeyToKoa} of bare Koa, ${report.authenticated.apiKeyToRawQuery} of the raw query loop`,
  );
} finally {
  execFileSync("psql", [PG, "-qc", `drop database if exists ${dbName} with (force)`]);
}
