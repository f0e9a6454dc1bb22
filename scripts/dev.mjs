// `npm run dev`: core on :8080 (development logs, TypeScript rebuilt on change) and the Vite dev
// server on :5173 with hot reload, proxying the API to core. Ctrl-C stops both.
import { spawn, execFileSync } from "node:child_process";

const root = new URL("..", import.meta.url).pathname;
execFileSync("npx", ["tsc", "-b", "plugins/sdk", "core"], { cwd: root, stdio: "inherit" });
const env = {
  ...process.env,
  NODE_ENV: "development",
  UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? "16",
  WORKSYNAPSE_DATA_DIR: process.env.WORKSYNAPSE_DATA_DIR ?? "./data",
};
const children = [
  spawn("npx", ["tsc", "-b", "--watch", "--preserveWatchOutput", "core"], { cwd: root, stdio: "inherit" }),
  spawn("node", ["--watch-path=core/dist", "core/dist/src/main.js"], { cwd: root, stdio: "inherit", env }),
  spawn("npx", ["vite", "dev", "--port", "5173", "--strictPort"], {
    cwd: `${root}ui`,
    stdio: "inherit",
    env,
  }),
];
const stop = () => children.forEach((c) => c.kill("SIGTERM"));
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
for (const c of children) c.on("exit", stop);
