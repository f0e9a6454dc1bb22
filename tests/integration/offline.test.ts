import { execFile } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";

const run = promisify(execFile);
const SCRIPT = new URL("../support/offline-inference.mjs", import.meta.url).pathname;
const HOOKS = new URL("../support/offline-hooks.mjs", import.meta.url).pathname;
const STORIES = new URL("../../../shared/models/stories260K.gguf", import.meta.url).pathname;

describe("no network", () => {
  it("model loading, generation and embeddings make no outbound connection, in an empty network namespace", async () => {
    const tiny = path.join(mkdtempSync(path.join(tmpdir(), "ws-off-")), "tiny.gguf");
    makeTinyModel(tiny);
    for (const model of existsSync(STORIES) ? [tiny, STORIES] : [tiny]) {
      // unshare -n: a namespace with only a downed loopback, so any connect would fail at once.
      const log = path.join(mkdtempSync(path.join(tmpdir(), "ws-offlog-")), "attempts.log");
      const { stdout } = await run("unshare", ["-n", process.execPath, "--import", HOOKS, SCRIPT, model], {
        timeout: 60_000,
        env: { ...process.env, OFFLINE_LOG: log },
      });
      const report = JSON.parse(stdout.trim().split("\n").pop() as string) as {
        attempts: string[];
        threads: number;
        tokens: number;
        dims: number;
      };
      expect(report.attempts, model).toEqual([]);
      // The hooks watched the inference thread too, not only the main thread.
      expect(report.threads, model).toBeGreaterThanOrEqual(2);
      expect(report.tokens, model).toBeGreaterThan(0);
      expect(report.dims, model).toBe(64);
    }
  }, 120_000);
});
