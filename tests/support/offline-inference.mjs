// Run inside an empty network namespace (unshare -n) by the no-network test, with offline-hooks.mjs preloaded
// into every thread: loads a model through the AI runtime (inference runs on its own thread), generates and
// embeds, and reports every outbound connection or DNS lookup attempted, and the threads the hooks watched.
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const { AiRuntime, loadConfig, silentLogger } = await import("../../core/dist/src/index.js");
const modelPath = process.argv[2];
const config = loadConfig({
  env: { WORKSYNAPSE_DATA_DIR: mkdtempSync(path.join(tmpdir(), "ws-offline-")), WORKSYNAPSE_AI_THREADS: "1" },
});
const runtime = new AiRuntime(config, silentLogger());
const llama = await runtime.llama();
const { inspectModelFile } = await import("../../core/dist/src/index.js");
const meta = await inspectModelFile(llama, modelPath);
// The runtime finds models by sha256 in the data directory; point it straight at the file for this check.
const row = {
  id: "offline",
  name: "offline",
  sha256: "x",
  role: "chat",
  metadata: meta,
  createdAt: new Date().toISOString(),
};
const { modelFile } = await import("../../core/dist/src/modules/ai/models.service.js");
const { symlinkSync, mkdirSync } = await import("node:fs");
mkdirSync(path.dirname(modelFile(config, "x")), { recursive: true });
symlinkSync(modelPath, modelFile(config, "x"));
const answer = await runtime.generate({
  orgId: "o",
  model: row,
  messages: [{ role: "user", content: "Once upon a time" }],
  maxTokens: 12,
});
const vectors = await runtime.embed(row, ["hello"]);
await runtime.close();
const lines = readFileSync(process.env.OFFLINE_LOG, "utf8").split("\n").filter(Boolean);
const attempts = lines.filter((l) => l.startsWith("attempt ")).map((l) => l.slice(8));
const threads = new Set(lines.filter((l) => l.startsWith("thread ")));
process.stdout.write(
  JSON.stringify({
    attempts,
    threads: threads.size,
    tokens: answer.completionTokens,
    dims: vectors[0].length,
  }) + "\n",
);
