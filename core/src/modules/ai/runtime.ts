import { cpus } from "node:os";
import { Worker } from "node:worker_threads";
import { getLlama, type ChatHistoryItem, type Llama } from "node-llama-cpp";
import type { Config } from "../../config/schema.js";
import type { Logger } from "../../platform/log.js";
import { AppError } from "../../platform/http/errors.js";
import { modelFile, type ModelRow } from "./models.service.js";
import type { LoadReply, WorkerReply, WorkerRequest } from "./inference.protocol.js";

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

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

/** One context sequence of a loaded model (context `ctx`, sequence `seq` in it), held in the inference thread. */
interface Slot {
  ctx: number;
  seq: number;
}

interface Waiter {
  orgId: string;
  resolve: (slot: Slot) => void;
  reject: (err: unknown) => void;
}

/**
 * A loaded model as the main thread sees it: which of its sequences are free, how busy each context is, and the
 * organizations waiting. Each context decodes on its own thread and batches its own sequences; a request gets a
 * sequence of the least busy context, so concurrent requests compute in parallel before they share a batch.
 */
class LoadedModel {
  readonly free: Slot[] = [];
  /** Sequences in use, per context. */
  readonly inUse: number[];
  private readonly waiting = new Map<string, Waiter[]>();
  private turn: string[] = [];
  lastUsed = Date.now();
  busy = 0;

  constructor(
    readonly row: ModelRow,
    /** Bytes of the weights plus every context's state (KV cache). */
    readonly memoryBytes: number,
    sequences: number[],
    private readonly clear: (slot: Slot) => Promise<unknown>,
  ) {
    this.inUse = sequences.map(() => 0);
    sequences.forEach((n, ctx) => {
      for (let seq = 0; seq < n; seq++) this.free.push({ ctx, seq });
    });
  }

  /**
   * A free sequence of the context with the fewest sequences in use, taken out of the pool; among those, the
   * one given back last (its context's buffers are still in the CPU caches).
   */
  private take(): Slot | undefined {
    let best = -1;
    for (let i = this.free.length - 1; i >= 0; i--) {
      if (best < 0 || this.inUse[this.free[i]!.ctx]! < this.inUse[this.free[best]!.ctx]!) best = i;
    }
    if (best < 0) return undefined;
    const [slot] = this.free.splice(best, 1) as [Slot];
    this.inUse[slot.ctx]! += 1;
    return slot;
  }

  get queued(): number {
    let n = 0;
    for (const q of this.waiting.values()) n += q.length;
    return n;
  }

  /** A free sequence, or a place in the organization's line; lines are served in turn (round robin). */
  acquire(orgId: string, maxQueue: number, signal?: AbortSignal): Promise<Slot> {
    this.lastUsed = Date.now();
    const slot = this.take();
    if (slot) {
      this.busy += 1;
      return Promise.resolve(slot);
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

  /** Gives a sequence back (its chat closed, history cleared) to the next organization in turn, or to the pool. */
  async release(slot: Slot): Promise<void> {
    await this.clear(slot);
    this.lastUsed = Date.now();
    const orgId = this.turn.shift();
    if (orgId === undefined) {
      this.busy -= 1;
      this.inUse[slot.ctx]! -= 1;
      this.free.push(slot);
      return;
    }
    const line = this.waiting.get(orgId) as Waiter[];
    const next = line.shift() as Waiter;
    if (line.length > 0) this.turn.push(orgId);
    else this.waiting.delete(orgId);
    next.resolve(slot);
  }

  /** Turns away everyone waiting (the model is being unloaded). */
  rejectWaiting(): void {
    for (const q of this.waiting.values())
      for (const w of q) w.reject(AppError.unavailable("The model was unloaded.", 1));
    this.waiting.clear();
    this.turn = [];
  }
}

/** What the rest of core uses of inference: this process's (AiRuntime) or inference nodes' over the bus. */
export interface Inference {
  /** CPU threads per inference. */
  readonly threads: number;
  /** A llama.cpp binding in this process for reading model files on import (never for inference). */
  llama(): Promise<Llama>;
  status(): Promise<ModelStatus[]>;
  openChat(req: OpenChatRequest): Promise<ChatHandle>;
  generate(req: GenerateRequest): Promise<GenerateResult>;
  embed(model: ModelRow, texts: string[]): Promise<number[][]>;
  countTokens(model: ModelRow, text: string): Promise<number>;
  close(): Promise<void>;
}

/** A loaded model's queue state (the admin page). */
export interface ModelStatus {
  id: string;
  busy: number;
  queued: number;
  free: number;
  /** Sequences in use in each context. */
  contexts: number[];
  memoryBytes: number;
}

/** One answer on a chat opened for it: the last message must be the user's; the rest is the history. */
export async function generateOn(
  rt: Pick<Inference, "openChat">,
  req: GenerateRequest,
): Promise<GenerateResult> {
  const system = req.messages
    .filter((m) => m.role === "system")
    .map((m) => m.content)
    .join("\n\n");
  const turns = req.messages.filter((m) => m.role !== "system");
  const last = turns[turns.length - 1];
  if (!last || last.role !== "user") throw AppError.badRequest("The last message must be from the user.");
  const chat = await rt.openChat({
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

/** The llama.cpp binding for reading model files (prebuilt binaries only, nothing downloaded). */
export function readerLlama(config: Config): Promise<Llama> {
  return getLlama({
    build: "never",
    gpu: config.ai.gpu === "off" ? false : "auto",
    logLevel: "error" as never,
    progressLogs: false,
  });
}

/** The default thread count: one on small machines (spin-waiting threads slow a busy core), half the cores above that. */
export const defaultThreads = () => (cpus().length <= 2 ? 1 : Math.floor(cpus().length / 2));

/**
 * The compiled inference thread. Core runs from core/dist; the test suite runs core's TypeScript from
 * core/src, and the thread then runs the build of the same file (the suite builds first).
 */
function workerFile(): URL {
  const url = new URL("./inference.worker.js", import.meta.url);
  if (!import.meta.url.endsWith(".ts")) return url;
  const at = url.pathname.lastIndexOf("/src/modules/ai/");
  return new URL(`file://${url.pathname.slice(0, at)}/dist${url.pathname.slice(at)}`);
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  onToken?: (text: string) => void;
}

/**
 * The inference service: llama.cpp through node-llama-cpp, never downloading anything.
 *
 * Inference runs on a worker thread of its own (inference.worker.ts): node-llama-cpp does about a quarter of a
 * millisecond of JavaScript per token, which on the main thread would hold up every HTTP request and socket
 * while models generate; and the main thread loads Apache Arrow (LanceDB), which switches off V8's fast path of
 * Array.prototype.concat for the whole isolate (it sets Symbol.isConcatSpreadable), a path node-llama-cpp takes
 * for every token. The queue, fairness between organizations, timeouts and cancellation stay here.
 */
export class AiRuntime implements Inference {
  private llamaPromise?: Promise<Llama>;
  private readonly loaded = new Map<string, Promise<LoadedModel>>();
  private readonly timer: NodeJS.Timeout;
  readonly threads: number;
  private worker?: Worker;
  private gpu?: Promise<string | false>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    this.threads = config.ai.threads ?? defaultThreads();
    this.timer = setInterval(() => void this.unloadIdle(), 60_000);
    this.timer.unref();
  }

  /**
   * A llama.cpp binding on the calling thread (prebuilt binaries only), for reading model files when they are
   * imported. Inference never uses it: it runs on the inference thread.
   */
  llama(): Promise<Llama> {
    this.llamaPromise ??= readerLlama(this.config);
    return this.llamaPromise;
  }

  /** Sends a request to the inference thread (started on first use); `onToken` hears a prompt's chunks. */
  private call<T>(
    req: DistributiveOmit<WorkerRequest, "id">,
    onToken?: (text: string) => void,
    id = this.nextId++,
  ): Promise<T> {
    const worker = (this.worker ??= this.startWorker());
    if (this.pending.size === 0) worker.ref();
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onToken });
      worker.postMessage({ ...req, id });
    });
  }

  /** Sends without waiting for the answer (cancelling a prompt). */
  private tell(req: DistributiveOmit<WorkerRequest, "id">): void {
    this.worker?.postMessage({ ...req, id: this.nextId++ });
  }

  private startWorker(): Worker {
    const worker = new Worker(workerFile(), {
      workerData: { gpu: this.config.ai.gpu === "off" ? false : "auto" },
      // The thread of a process that has nothing else to do does not keep it alive (see call()).
    });
    worker.unref();
    worker.on("message", (m: WorkerReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      if ("token" in m) return p.onToken?.(m.token);
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if ("error" in m) {
        const { message, status, code } = m.error;
        p.reject(status && code ? new AppError(status, code, message) : new Error(message));
      } else p.resolve(m.value);
    });
    const lost = (err: unknown) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      this.gpu = undefined;
      for (const m of this.loaded.values())
        void m.then(
          (l) => l.rejectWaiting(),
          () => undefined,
        );
      this.loaded.clear();
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on("error", (err) => {
      this.log.error({ err }, "the inference thread failed");
      lost(err);
    });
    worker.on("exit", (code) => lost(new Error(`The inference thread stopped (${code}).`)));
    return worker;
  }

  private async load(row: ModelRow): Promise<LoadedModel> {
    let p = this.loaded.get(row.id);
    if (!p) {
      p = (async () => {
        this.gpu ??= this.call<{ gpu: string | false }>({ op: "init" }).then((r) => r.gpu);
        const gpu = await this.gpu;
        const t0 = Date.now();
        const { parallel } = this.config.ai;
        const n = this.contextCount(gpu !== false);
        // The sequences spread evenly: the first contexts take one more when they do not divide.
        const sequences = Array.from(
          { length: n },
          (_, i) => Math.floor(parallel / n) + (i < parallel % n ? 1 : 0),
        );
        const r = await this.call<LoadReply>({
          op: "load",
          modelId: row.id,
          file: modelFile(this.config, row.sha256),
          contextSize: this.config.ai.contextSize,
          sequences,
          threads: this.threads,
        });
        this.log.info(
          { model: row.name, ms: Date.now() - t0, gpu, threads: this.threads, contexts: n },
          "model loaded",
        );
        const memory = r.size + r.stateSizes.reduce((a, b) => a + b, 0);
        return new LoadedModel(row, memory, sequences, (slot) =>
          this.call({ op: "close", modelId: row.id, ...slot }),
        );
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
  async status(): Promise<ModelStatus[]> {
    const out = [];
    for (const [id, p] of this.loaded) {
      const m = await p.catch(() => undefined);
      if (m)
        out.push({
          id,
          busy: m.busy,
          queued: m.queued,
          free: m.free.length,
          contexts: [...m.inUse],
          memoryBytes: m.memoryBytes,
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
    const slot = await loaded.acquire(
      req.orgId,
      this.config.ai.maxQueue,
      req.signal ? AbortSignal.any([req.signal, wait]) : wait,
    );
    const history: ChatHistoryItem[] = [];
    if (req.system) history.push({ type: "system", text: req.system });
    for (const m of req.history) {
      history.push(
        m.role === "user" ? { type: "user", text: m.content } : { type: "model", response: [m.content] },
      );
    }
    const where = { modelId: req.model.id, ...slot };
    // Not waited for: the inference thread takes its messages in order, so a prompt sent now finds the chat
    // open (one thread round trip less before the first token); a failure to open fails the prompt with it.
    const opening = this.call<null>({ op: "open", history, ...where });
    opening.catch(() => undefined);
    let closed = false;
    return {
      prompt: async (text, opts = {}) => {
        const timeout = AbortSignal.timeout(this.config.ai.requestTimeoutMs);
        const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
        const id = this.nextId++;
        const cancel = () => this.tell({ op: "abort", target: id });
        signal.addEventListener("abort", cancel, { once: true });
        try {
          const running = this.call<GenerateResult>(
            {
              op: "prompt",
              text,
              maxTokens: opts.maxTokens ?? this.config.ai.maxTokens,
              temperature: opts.temperature,
              jsonSchema: opts.jsonSchema,
              validate: opts.validate,
              stream: Boolean(opts.onToken),
              ...where,
            },
            opts.onToken,
            id,
          );
          // Already cancelled (the client left while the sequence was being set up): stop at once.
          if (signal.aborted) cancel();
          const [, result] = await Promise.all([opening, running]);
          if (signal.aborted && timeout.aborted && !opts.signal?.aborted) {
            throw new AppError(
              504,
              "ai_timeout",
              `The answer took longer than ${this.config.ai.requestTimeoutMs} ms.`,
            );
          }
          return result;
        } finally {
          signal.removeEventListener("abort", cancel);
        }
      },
      close: async () => {
        if (closed) return;
        closed = true;
        await loaded.release(slot);
      },
    };
  }

  /** Generates a chat answer, streaming text chunks, with cancellation and the configured timeout. */
  generate(req: GenerateRequest): Promise<GenerateResult> {
    return generateOn(this, req);
  }

  /** Embeds texts with a model; vectors have the model's embedding length. */
  async embed(model: ModelRow, texts: string[]): Promise<number[][]> {
    const m = await this.load(model);
    m.lastUsed = Date.now();
    // One request at a time on a shared embedding context (the inference thread queues them).
    return this.call({
      op: "embed",
      modelId: model.id,
      texts,
      contextSize: Math.min(512, model.metadata.contextLength || 512),
      threads: this.threads,
    });
  }

  /** Counts the tokens of a text with a model's tokenizer. */
  async countTokens(model: ModelRow, text: string): Promise<number> {
    await this.load(model);
    return this.call({ op: "count", modelId: model.id, text });
  }

  private async unloadIdle(): Promise<void> {
    const limit = this.config.ai.idleUnloadMinutes * 60_000;
    for (const [id, p] of this.loaded) {
      const m = await p.catch(() => undefined);
      if (m && m.busy === 0 && m.queued === 0 && Date.now() - m.lastUsed > limit) {
        this.loaded.delete(id);
        m.rejectWaiting();
        await this.call({ op: "unload", modelId: id });
        this.log.info({ model: m.row.name }, "unloaded an idle model");
      }
    }
  }

  /** Unloads everything (shutdown). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const p of this.loaded.values()) (await p.catch(() => undefined))?.rejectWaiting();
    this.loaded.clear();
    const worker = this.worker;
    if (worker) {
      await this.call({ op: "dispose" }).catch(() => undefined);
      this.worker = undefined;
      await worker.terminate();
    }
    if (this.llamaPromise) await (await this.llamaPromise).dispose();
  }
}
