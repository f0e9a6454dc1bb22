// Inference as its own role: processes started with `--roles inference` serve their AiRuntime over NATS
// request/reply, and web and worker processes with `ai.remote` use them through RemoteInference.
//
// A request goes to `<prefix>.inference.rpc` (queue group: one inference node takes it) or, for a chat opened
// on a node, to that node's own subject. The node answers on the request's reply subject with frames: `start`
// at once (the node's id), `token` chunks, `alive` every 2 s while it works, then `end` or `error`. The asking
// side fails a request whose node has been silent for 10 s (killed or cut off), and the node closes chats left
// idle by a caller that went away. Admission (sequences, the queue and its fairness between organizations)
// lives on the inference node, so it holds across every web and worker process that uses the node.
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { Llama } from "node-llama-cpp";
import type { Config } from "../../config/schema.js";
import type { Bus } from "../../platform/bus/bus.js";
import { AppError } from "../../platform/http/errors.js";
import type { Logger } from "../../platform/log.js";
import type { ModelRow } from "./models.service.js";
import {
  generateOn,
  readerLlama,
  type ChatHandle,
  type ChatMessage,
  type GenerateRequest,
  type GenerateResult,
  type Inference,
  type ModelStatus,
  type OpenChatRequest,
  type PromptOptions,
} from "./runtime.js";

const ALIVE_MS = 2000;
const SILENCE_MS = 10_000;

type Call =
  | { op: "open"; orgId: string; model: ModelRow; system?: string; history: ChatMessage[] }
  | { op: "embed"; model: ModelRow; texts: string[] }
  | { op: "count"; model: ModelRow; text: string }
  | { op: "status" };

type NodeCall =
  | {
      op: "prompt";
      chat: string;
      text: string;
      opts: Omit<PromptOptions, "signal" | "onToken"> & { stream: boolean };
    }
  | { op: "close"; chat: string }
  | { op: "cancel"; reply: string };

type Frame =
  | { t: "start"; node: string }
  | { t: "token"; v: string }
  | { t: "alive" }
  | { t: "end"; v: unknown }
  | {
      t: "error";
      error: {
        message: string;
        name?: string;
        status?: number;
        code?: string;
        details?: unknown;
        headers?: Record<string, string>;
      };
    };

const rpcSubject = (prefix: string) => `${prefix}.inference.rpc`;
const nodeSubject = (prefix: string, node: string) => `${prefix}.inference.node.${node}`;

/** Serves a process's AiRuntime to the others; returns the function that stops it (open chats are closed). */
export function serveInference(deps: { bus: Bus; runtime: Inference; config: Config; log: Logger }): {
  node: string;
  stop: () => Promise<void>;
} {
  const { bus, runtime, config, log } = deps;
  const node = `${hostname().replace(/[^A-Za-z0-9_-]/g, "_")}-${process.pid}-${randomUUID().slice(0, 8)}`;
  const chats = new Map<string, { handle: ChatHandle; idle: NodeJS.Timeout }>();
  const running = new Map<string, AbortController>();
  let stopping = false;
  // A caller that went away leaves its chat open: it is closed after the longest a generation may take.
  const idleMs = config.ai.requestTimeoutMs;

  const closeChat = async (id: string) => {
    const c = chats.get(id);
    if (!c) return;
    chats.delete(id);
    clearTimeout(c.idle);
    await c.handle.close();
  };
  const touch = (id: string) => {
    const c = chats.get(id);
    if (!c) return;
    clearTimeout(c.idle);
    c.idle = setTimeout(() => {
      log.warn({ chat: id }, "closed a chat its caller left");
      void closeChat(id).catch(() => undefined);
    }, idleMs);
    c.idle.unref();
  };

  /** Runs one request, answering with frames on its reply subject. */
  const answer = (
    replyTo: string | undefined,
    work: (signal: AbortSignal, token: (t: string) => void) => Promise<unknown>,
  ) => {
    if (!replyTo) return;
    const ac = new AbortController();
    running.set(replyTo, ac);
    const say = (f: Frame) => bus.answer(replyTo, f);
    say({ t: "start", node });
    const alive = setInterval(() => say({ t: "alive" }), ALIVE_MS);
    void work(ac.signal, (v) => say({ t: "token", v }))
      .then(
        (v) => say({ t: "end", v: v ?? null }),
        (err: unknown) => {
          const e = (
            stopping ? AppError.unavailable("The inference node is shutting down. Try again.", 1) : err
          ) as Partial<AppError>;
          if (!(err instanceof AppError) && e.name !== "AbortError")
            log.error({ err }, "inference request failed");
          say({
            t: "error",
            error: {
              message: e.message ?? String(err),
              name: e.name,
              status: e.status,
              code: e.code,
              details: e.details,
              headers: e.headers,
            },
          });
        },
      )
      .finally(() => {
        clearInterval(alive);
        running.delete(replyTo);
      });
  };

  const stopRpc = bus.serve(rpcSubject(bus.prefix), "inference", (payload, replyTo) => {
    const call = payload as Call;
    answer(replyTo, async (signal) => {
      switch (call.op) {
        case "open": {
          const handle = await runtime.openChat({ ...call, signal });
          const id = randomUUID();
          chats.set(id, { handle, idle: setTimeout(() => undefined, 0) });
          touch(id);
          return { chat: id, node };
        }
        case "embed":
          return runtime.embed(call.model, call.texts);
        case "count":
          return runtime.countTokens(call.model, call.text);
        case "status":
          return { models: await runtime.status(), threads: runtime.threads };
        default:
          throw AppError.badRequest("Unknown inference request.");
      }
    });
  });
  const stopNode = bus.serve(nodeSubject(bus.prefix, node), node, (payload, replyTo) => {
    const call = payload as NodeCall;
    if (call.op === "cancel") return running.get(call.reply)?.abort();
    answer(replyTo, async (signal, token) => {
      if (call.op === "close") return closeChat(call.chat);
      const c = chats.get(call.chat);
      if (!c) throw AppError.unavailable("The chat was closed on the inference node; ask again.", 1);
      clearTimeout(c.idle);
      try {
        return await c.handle.prompt(call.text, {
          ...call.opts,
          signal,
          onToken: call.opts.stream ? token : undefined,
        });
      } finally {
        touch(call.chat);
      }
    });
  });
  log.info({ node }, "serving inference over the bus");
  return {
    node,
    stop: async () => {
      // New requests go to the other nodes; the answers under way get a few seconds, then are cut short.
      stopRpc();
      stopNode();
      const end = Date.now() + 3000;
      while (running.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      stopping = true;
      for (const ac of running.values()) ac.abort();
      await new Promise((r) => setTimeout(r, 50));
      await Promise.all([...chats.keys()].map((id) => closeChat(id).catch(() => undefined)));
    },
  };
}

interface Asked {
  node?: string;
  heard: number;
  resolve: (v: unknown) => void;
  reject: (err: unknown) => void;
  onToken?: (text: string) => void;
}

/** Inference on the inference nodes, over the bus: what web and worker processes use with `ai.remote`. */
export class RemoteInference implements Inference {
  readonly threads: number;
  private llamaPromise?: Promise<Llama>;
  private inbox?: { prefix: string; stop: () => void };
  private readonly asked = new Map<string, Asked>();
  private readonly watchdog: NodeJS.Timeout;
  private next = 1;

  constructor(
    private readonly bus: Bus,
    private readonly config: Config,
  ) {
    this.threads = config.ai.threads ?? 1;
    this.watchdog = setInterval(() => this.checkSilence(), 1000);
    this.watchdog.unref();
  }

  llama(): Promise<Llama> {
    this.llamaPromise ??= readerLlama(this.config);
    return this.llamaPromise;
  }

  private checkSilence(): void {
    const now = Date.now();
    for (const [subject, a] of this.asked) {
      if (now - a.heard > SILENCE_MS) {
        this.asked.delete(subject);
        a.reject(AppError.unavailable("The inference node stopped answering. Try again.", 2));
      }
    }
  }

  private onFrame(payload: unknown, subject: string, noResponders: boolean): void {
    const a = this.asked.get(subject);
    if (!a) return;
    if (noResponders) {
      this.asked.delete(subject);
      return a.reject(
        AppError.unavailable(
          a.node
            ? "The inference node that held this chat is gone. Try again."
            : "No inference node is running.",
          5,
        ),
      );
    }
    a.heard = Date.now();
    const f = payload as Frame;
    if (f.t === "start") a.node = f.node;
    else if (f.t === "token") a.onToken?.(f.v);
    else if (f.t === "end") {
      this.asked.delete(subject);
      a.resolve(f.v);
    } else if (f.t === "error") {
      this.asked.delete(subject);
      const { message, name, status, code, details, headers } = f.error;
      a.reject(
        name === "AbortError"
          ? new DOMException(message, "AbortError")
          : status && code
            ? new AppError(status, code, message, details, headers)
            : new Error(message),
      );
    }
  }

  /** Sends a request and waits for its end frame; `signal` cancels it on the node that took it. */
  private ask<T>(
    subject: string,
    call: Call | NodeCall,
    opts: { signal?: AbortSignal; onToken?: (text: string) => void } = {},
  ): Promise<T> {
    this.inbox ??= this.bus.inbox((p, s, n) => this.onFrame(p, s, n));
    const replyTo = `${this.inbox.prefix}.${this.next++}`;
    const { signal } = opts;
    return new Promise<T>((resolve, reject) => {
      const a: Asked = {
        heard: Date.now(),
        resolve: resolve as (v: unknown) => void,
        reject,
        onToken: opts.onToken,
      };
      this.asked.set(replyTo, a);
      const cancel = () => {
        // Not yet taken by a node: nothing to stop there; the answer, when it comes, finds nobody waiting.
        if (a.node)
          this.bus.request(nodeSubject(this.bus.prefix, a.node), { op: "cancel", reply: replyTo }, replyTo);
        else {
          this.asked.delete(replyTo);
          reject(new DOMException("cancelled", "AbortError"));
        }
      };
      if (signal?.aborted) return cancel();
      signal?.addEventListener("abort", cancel, { once: true });
      const done = () => signal?.removeEventListener("abort", cancel);
      a.resolve = (v) => {
        done();
        resolve(v as T);
      };
      a.reject = (e) => {
        done();
        reject(e);
      };
      this.bus.request(subject, call, replyTo);
    });
  }

  async status(): Promise<ModelStatus[]> {
    const r = await this.ask<{ models: ModelStatus[] }>(rpcSubject(this.bus.prefix), { op: "status" }).catch(
      () => ({ models: [] }),
    );
    return r.models;
  }

  async openChat(req: OpenChatRequest): Promise<ChatHandle> {
    const { chat, node } = await this.ask<{ chat: string; node: string }>(
      rpcSubject(this.bus.prefix),
      { op: "open", orgId: req.orgId, model: req.model, system: req.system, history: req.history },
      { signal: req.signal },
    );
    const subject = nodeSubject(this.bus.prefix, node);
    let closed = false;
    return {
      prompt: (text, opts = {}) =>
        this.ask<GenerateResult>(
          subject,
          {
            op: "prompt",
            chat,
            text,
            opts: {
              maxTokens: opts.maxTokens,
              temperature: opts.temperature,
              jsonSchema: opts.jsonSchema,
              validate: opts.validate,
              stream: Boolean(opts.onToken),
            },
          },
          { signal: opts.signal, onToken: opts.onToken },
        ),
      close: async () => {
        if (closed) return;
        closed = true;
        await this.ask(subject, { op: "close", chat }).catch(() => undefined);
      },
    };
  }

  generate(req: GenerateRequest): Promise<GenerateResult> {
    return generateOn(this, req);
  }

  embed(model: ModelRow, texts: string[]): Promise<number[][]> {
    return this.ask(rpcSubject(this.bus.prefix), { op: "embed", model, texts });
  }

  countTokens(model: ModelRow, text: string): Promise<number> {
    return this.ask(rpcSubject(this.bus.prefix), { op: "count", model, text });
  }

  async close(): Promise<void> {
    clearInterval(this.watchdog);
    this.inbox?.stop();
    this.inbox = undefined;
    for (const a of this.asked.values()) a.reject(AppError.unavailable("Shutting down.", 1));
    this.asked.clear();
    if (this.llamaPromise) await (await this.llamaPromise).dispose();
  }
}
