import { describe, expect, it } from "vitest";
import type { ModelRow } from "./models.service.js";
import type { AiRuntime, GenerateRequest, GenerateResult } from "./runtime.js";
import { Speculations } from "./speculation.js";

// The logic of the guesses, on a scripted runtime; tests/integration/ai.test.ts runs them on the real one.
const model = (id: string, sha256 = "a".repeat(64)) => ({ id, name: "m", sha256 }) as ModelRow;
const who = { orgId: "org-1", rateKey: "key:1" };
const req = { messages: [{ role: "user" as const, content: "Hi" }] };
/** An admitted request on `m`, as a route hands it to Speculations.generate. */
const admitted = (m: ModelRow, extra: { signal?: AbortSignal; onToken?: (t: string) => void } = {}) => ({
  ...req,
  orgId: who.orgId,
  model: m,
  signal: new AbortController().signal,
  ...extra,
});

/** A runtime whose generations emit the given tokens once released, and end "cancelled" when aborted. */
function scripted(tokens: string[]) {
  const calls: { req: GenerateRequest; release: () => void }[] = [];
  const runtime = {
    generate: (r: GenerateRequest) =>
      new Promise<GenerateResult>((resolve) => {
        const done = (finishReason: GenerateResult["finishReason"]) =>
          resolve({ text: tokens.join(""), promptTokens: 1, completionTokens: 1, finishReason });
        r.signal?.addEventListener("abort", () => done("cancelled"));
        calls.push({
          req: r,
          release: () => {
            for (const t of tokens) r.onToken?.(t);
            done("stop");
          },
        });
      }),
  } as unknown as AiRuntime;
  return { runtime, calls };
}

describe("speculative generation", () => {
  it("starts only for a credential admitted before, and hands over the held text in order", async () => {
    const { runtime, calls } = scripted(["a", "b", "c"]);
    const s = new Speculations(() => runtime);
    const first = s.start(who, "chat", "m", req, true);
    expect(first.started).toBeNull();
    expect(calls).toHaveLength(0);
    expect(s.generate(first, admitted(model("m1"))).early).toBe(false); // a new generation
    expect(calls).toHaveLength(1);

    const second = s.start(who, "chat", "m", req, true);
    expect(calls).toHaveLength(2);
    expect(calls[1]!.req).toMatchObject({ orgId: "org-1", model: { id: "m1" } });
    calls[1]!.release(); // generated before the request is admitted: nothing leaves yet
    const seen: string[] = [];
    const adopted = s.generate(second, admitted(model("m1"), { onToken: (t) => seen.push(t) }));
    expect(adopted.early).toBe(true);
    expect(calls).toHaveLength(2);
    expect(seen).toEqual(["a", "b", "c"]);
    expect((await adopted.result).finishReason).toBe("stop");
  });

  it("abandons a guess of another model, another organization or another route", async () => {
    const { runtime, calls } = scripted(["x"]);
    const s = new Speculations(() => runtime);
    s.generate(s.start(who, "chat", "m", req, true), admitted(model("m1")));
    expect(s.start(who, "openai", "m", req, true).started).toBeNull();
    expect(s.start(who, "chat", "other", req, true).started).toBeNull();
    expect(s.start({ ...who, orgId: "org-2" }, "chat", "m", req, true).started).toBeNull();

    const spec = s.start(who, "chat", "m", req, true);
    const seen: string[] = [];
    // The model named m was re-imported since: its file (sha256) differs.
    const fresh = s.generate(spec, admitted(model("m1", "b".repeat(64)), { onToken: (t) => seen.push(t) }));
    expect(fresh.early).toBe(false);
    expect((await spec.started!.result).finishReason).toBe("cancelled");
    expect(seen).toEqual([]);
    // Only the guess on m started early (the other routes, names and organization started nothing); the
    // request runs on a new generation of the model it resolved.
    expect(calls).toHaveLength(3);
    expect(calls[2]!.req.model.sha256).toBe("b".repeat(64));
  });

  it("takes the guess out when a request is refused: one abandoned start per request under way, then none", async () => {
    const { runtime, calls } = scripted(["x"]);
    const s = new Speculations(() => runtime);
    s.generate(s.start(who, "chat", undefined, req, false), admitted(model("m1")));
    // Two requests under way at once both start early.
    const refused = s.start(who, "chat", undefined, req, false);
    const alongside = s.start(who, "chat", undefined, req, false);
    expect(calls).toHaveLength(3);
    refused.abandon(); // what the route layer does when the request fails (403, 429, ...)
    alongside.abandon();
    expect((await refused.started!.result).finishReason).toBe("cancelled");
    expect((await alongside.started!.result).finishReason).toBe("cancelled");
    expect(s.start(who, "chat", undefined, req, false).started).toBeNull();
    expect(calls).toHaveLength(3);
  });

  it("cancels an adopted generation with the request's signal", async () => {
    const { runtime } = scripted(["x"]);
    const s = new Speculations(() => runtime);
    s.generate(s.start(who, "chat", "m", req, true), admitted(model("m1")));
    const spec = s.start(who, "chat", "m", req, true);
    const client = new AbortController();
    const adopted = s.generate(spec, admitted(model("m1"), { signal: client.signal, onToken: () => {} }));
    client.abort();
    expect((await adopted.result).finishReason).toBe("cancelled");
  });

  it("cancels a new generation when the request fails after it started (a failed commit)", async () => {
    const { runtime } = scripted(["x"]);
    const s = new Speculations(() => runtime);
    const spec = s.start(who, "chat", "m", req, true);
    const run = s.generate(spec, admitted(model("m1")));
    spec.abandon(); // what the route layer does when the commit fails
    expect((await run.result).finishReason).toBe("cancelled");
    expect(s.start(who, "chat", "m", req, true).started).toBeNull();
  });
});
