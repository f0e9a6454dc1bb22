// `npm start`: builds what is missing or stale, then runs core with every role on http://localhost:8080.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";

const root = new URL("..", import.meta.url).pathname;
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const run = (args, cwd = root) => execFileSync(npm, args, { cwd, stdio: "inherit" });

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

// TypeScript builds are incremental: cheap when nothing changed.
run(["run", "build", "-w", "plugins/sdk", "-w", "core", "-w", "installer"]);
const uiIndex = path.join(root, "ui", "build", "index.html");
const uiSources = Math.max(newest(path.join(root, "ui", "src")), newest(path.join(root, "ui", "static")));
if (!existsSync(uiIndex) || statSync(uiIndex).mtimeMs < uiSources) run(["run", "build", "-w", "ui"]);

const child = spawn(process.execPath, [path.join(root, "core/dist/src/main.js"), ...process.argv.slice(2)], {
  stdio: "inherit",
  // As `worksynapse start` and the image: a libuv pool thread per inference context (docs/ai.md).
  env: { UV_THREADPOOL_SIZE: "16", ...process.env },
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
