// The inference thread: llama.cpp through node-llama-cpp, in a worker thread of its own (see runtime.ts for
// why). It owns the binding, the loaded models, their contexts, sequences, chat sessions and embedding
// contexts, and answers the requests of the AiRuntime on the main thread. The queue, fairness and accounting
// stay there; this side only computes. Nothing here imports anything but node-llama-cpp and the
// dependency-free coalescer.
import { parentPort, workerData } from "node:worker_threads";
import {
  getLlama,
  LlamaChatSession,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaEmbeddingContext,
  type LlamaModel,
} from "node-llama-cpp";
import { coalescer } from "../../platform/coalesce.js";
import type { WorkerReply, WorkerRequest } from "./inference.protocol.js";

const port = parentPort!;
const { gpu } = workerData as { gpu: "auto" | false };

let llamaPromise: Promise<Llama> | undefined;
const llama = () =>
  (llamaPromise ??= getLlama({ build: "never", gpu, logLevel: "error" as never, progressLogs: false }));

interface Loaded {
  model: LlamaModel;
  contexts: LlamaContext[];
  sequences: LlamaContextSequence[][];
  sessions: Map<string, LlamaChatSession>;
  embedding?: Promise<LlamaEmbeddingContext>;
  embeddingQueue: Promise<unknown>;
}
const models = new Map<string, Loaded>();
/** Prompts under way, by request id, so that the main thread can cancel them. */
const running = new Map<number, AbortController>();

function loaded(modelId: string): Loaded {
  const m = models.get(modelId);
  if (!m) throw Object.assign(new Error("The model is not loaded."), { status: 503, code: "unavailable" });
  return m;
}

/**
 * How long text chunks are gathered after one was sent to the main thread: the event stream's own window (one
 * frame of a 60 Hz screen, platform/http/sse.ts), so that each message is written at once and wakes the main
 * thread once per write, not twice.
 */
const FLUSH_MS = 16;

const slotKey = (ctx: number, seq: number) => `${ctx}:${seq}`;

function session(m: Loaded, ctx: number, seq: number): LlamaChatSession {
  const s = m.sessions.get(slotKey(ctx, seq));
  if (!s) throw new Error("No chat is open on this sequence.");
  return s;
}

async function handle(req: WorkerRequest): Promise<unknown> {
  switch (req.op) {
    case "init": {
      const l = await llama();
      return { gpu: l.gpu };
    }
    case "load": {
      const l = await llama();
      const model = await l.loadModel({ modelPath: req.file });
      const contextSize = Math.min(req.contextSize, model.trainContextSize);
      const contexts: LlamaContext[] = [];
      try {
        for (const sequences of req.sequences)
          contexts.push(await model.createContext({ contextSize, sequences, threads: req.threads }));
      } catch (err) {
        for (const c of contexts) await c.dispose();
        await model.dispose();
        throw err;
      }
      models.set(req.modelId, {
        model,
        contexts,
        sequences: contexts.map((c) => Array.from({ length: c.totalSequences }, () => c.getSequence())),
        sessions: new Map(),
        embeddingQueue: Promise.resolve(),
      });
      return { size: model.size, stateSizes: contexts.map((c) => c.stateSize) };
    }
    case "open": {
      const m = loaded(req.modelId);
      const seq = m.sequences[req.ctx]![req.seq]!;
      const s = new LlamaChatSession({ contextSequence: seq, autoDisposeSequence: false });
      s.setChatHistory(req.history);
      m.sessions.set(slotKey(req.ctx, req.seq), s);
      return null;
    }
    case "prompt": {
      const m = loaded(req.modelId);
      const s = session(m, req.ctx, req.seq);
      const seq = m.sequences[req.ctx]![req.seq]!;
      const ac = new AbortController();
      running.set(req.id, ac);
      try {
        const before = seq.tokenMeter.getState();
        const grammar = req.jsonSchema
          ? await (await llama()).createGrammarForJsonSchema(req.jsonSchema as never)
          : undefined;
        let completion = 0;
        // Chunks go to the main thread together when they come faster than FLUSH_MS apart: a message per
        // token costs this thread about as much as node-llama-cpp's own work for a small model's token.
        const chunks = coalescer((token) => port.postMessage({ id: req.id, token }), FLUSH_MS);
        const text = await s.prompt(req.text, {
          maxTokens: req.maxTokens,
          temperature: req.temperature,
          grammar,
          signal: ac.signal,
          stopOnAbortSignal: true,
          onTextChunk: req.stream ? chunks.push : undefined,
          onToken: (tokens) => {
            completion += tokens.length;
          },
        });
        chunks.flush();
        const after = seq.tokenMeter.getState();
        const finishReason = ac.signal.aborted
          ? "cancelled"
          : completion >= req.maxTokens
            ? "length"
            : "stop";
        // A cut-off answer (length or cancelled) is incomplete JSON: only a finished one is parsed.
        const json =
          grammar && finishReason === "stop"
            ? req.validate === false
              ? JSON.parse(text)
              : grammar.parse(text)
            : undefined;
        return {
          text,
          promptTokens: Math.max(0, after.usedInputTokens - before.usedInputTokens),
          completionTokens: completion,
          finishReason,
          ...(json !== undefined && { json }),
        };
      } finally {
        running.delete(req.id);
      }
    }
    case "abort":
      running.get(req.target)?.abort();
      return null;
    case "close": {
      const m = loaded(req.modelId);
      m.sessions.get(slotKey(req.ctx, req.seq))?.dispose({ disposeSequence: false });
      m.sessions.delete(slotKey(req.ctx, req.seq));
      await m.sequences[req.ctx]![req.seq]!.clearHistory();
      return null;
    }
    case "embed": {
      const m = loaded(req.modelId);
      m.embedding ??= m.model.createEmbeddingContext({ contextSize: req.contextSize, threads: req.threads });
      const run = m.embeddingQueue.then(async () => {
        const ctx = await (m.embedding as Promise<LlamaEmbeddingContext>);
        const out: number[][] = [];
        // A text longer than the model's window (a 512-token embedding model, a 2,000-character passage) is
        // embedded window by window and the vectors averaged, weighted by their tokens (as the whole text's would
        // be, without normalising: the other vectors are not either): all of the text counts and no document fails
        // for it. A few tokens are left for the ones the model adds.
        const limit = Math.max(1, req.contextSize - 8);
        for (const t of req.texts) {
          const tokens = m.model.tokenize(t);
          if (tokens.length <= limit) {
            out.push([...(await ctx.getEmbeddingFor(t)).vector]);
            continue;
          }
          let sum: number[] = [];
          for (let i = 0; i < tokens.length; i += limit) {
            const window = tokens.slice(i, i + limit);
            const v = (await ctx.getEmbeddingFor(window)).vector;
            if (!sum.length) sum = new Array<number>(v.length).fill(0);
            for (let k = 0; k < v.length; k++) sum[k]! += v[k]! * window.length;
          }
          out.push(sum.map((x) => x / tokens.length));
        }
        return out;
      });
      m.embeddingQueue = run.catch(() => undefined);
      return run;
    }
    case "count":
      return loaded(req.modelId).model.tokenize(req.text).length;
    case "unload": {
      const m = models.get(req.modelId);
      models.delete(req.modelId);
      if (m) {
        await (await m.embedding?.catch(() => undefined))?.dispose();
        for (const c of m.contexts) await c.dispose();
        await m.model.dispose();
      }
      return null;
    }
    case "dispose":
      for (const id of [...models.keys()]) await handle({ op: "unload", id: 0, modelId: id });
      if (llamaPromise) await (await llamaPromise).dispose();
      llamaPromise = undefined;
      return null;
  }
}

port.on("message", (req: WorkerRequest) => {
  handle(req).then(
    (value) => port.postMessage({ id: req.id, value } satisfies WorkerReply),
    (err: unknown) => {
      const e = err as { message?: string; status?: number; code?: string; name?: string };
      port.postMessage({
        id: req.id,
        error: { message: String(e?.message ?? err), name: e?.name, status: e?.status, code: e?.code },
      } satisfies WorkerReply);
    },
  );
});
