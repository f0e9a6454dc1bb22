// Shared load driver for the HTTP benchmarks: wrk pinned to CPU 1, servers pinned to CPU 0, so the
// figure is the server's own cost (a JavaScript load generator on the same two cores measured itself).
import { execFileSync, fork } from "node:child_process";
import { readFileSync } from "node:fs";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);

/** Fails early with a fix when the load generator is missing. */
export function requireWrk() {
  try {
    execFileSync("wrk", ["--version"], { stdio: "ignore" });
  } catch (err) {
    // wrk --version exits non-zero even when present; only a missing binary matters.
    if (err.code === "ENOENT") {
      throw new Error("wrk is missing: apt-get install wrk (the benchmarks need it)", { cause: err });
    }
  }
}

/** Starts a server script in a child process pinned to CPU 0; resolves with its port. */
export function startPinned(script, args = [], env = {}) {
  const child = fork(script, args, {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    env: { ...process.env, ...env },
  });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)));
    child.once("message", (m) => {
      execFileSync("taskset", ["-pc", "0", String(child.pid)], { stdio: "ignore" });
      resolve({ child, port: m.port, info: m });
    });
  });
}

/** Asks a server child to stop and waits for it. */
export const stopChild = ({ child }) => new Promise((r) => (child.once("exit", r), child.send("stop")));

/** CPU seconds (user + system) a process has used so far, from /proc. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** One wrk run on CPU 1: requests/s, latency percentiles in ms, and (with a pid) requests per server CPU-second. */
export function wrk(url, headers = {}, pid, connections = 32, script) {
  const cpu0 = pid ? cpuSeconds(pid) : 0;
  const hdr = Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]);
  const out = execFileSync(
    "taskset",
    [
      "-c",
      "1",
      "wrk",
      "-t1",
      `-c${connections}`,
      `-d${SECONDS}s`,
      "--latency",
      ...(script ? ["-s", script] : []),
      ...hdr,
      url,
    ],
    { encoding: "utf8" },
  );
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const errors = /Socket errors: (.*)/.exec(out)?.[1];
  if (non2xx || errors || !rps) throw new Error(`${url}: ${non2xx} non-2xx, errors: ${errors}\n${out}`);
  const ms = (p) => {
    const m = new RegExp(`${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    return m ? Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2]] : NaN;
  };
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  const cpu = pid ? cpuSeconds(pid) - cpu0 : NaN;
  return { rps, p50: ms(50), p99: ms(99), perCpuSecond: requests / cpu };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Alternating rounds over named targets; the median requests/s and p50 of each. */
export function compare(targets) {
  const runs = Object.fromEntries(targets.map((t) => [t.name, []]));
  // `before` (optional, synchronous) runs ahead of each of a target's rounds: e.g. waits until the server has
  // finished the work the previous round left queued, so that no round pays for another's.
  const round = (t) => (t.before?.(), wrk(t.url, t.headers, t.pid, 32, t.script));
  for (const t of targets) round(t); // warm-up
  for (let i = 0; i < ROUNDS; i++) for (const t of targets) runs[t.name].push(round(t));
  const pick = (v, key) => median(v.map((r) => r[key]));
  return Object.fromEntries(
    Object.entries(runs).map(([k, v]) => [
      k,
      {
        rps: pick(v, "rps"),
        perCpuSecond: pick(v, "perCpuSecond"),
        p50: pick(v, "p50"),
        p99: pick(v, "p99"),
      },
    ]),
  );
}

export const settings = { ROUNDS, SECONDS };
