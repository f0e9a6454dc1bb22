// npm run bench:http — requests/s of GET /livez through WorkSynapse's full middleware stack as a ratio
// of a bare Koa server with one route, measured in the same run (alternating rounds, medians).
import { mkdirSync, writeFileSync } from "node:fs";
import { compare, requireWrk, settings, startPinned, stopChild } from "./bench/load.mjs";

const SERVER = new URL("./bench/http-servers.mjs", import.meta.url).pathname;
requireWrk();
const bare = await startPinned(SERVER, ["bare"]);
const minimal = await startPinned(SERVER, ["minimal"]);
const full = await startPinned(SERVER, ["full"]);
const r = compare([
  { name: "koaNoRouter", url: `http://127.0.0.1:${minimal.port}/livez`, pid: minimal.child.pid },
  { name: "bareKoa", url: `http://127.0.0.1:${bare.port}/livez`, pid: bare.child.pid },
  { name: "worksynapse", url: `http://127.0.0.1:${full.port}/livez`, pid: full.child.pid },
]);
await Promise.all([bare, minimal, full].map(stopChild));
const ratio = r.worksynapse.rps / r.bareKoa.rps;
const cpuRatio = r.worksynapse.perCpuSecond / r.bareKoa.perCpuSecond;
const floorRatio = r.worksynapse.rps / r.koaNoRouter.rps;
const report = {
  ...settings,
  results: r,
  ratio: Number(ratio.toFixed(3)),
  cpuRatio: Number(cpuRatio.toFixed(3)),
  ratioToKoaWithoutRouter: Number(floorRatio.toFixed(3)),
  goal: 0.8,
};
mkdirSync("test-results", { recursive: true });
writeFileSync("test-results/bench-http.json", JSON.stringify(report, null, 2));
for (const [name, x] of Object.entries(r)) {
  console.log(
    `${name.padEnd(12)} ${x.rps.toFixed(0)} req/s, ${x.perCpuSecond.toFixed(0)} req per server CPU-s, p50 ${x.p50} ms, p99 ${x.p99} ms`,
  );
}
console.log(
  `ratio to Koa + one route (goal >= 0.8): req/s ${ratio.toFixed(3)}, req per CPU-s ${cpuRatio.toFixed(3)}`,
);
console.log(`ratio to Koa without a router: req/s ${floorRatio.toFixed(3)}`);
