// Starts core for a benchmark as an admin would: `node core/dist/src/main.js` with the given environment.
import { fork } from "node:child_process";
import path from "node:path";

/** The libuv pool size the launchers (`worksynapse start`, the image) set; raw children in benches get it too. */
export const POOL_ENV = { UV_THREADPOOL_SIZE: "16" };

const MAIN = path.join(new URL("../..", import.meta.url).pathname, "core/dist/src/main.js");

/**
 * Forks core; the returned child process carries `url`, a promise of the address it serves. The log level is
 * info whatever `env` says: the "serving" line is where the address comes from. BENCH_CORE_NODE_ARGS adds node
 * flags to the core process only (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile it).
 */
export function forkCore(env, args = []) {
  const child = fork(MAIN, args, {
    execArgv: (process.env.BENCH_CORE_NODE_ARGS ?? "").split(" ").filter(Boolean),
    env: { ...POOL_ENV, ...env, WORKSYNAPSE_LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "inherit", "ipc"],
  });
  let buf = "";
  child.stdout.on("data", (d) => (buf += d));
  const line = (re) =>
    new Promise((resolve, reject) => {
      const look = () => {
        const m = re.exec(buf);
        if (m) resolve(m[1]);
        return m;
      };
      if (!look()) child.stdout.on("data", look);
      child.once("exit", (code) => reject(new Error(`core exited (${code}) before serving`)));
    });
  child.url = line(/"url":"(http:\/\/[^"]+)".*WorkSynapse is serving/);
  /** A process with the inference role: resolves when it serves over the bus. */
  child.inference = line(/"node":"([^"]+)".*serving inference over the bus/);
  child.url.catch(() => undefined);
  child.inference.catch(() => undefined);
  return child;
}
