import { describe, expect, it } from "vitest";
import type { ModelRow } from "./models.service.js";
import type { AiRuntime, GenerateRequest, GenerateResult } from "./runtime.js";
import { Speculations } from "./speculation.js";

// The logic of the guesses, on a scripted runtime; tests/integration/ai.test.ts runs them on the real one.
const model = (id: string, sha256 = "a".repeat(64)) => ({ id, name: "m", sha256 }) as ModelRow;
const who = { orgId: "org-1", rateKey: "key:1" };
const req = { messages: [{ role: "user" as const, content: "Hi" }] };

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
    expect(s.adopt(first, who.orgId, model("m1"), { signal: new AbortController().signal })).toBeUndefined();

    const second = s.start(who, "chat", "m", req, true);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.req).toMatchObject({ orgId: "org-1", model: { id: "m1" } });
    calls[0]!.release(); // generated before the request is admitted: nothing leaves yet
    const seen: string[] = [];
    const adopted = s.adopt(second, who.orgId, model("m1"), {
      signal: new AbortController().signal,
      onToken: (t) => seen.push(t),
    });
    expect(seen).toEqual(["a", "b", "c"]);
    expect((await adopted!.result).finishReason).toBe("stop");
  });

  it("abandons a guess of another model, another organization or another route", async () => {
    const { runtime, calls } = scripted(["x"]);
    const s = new Speculations(() => runtime);
    s.adopt(s.start(who, "chat", "m", req, true), who.orgId, model("m1"), {
      signal: new AbortController().signal,
    });
    expect(s.start(who, "openai", "m", req, true).started).toBeNull();
    expect(s.start(who, "chat", "other", req, true).started).toBeNull();
    expect(s.start({ ...who, orgId: "org-2" }, "chat", "m", req, true).started).toBeNull();

    const spec = s.start(who, "chat", "m", req, true);
    const seen: string[] = [];
    // The model named m was re-imported since: its file (sha256) differs.
    expect(
      s.adopt(spec, who.orgId, model("m1", "b".repeat(64)), {
        signal: new AbortController().signal,
        onToken: (t) => seen.push(t),
      }),
    ).toBeUndefined();
    expect((await spec.started!.result).finishReason).toBe("cancelled");
    expect(seen).toEqual([]);
    expect(calls).toHaveLength(1);
  });

  it("takes the guess out when a request is refused: one abandoned start per request under way, then none", async () => {
    const { runtime, calls } = scripted(["x"]);
    const s = new Speculations(() => runtime);
    s.adopt(s.start(who, "chat", undefined, req, false), who.orgId, model("m1"), {
      signal: new AbortController().signal,
    });
    // Two requests under way at once both start early.
    const refused = s.start(who, "chat", undefined, req, false);
    const alongside = s.start(who, "chat", undefined, req, false);
    expect(calls).toHaveLength(2);
    refused.abandon(); // what the route layer does when the request fails (403, 429, ...)
    alongside.abandon();
    expect((await refused.started!.result).finishReason).toBe("cancelled");
    expect((await alongside.started!.result).finishReason).toBe("cancelled");
    expect(s.start(who, "chat", undefined, req, false).started).toBeNull();
    expect(calls).toHaveLength(2);
  });

  it("cancels an adopted generation with the request's signal", async () => {
    const { runtime } = scripted(["x"]);
    const s = new Speculations(() => runtime);
    s.adopt(s.start(who, "chat", "m", req, true), who.orgId, model("m1"), {
      signal: new AbortController().signal,
    });
    const spec = s.start(who, "chat", "m", req, true);
    const client = new AbortController();
    const adopted = s.adopt(spec, who.orgId, model("m1"), { signal: client.signal, onToken: () => {} });
    client.abort();
    expect((await adopted!.result).finishReason).toBe("cancelled");
  });
});
