// Run inside an empty network namespace (unshare -n) by the no-network test: loads a model through
// the AI runtime, generates and embeds, and reports every outbound connection or DNS lookup attempted.
import net from "node:net";
import dns from "node:dns";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const attempts = [];
const origConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  attempts.push(`connect ${JSON.stringify(args[0])}`);
  return origConnect.apply(this, args);
};
for (const fn of ["lookup", "resolve", "resolve4", "resolve6"]) {
  const orig = dns[fn];
  dns[fn] = (...args) => {
    attempts.push(`dns.${fn} ${args[0]}`);
    return orig.apply(dns, args);
  };
}
const origFetch = globalThis.fetch;
globalThis.fetch = (...args) => {
  attempts.push(`fetch ${String(args[0])}`);
  return origFetch(...args);
};

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
process.stdout.write(
  JSON.stringify({ attempts, tokens: answer.completionTokens, dims: vectors[0].length }) + "\n",
);
