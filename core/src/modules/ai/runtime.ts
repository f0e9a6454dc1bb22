import { cpus } from "node:os";
import {
  getLlama,
  LlamaChatSession,
  type ChatHistoryItem,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaEmbeddingContext,
  type LlamaModel,
} from "node-llama-cpp";
import type { Config } from "../../config/schema.js";
import type { Logger } from "../../platform/log.js";
import { AppError } from "../../platform/http/errors.js";
import { modelFile, type ModelRow } from "./models.service.js";

/** A chat message. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** One generation request. */
export interface GenerateRequest extends PromptOptions {
  orgId: string;
  model: ModelRow;
  messages: ChatMessage[];
}

/** How one prompt of a chat is generated. */
export interface PromptOptions {
  maxTokens?: number;
  temperature?: number;
  /** A JSON schema the answer must follow (enforced by a grammar). */
  jsonSchema?: object;
  signal?: AbortSignal;
  onToken?: (text: string) => void;
  /**
   * false: parse the JSON without re-checking it against the schema (the caller validates; the grammar's
   * string lengths count bytes where a model's invalid UTF-8 decodes to longer text).
   */
  validate?: boolean;
}

/** A chat to open on a model: its system text and earlier turns (user and assistant, alternating). */
export interface OpenChatRequest {
  orgId: string;
  model: ModelRow;
  system?: string;
  history: ChatMessage[];
  /** Cancels the wait for a free sequence. */
  signal?: AbortSignal;
}

/** An open chat holding one context sequence; `close` gives it back. */
export interface ChatHandle {
  contextSize: number;
  prompt(text: string, opts?: PromptOptions): Promise<GenerateResult>;
  close(): Promise<void>;
}

/** What a generation produced. */
export interface GenerateResult {
  text: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: "stop" | "length" | "cancelled";
  /** Parsed JSON when a schema was given. */
  json?: unknown;
}

interface Waiter {
  orgId: string;
  resolve: (seq: LlamaContextSequence) => void;
  reject: (err: unknown) => void;
}

/**
 * A loaded model with its contexts, their sequences and the organizations waiting for them. Each context
 * decodes on its own thread and batches its own sequences; a request gets a sequence of the least busy
 * context, so concurrent requests compute in parallel before they share a batch.
 */
class LoadedModel {
  readonly free: LlamaContextSequence[] = [];
  readonly inUse = new Map<LlamaContext, number>();
  private readonly waiting = new Map<string, Waiter[]>();
  private turn: string[] = [];
  private embedding?: Promise<LlamaEmbeddingContext>;
  private embeddingQueue: Promise<unknown> = Promise.resolve();
  lastUsed = Date.now();
  busy = 0;

  constructor(
    readonly row: ModelRow,
    readonly model: LlamaModel,
    readonly contexts: LlamaContext[],
    private readonly threads: number,
  ) {
    for (const context of contexts) {
      this.inUse.set(context, 0);
      for (let i = 0; i < context.totalSequences; i++) this.free.push(context.getSequence());
    }
  }

  /**
   * A free sequence of the context with the fewest sequences in use, taken out of the pool; among those, the
   * one given back last (its context's buffers are still in the CPU caches).
   */
  private take(): LlamaContextSequence | undefined {
    let best = -1;
    for (let i = this.free.length - 1; i >= 0; i--) {
      const n = this.inUse.get(this.free[i]!.context)!;
      if (best < 0 || n < this.inUse.get(this.free[best]!.context)!) best = i;
    }
    if (best < 0) return undefined;
    const [seq] = this.free.splice(best, 1) as [LlamaContextSequence];
    this.inUse.set(seq.context, this.inUse.get(seq.context)! + 1);
    return seq;
  }

  get queued(): number {
    let n = 0;
    for (const q of this.waiting.values()) n += q.length;
    return n;
  }

  /** A free sequence, or a place in the organization's line; lines are served in turn (round robin). */
  acquire(orgId: string, maxQueue: number, signal?: AbortSignal): Promise<LlamaContextSequence> {
    this.lastUsed = Date.now();
    const seq = this.take();
    if (seq) {
      this.busy += 1;
      return Promise.resolve(seq);
    }
    if (this.queued >= maxQueue) {
      return Promise.reject(AppError.unavailable("The AI is busy. Try again in a few seconds.", 2));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { orgId, resolve, reject };
      const line = this.waiting.get(orgId) ?? [];
      if (line.length === 0) this.turn.push(orgId);
      line.push(waiter);
      this.waiting.set(orgId, line);
      signal?.addEventListener(
        "abort",
        () => {
          const l = this.waiting.get(orgId);
          const i = l?.indexOf(waiter) ?? -1;
          if (l && i >= 0) {
            l.splice(i, 1);
            if (l.length === 0) {
              this.waiting.delete(orgId);
              this.turn = this.turn.filter((o) => o !== orgId);
            }
            reject(new DOMException("cancelled", "AbortError"));
          }
        },
        { once: true },
      );
    });
  }

  /** Gives a sequence back (cleared) to the next organization in turn, or to the pool. */
  async release(seq: LlamaContextSequence): Promise<void> {
    await seq.clearHistory();
    this.lastUsed = Date.now();
    const orgId = this.turn.shift();
    if (orgId === undefined) {
      this.busy -= 1;
      this.inUse.set(seq.context, this.inUse.get(seq.context)! - 1);
      this.free.push(seq);
      return;
    }
    const line = this.waiting.get(orgId) as Waiter[];
    const next = line.shift() as Waiter;
    if (line.length > 0) this.turn.push(orgId);
    else this.waiting.delete(orgId);
    next.resolve(seq);
  }

  /** Embeds texts one request at a time on a shared embedding context. */
  embed(texts: string[]): Promise<number[][]> {
    this.lastUsed = Date.now();
    this.embedding ??= this.model.createEmbeddingContext({
      contextSize: Math.min(512, this.row.metadata.contextLength || 512),
      threads: this.threads,
    });
    const run = this.embeddingQueue.then(async () => {
      const ctx = await (this.embedding as Promise<LlamaEmbeddingContext>);
      const out: number[][] = [];
      for (const t of texts) out.push([...(await ctx.getEmbeddingFor(t)).vector]);
      return out;
    });
    this.embeddingQueue = run.catch(() => undefined);
    return run;
  }

  async dispose(): Promise<void> {
    for (const q of this.waiting.values())
      for (const w of q) w.reject(AppError.unavailable("The model was unloaded.", 1));
    await (await this.embedding)?.dispose();
    for (const context of this.contexts) await context.dispose();
    await this.model.dispose();
  }
}

/** The default thread count: one on small machines (spin-waiting threads slow a busy core), half the cores above that. */
export const defaultThreads = () => (cpus().length <= 2 ? 1 : Math.floor(cpus().length / 2));

/** The inference service: llama.cpp through node-llama-cpp, never downloading anything. */
export class AiRuntime {
  private llamaPromise?: Promise<Llama>;
  private readonly loaded = new Map<string, Promise<LoadedModel>>();
  private readonly timer: NodeJS.Timeout;
  readonly threads: number;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    this.threads = config.ai.threads ?? defaultThreads();
    this.timer = setInterval(() => void this.unloadIdle(), 60_000);
    this.timer.unref();
  }

  /** The llama.cpp binding (prebuilt binaries only; GPU when found unless configured off). */
  llama(): Promise<Llama> {
    this.llamaPromise ??= getLlama({
      build: "never",
      gpu: this.config.ai.gpu === "off" ? false : "auto",
      logLevel: "error" as never,
      progressLogs: false,
    });
    return this.llamaPromise;
  }

  private async load(row: ModelRow): Promise<LoadedModel> {
    let p = this.loaded.get(row.id);
    if (!p) {
      p = (async () => {
        const llama = await this.llama();
        const t0 = Date.now();
        const model = await llama.loadModel({ modelPath: modelFile(this.config, row.sha256) });
        const contextSize = Math.min(this.config.ai.contextSize, model.trainContextSize);
        const { parallel } = this.config.ai;
        const n = this.contextCount(llama.gpu !== false);
        const contexts: LlamaContext[] = [];
        try {
          for (let i = 0; i < n; i++) {
            // The sequences spread evenly: the first contexts take one more when they do not divide.
            const sequences = Math.floor(parallel / n) + (i < parallel % n ? 1 : 0);
            contexts.push(await model.createContext({ contextSize, sequences, threads: this.threads }));
          }
        } catch (err) {
          for (const c of contexts) await c.dispose();
          await model.dispose();
          throw err;
        }
        this.log.info(
          { model: row.name, ms: Date.now() - t0, gpu: llama.gpu, threads: this.threads, contexts: n },
          "model loaded",
        );
        return new LoadedModel(row, model, contexts, this.threads);
      })();
      this.loaded.set(row.id, p);
      p.catch(() => this.loaded.delete(row.id));
    }
    return p;
  }

  /**
   * How many contexts a model's sequences are spread over. With a GPU one: its batches are nearly free. On
   * CPU a context decodes on a libuv pool thread, its sequences as one batch. Single-thread contexts do not
   * spin-wait, so each sequence gets its own and the OS spreads them over the cores, as long as two pool
   * threads stay free for files and crypto (the launchers set UV_THREADPOOL_SIZE=16; libuv's default is 4).
   * With more threads per context, as many contexts as fit the cores.
   */
  contextCount(gpu: boolean): number {
    const { parallel, contexts } = this.config.ai;
    const pool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
    const cpu = this.threads === 1 ? pool - 2 : Math.floor(cpus().length / this.threads);
    return Math.max(1, Math.min(parallel, contexts ?? (gpu ? 1 : cpu)));
  }

  /** Which models are loaded, with their queue state (for the admin page). */
  async status(): Promise<
    {
      id: string;
      busy: number;
      queued: number;
      free: number;
      /** Sequences in use in each context. */
      contexts: number[];
      memoryBytes: number;
    }[]
  > {
    const out = [];
    for (const [id, p] of this.loaded) {
      const m = await p.catch(() => undefined);
      // Weights plus the context's state (KV cache) of every sequence.
      if (m)
        out.push({
          id,
          busy: m.busy,
          queued: m.queued,
          free: m.free.length,
          contexts: m.contexts.map((c) => m.inUse.get(c)!),
          memoryBytes: m.model.size + m.contexts.reduce((n, c) => n + c.stateSize, 0),
        });
    }
    return out;
  }

  /**
   * Opens a chat on one context sequence of the model, held until `close`: successive prompts continue the
   * same history and reuse its evaluated state (the agent loop prompts once per step).
   */
  async openChat(req: OpenChatRequest): Promise<ChatHandle> {
    const loaded = await this.load(req.model);
    const wait = AbortSignal.timeout(this.config.ai.requestTimeoutMs);
    const seq = await loaded.acquire(
      req.orgId,
      this.config.ai.maxQueue,
      req.signal ? AbortSignal.any([req.signal, wait]) : wait,
    );
    const session = new LlamaChatSession({ contextSequence: seq, autoDisposeSequence: false });
    const history: ChatHistoryItem[] = [];
    if (req.system) history.push({ type: "system", text: req.system });
    for (const m of req.history) {
      history.push(
        m.role === "user" ? { type: "user", text: m.content } : { type: "model", response: [m.content] },
      );
    }
    session.setChatHistory(history);
    let closed = false;
    return {
      contextSize: seq.contextSize,
      prompt: async (text, opts = {}) => {
        const timeout = AbortSignal.timeout(this.config.ai.requestTimeoutMs);
        const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
        const before = seq.tokenMeter.getState();
        const grammar = opts.jsonSchema
          ? await (await this.llama()).createGrammarForJsonSchema(opts.jsonSchema as never)
          : undefined;
        const maxTokens = opts.maxTokens ?? this.config.ai.maxTokens;
        let completion = 0;
        const out = await session.prompt(text, {
          maxTokens,
          temperature: opts.temperature,
          grammar,
          signal,
          stopOnAbortSignal: true,
          onTextChunk: (chunk) => opts.onToken?.(chunk),
          onToken: (tokens) => {
            completion += tokens.length;
          },
        });
        const after = seq.tokenMeter.getState();
        const cancelled = signal.aborted;
        if (cancelled && timeout.aborted && !opts.signal?.aborted) {
          throw new AppError(
            504,
            "ai_timeout",
            `The answer took longer than ${this.config.ai.requestTimeoutMs} ms.`,
          );
        }
        const result: GenerateResult = {
          text: out,
          promptTokens: Math.max(0, after.usedInputTokens - before.usedInputTokens),
          completionTokens: completion,
          finishReason: cancelled ? "cancelled" : completion >= maxTokens ? "length" : "stop",
        };
        // A cut-off answer (length or cancelled) is incomplete JSON: only a finished one is parsed.
        if (grammar && result.finishReason === "stop")
          result.json = opts.validate === false ? JSON.parse(out) : grammar.parse(out);
        return result;
      },
      close: async () => {
        if (closed) return;
        closed = true;
        session.dispose({ disposeSequence: false });
        await loaded.release(seq);
      },
    };
  }

  /** Generates a chat answer, streaming text chunks, with cancellation and the configured timeout. */
  async generate(req: GenerateRequest): Promise<GenerateResult> {
    const system = req.messages
      .filter((m) => m.role === "system")
      .map((m) => m.content)
      .join("\n\n");
    const turns = req.messages.filter((m) => m.role !== "system");
    const last = turns[turns.length - 1];
    if (!last || last.role !== "user") throw AppError.badRequest("The last message must be from the user.");
    const chat = await this.openChat({
      orgId: req.orgId,
      model: req.model,
      system,
      history: turns.slice(0, -1),
      signal: req.signal,
    });
    try {
      return await chat.prompt(last.content, req);
    } finally {
      await chat.close();
    }
  }

  /** Embeds texts with a model; vectors have the model's embedding length. */
  async embed(model: ModelRow, texts: string[]): Promise<number[][]> {
    return (await this.load(model)).embed(texts);
  }

  /** Counts the tokens of a text with a model's tokenizer. */
  async countTokens(model: ModelRow, text: string): Promise<number> {
    return (await this.load(model)).model.tokenize(text).length;
  }

  private async unloadIdle(): Promise<void> {
    const limit = this.config.ai.idleUnloadMinutes * 60_000;
    for (const [id, p] of this.loaded) {
      const m = await p.catch(() => undefined);
      if (m && m.busy === 0 && m.queued === 0 && Date.now() - m.lastUsed > limit) {
        this.loaded.delete(id);
        await m.dispose();
        this.log.info({ model: m.row.name }, "unloaded an idle model");
      }
    }
  }

  /** Unloads everything (shutdown). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const p of this.loaded.values()) await (await p.catch(() => undefined))?.dispose();
    this.loaded.clear();
    if (this.llamaPromise) await (await this.llamaPromise).dispose();
  }
}
