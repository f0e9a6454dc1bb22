// Child of bench-llm: raw node-llama-cpp on the same model and settings as the server, no HTTP.
// argv: model threads contexts maxTokens prompt. The 4 sequences are spread over `contexts` contexts as the
// server spreads them, a client each on the least busy context. It stays up between measurements so that they
// can alternate with the server's: each IPC message { clients, runs } runs `runs` rounds of `clients` sessions
// at once on their own sequences, and is answered with per-round { tokens (summed), ms, firstMs, lastMs } (first
// and last text of the first session).
import { getLlama, LlamaChatSession } from "node-llama-cpp";

const [, , modelPath, threads, contextsArg, maxTokens, prompt] = process.argv;
const nContexts = Number(contextsArg);
const llama = await getLlama({ build: "never", gpu: false, logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const contexts = [];
for (let i = 0; i < nContexts; i++) {
  const sequences = Math.floor(4 / nContexts) + (i < 4 % nContexts ? 1 : 0);
  contexts.push(await model.createContext({ contextSize: 2048, sequences, threads: Number(threads) }));
}
const seqs = Array.from({ length: 4 }, (_, i) => contexts[i % nContexts].getSequence());

async function once(seq) {
  const session = new LlamaChatSession({ contextSequence: seq, autoDisposeSequence: false });
  // The same history the server sets for a one-message request (no default system prompt).
  session.setChatHistory([]);
  let tokens = 0;
  let first = 0;
  let last = 0;
  const t0 = performance.now();
  await session.prompt(prompt, {
    maxTokens: Number(maxTokens),
    onTextChunk: () => {
      last = performance.now();
      first ||= last;
    },
    onToken: (t) => (tokens += t.length),
  });
  session.dispose({ disposeSequence: false });
  await seq.clearHistory();
  return { tokens, firstMs: first - t0, lastMs: last - t0 };
}

async function rounds(clients, runs) {
  const results = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const all = await Promise.all(seqs.slice(0, clients).map(once));
    const ms = performance.now() - t0;
    results.push({
      tokens: all.reduce((n, r) => n + r.tokens, 0),
      ms,
      firstMs: all[0].firstMs,
      lastMs: all[0].lastMs,
    });
  }
  return results;
}

// Warm, like the long-running server, before the first measurement.
await rounds(1, 3);
await rounds(4, 1);
process.on("message", async ({ clients, runs }) => process.send(await rounds(clients, runs)));
process.on("disconnect", async () => {
  await llama.dispose();
  process.exit(0);
});
process.send("ready");
