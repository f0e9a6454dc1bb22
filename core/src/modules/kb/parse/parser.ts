import { fork } from "node:child_process";
import { existsSync } from "node:fs";
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

/** Limits of one parse. */
export interface ParseLimits extends ExtractLimits {
  timeoutMs: number;
  memoryMb: number;
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

/** Parses a document in a child process with a heap limit and a wall-clock limit. */
export function parseDocument(file: string, kind: Kind, limits: ParseLimits): Promise<Extracted> {
  return new Promise((resolve, reject) => {
    const child = fork(workerPath(), [], {
      execArgv: [`--max-old-space-size=${limits.memoryMb}`],
      serialization: "advanced",
      stdio: ["ignore", "ignore", "pipe", "ipc"],
      env: { NODE_ENV: "production" },
    });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000);
    });
    let settled = false;
    const done = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      done(() =>
        reject(
          new ParseFailed(
            "parse_timeout",
            `Reading the document took longer than ${Math.round(limits.timeoutMs / 1000)} s; it was stopped.`,
          ),
        ),
      );
    }, limits.timeoutMs);
    child.on(
      "message",
      (m: { ok: true; result: Extracted } | { ok: false; code: string; message: string }) => {
        done(() => (m.ok ? resolve(m.result) : reject(new ParseFailed(m.code, m.message))));
      },
    );
    child.on("error", (err) => done(() => reject(err)));
    child.on("exit", (code, signal) => {
      const oom = /heap out of memory|Allocation failed/i.test(stderr);
      done(() =>
        reject(
          new ParseFailed(
            oom ? "parse_memory" : "parse_crashed",
            oom
              ? `Reading the document needed more than ${limits.memoryMb} MB of memory; it was stopped.`
              : `The document parser stopped unexpectedly (${signal ?? `exit ${code}`}).`,
          ),
        ),
      );
    });
    const req: ParseRequest = {
      file,
      kind,
      limits: { zipMaxEntries: limits.zipMaxEntries, zipMaxBytes: limits.zipMaxBytes },
    };
    child.send(req);
  });
}

export type { Block, Extracted, Kind };
