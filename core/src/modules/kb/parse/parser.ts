import { fork, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Block, Extracted, ExtractLimits, Kind } from "./extract.js";
import type { ParseRequest } from "./worker.js";

/** A document that could not be parsed, with the reason shown to the person who uploaded it. */
export class ParseFailed extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The parser process was already gone when a document was sent to it: not the document's fault. */
class ParserGone extends Error {}

/** Limits of one parse. */
export interface ParseLimits extends ExtractLimits {
  timeoutMs: number;
  memoryMb: number;
}

/** Documents one parser process reads before it is replaced (a fresh heap now and then). */
const USES_PER_PROCESS = 20;
/** How often a busy parser's resident memory is read. */
const RSS_POLL_MS = 100;
/** A parser idle this long is stopped: memory a document made it take is given back. */
const IDLE_MS = 30_000;
/** Memory of the process that is not the JavaScript heap (code, buffers, pdf.js's native parts). */
const NATIVE_MB = 96;

/** The resident set of a process in MB (Linux /proc), or null where it cannot be read. */
export function residentMb(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/**
 * The compiled worker: next to this file when running from dist; from source (tests), the build's copy
 * (`npm test` builds first).
 */
function workerPath(): string {
  const here = fileURLToPath(new URL("./worker.js", import.meta.url));
  if (existsSync(here)) return here;
  const built = here.replace(/\/core\/src\//, "/core/dist/src/");
  if (existsSync(built)) return built;
  throw new Error(`the document parser is not built (${built}); run npm run build`);
}

type Reply =
  { id: number; ok: true; result: Extracted } | { id: number; ok: false; code: string; message: string };

/** A parser process kept warm between documents (starting one costs about 200 ms), one document at a time. */
class ParserProcess {
  readonly child: ChildProcess;
  uses = 0;
  stderr = "";
  private pending: { id: number; resolve: (r: Reply) => void; reject: (e: Error) => void } | null = null;
  private exited = false;

  constructor(readonly memoryMb: number) {
    this.child = fork(workerPath(), [], {
      // The heap gets what the process limit leaves after its native part; the whole process is watched too.
      execArgv: [`--max-old-space-size=${Math.max(64, memoryMb - NATIVE_MB)}`],
      serialization: "advanced",
      stdio: ["ignore", "ignore", "pipe", "ipc"],
      env: { NODE_ENV: "production" },
    });
    // An idle parser must not keep the server (or a test) from exiting.
    this.child.unref();
    this.child.channel?.unref();
    (this.child.stderr as { unref?: () => void } | null)?.unref?.();
    this.child.stderr?.on("data", (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-2000);
    });
    this.child.on("message", (m: Reply) => {
      if (this.pending?.id === m.id) this.pending.resolve(m);
    });
    // A parser killed from outside may not have closed yet when the next document is sent to it: the send
    // fails with an "error" event, which unheard would end the whole server. The document fails instead, and
    // the next one gets a new parser.
    this.child.on("error", () => {
      this.exited = true;
      this.pending?.reject(new ParserGone());
    });
    // "close", not "exit": only then has all of stderr (where V8 reports running out of heap) been read.
    this.child.on("close", (code, signal) => {
      this.exited = true;
      const oom =
        /heap out of memory|Allocation failed/i.test(this.stderr) || signal === "SIGABRT" || code === 134;
      this.pending?.reject(
        new ParseFailed(
          oom ? "parse_memory" : "parse_crashed",
          oom
            ? `Reading the document needed more than ${memoryMb} MB of memory; it was stopped.`
            : `The document parser stopped unexpectedly (${signal ?? `exit ${code}`}).`,
        ),
      );
    });
  }

  get alive(): boolean {
    return !this.exited;
  }

  run(req: ParseRequest): Promise<Reply> {
    this.uses += 1;
    let watch: NodeJS.Timeout | undefined;
    return new Promise((resolve, reject) => {
      this.pending = { id: req.id, resolve, reject };
      // While a document is being read, the channel keeps the process alive.
      this.child.channel?.ref();
      this.child.send(req, (err) => {
        if (err) {
          this.exited = true;
          reject(new ParserGone());
        }
      });
      // The heap limit alone does not bound the process (pdf.js and zlib allocate outside it): its resident set
      // is read while it works, and past the limit it is killed.
      watch = setInterval(() => {
        const rss = residentMb(this.child.pid);
        if (rss !== null && rss > this.memoryMb) {
          this.stop();
          reject(
            new ParseFailed(
              "parse_memory",
              `Reading the document needed more than ${this.memoryMb} MB of memory; it was stopped.`,
            ),
          );
        }
      }, RSS_POLL_MS);
    }).finally(() => {
      clearInterval(watch);
      this.pending = null;
      this.child.channel?.unref();
    }) as Promise<Reply>;
  }

  /** Resident memory now, in MB (null where it cannot be read). */
  rss(): number | null {
    return residentMb(this.child.pid);
  }

  /** Kills the process; it counts as gone at once, so the next document never lands on it. */
  stop(): void {
    if (this.exited) return;
    this.exited = true;
    this.child.kill("SIGKILL");
  }
}

/**
 * Parses documents in a child process with a memory limit (its whole resident set) and a wall-clock limit per
 * document, one document at a time. The process is reused while it behaves; after a timeout, a crash or a
 * document that left it holding more than half its limit, and every 20 documents, a new one is started; an
 * idle one is stopped after 30 s.
 */
export class DocumentParser {
  private proc: ParserProcess | null = null;
  private idle: NodeJS.Timeout | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private nextId = 1;

  /** Parses one document (calls are served in turn). */
  parse(file: string, kind: Kind, limits: ParseLimits): Promise<Extracted> {
    const run = this.queue.then(() => this.parseNow(file, kind, limits));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async parseNow(file: string, kind: Kind, limits: ParseLimits): Promise<Extracted> {
    try {
      return await this.parseOnce(file, kind, limits);
    } catch (err) {
      // The parser died under the document without a limit stopping it (killed from outside, perhaps before it
      // even began), or was already gone: once more, on a new one. A document that kills it twice fails.
      const crashed = err instanceof ParseFailed && err.code === "parse_crashed";
      if (!(err instanceof ParserGone) && !crashed) throw err;
      this.proc?.stop();
      this.proc = null;
      return this.parseOnce(file, kind, limits);
    }
  }

  private async parseOnce(file: string, kind: Kind, limits: ParseLimits): Promise<Extracted> {
    clearTimeout(this.idle);
    // A process that kept much of the memory its last document took is replaced, not reused.
    const heavy = (this.proc?.rss() ?? 0) > limits.memoryMb / 2;
    if (
      !this.proc?.alive ||
      this.proc.memoryMb !== limits.memoryMb ||
      this.proc.uses >= USES_PER_PROCESS ||
      heavy
    ) {
      this.proc?.stop();
      this.proc = new ParserProcess(limits.memoryMb);
    }
    const proc = this.proc;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        proc.stop();
        reject(
          new ParseFailed(
            "parse_timeout",
            `Reading the document took longer than ${Math.round(limits.timeoutMs / 1000)} s; it was stopped.`,
          ),
        );
      }, limits.timeoutMs);
    });
    try {
      const reply = await Promise.race([
        proc.run({
          id: this.nextId++,
          file,
          kind,
          limits: {
            zipMaxEntries: limits.zipMaxEntries,
            zipMaxBytes: limits.zipMaxBytes,
            maxPages: limits.maxPages,
            maxTextChars: limits.maxTextChars,
          },
        }),
        timeout,
      ]);
      if (!reply.ok) throw new ParseFailed(reply.code, reply.message);
      return reply.result;
    } finally {
      clearTimeout(timer);
      this.idle = setTimeout(() => this.close(), IDLE_MS);
      this.idle.unref();
    }
  }

  /** Stops the parser process. */
  close(): void {
    clearTimeout(this.idle);
    this.proc?.stop();
    this.proc = null;
  }
}

const shared = new DocumentParser();

/** Parses a document in the process's shared parser. */
export function parseDocument(file: string, kind: Kind, limits: ParseLimits): Promise<Extracted> {
  return shared.parse(file, kind, limits);
}

/** Stops the shared parser process (shutdown). */
export function closeParser(): void {
  shared.close();
}

export type { Block, Extracted, Kind };
