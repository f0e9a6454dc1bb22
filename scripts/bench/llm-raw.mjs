// Child of bench-llm: raw node-llama-cpp on the same model and settings as the server, no HTTP.
// argv: model threads maxTokens runs prompt [clients] [contexts]. Reports per-run { tokens, ms, firstMs } over
// IPC; with clients > 1, each run is that many sessions at once on their own sequences (tokens summed). The 4
// sequences are spread over `contexts` contexts (default 1) as the server spreads them, a client each on the
// least busy context.
import { getLlama, LlamaChatSession } from "node-llama-cpp";

const [, , modelPath, threads, maxTokens, runs, prompt, clientsArg, contextsArg] = process.argv;
const clients = Number(clientsArg ?? 1);
const nContexts = Number(contextsArg ?? 1);
const llama = await getLlama({ build: "never", gpu: false, logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const contexts = [];
for (let i = 0; i < nContexts; i++) {
  const sequences = Math.floor(4 / nContexts) + (i < 4 % nContexts ? 1 : 0);
  contexts.push(await model.createContext({ contextSize: 2048, sequences, threads: Number(threads) }));
}
const seqs = Array.from({ length: clients }, (_, i) => contexts[i % nContexts].getSequence());

async function once(seq) {
  const session = new LlamaChatSession({ contextSequence: seq, autoDisposeSequence: false });
  // The same history the server sets for a one-message request (no default system prompt).
  session.setChatHistory([]);
  let tokens = 0;
  let first = 0;
  const t0 = performance.now();
  await session.prompt(prompt, {
    maxTokens: Number(maxTokens),
    onTextChunk: () => (first ||= performance.now()),
    onToken: (t) => (tokens += t.length),
  });
  session.dispose({ disposeSequence: false });
  await seq.clearHistory();
  return { tokens, firstMs: first - t0 };
}

const WARMUP = 3;
const results = [];
for (let i = 0; i < Number(runs) + WARMUP; i++) {
  const t0 = performance.now();
  const all = await Promise.all(seqs.map(once));
  const ms = performance.now() - t0;
  // Like the long-running server, measured only once warm.
  if (i >= WARMUP)
    results.push({ tokens: all.reduce((n, r) => n + r.tokens, 0), ms, firstMs: all[0].firstMs });
}
process.send(results);
await llama.dispose();
process.exit(0);
