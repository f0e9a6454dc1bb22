import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import OpenAI from "openai";
import { z } from "zod";
import { getTestServer, type TestServer } from "../support/server.js";
import { readEvents } from "../support/sse.js";
import { Client, createMember, createTestOrg, type TestOrg } from "../support/identity.js";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { importModel, inspectModelFile } from "../../core/src/modules/ai/models.service.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";
import type { GenerateResult } from "../../core/src/modules/ai/runtime.js";

const STORIES = new URL("../../../shared/models/stories260K.gguf", import.meta.url).pathname;
const dir = mkdtempSync(path.join(tmpdir(), "ws-ai-"));
const TINY = path.join(dir, "tiny.gguf");
let srv: TestServer;
let org: TestOrg;
let key: string;

beforeAll(async () => {
  makeTinyModel(TINY);
  srv = await getTestServer({
    env: { WORKSYNAPSE_AI_THREADS: "1", WORKSYNAPSE_AI_PARALLEL: "2", WORKSYNAPSE_AI_CONTEXT_SIZE: "512" },
  });
  org = await createTestOrg(srv, "ai");
  const llama = await srv.ai!.llama();
  await importModel(srv.db.knex, llama, srv.config, { file: TINY, name: "tiny", role: "chat" });
  if (existsSync(STORIES))
    await importModel(srv.db.knex, llama, srv.config, { file: STORIES, name: "stories260K", role: "chat" });
  key = (
    await org.owner.json<{ data: { key: string } }>(
      "POST",
      "/api/api-keys",
      { name: "ai", permissions: ["ai.chat"] },
      201,
    )
  ).data.key;
}, 120_000);
afterAll(() => srv?.close());

describe("model registry", () => {
  it("reads the generated model's metadata (and stories260K's where present)", async () => {
    const list = await org.owner.json<{
      data: { models: { name: string; metadata: Record<string, unknown>; loaded: boolean }[] };
    }>("GET", "/api/ai/models");
    const tiny = list.data.models.find((m) => m.name === "tiny");
    expect(tiny?.metadata).toMatchObject({
      architecture: "llama",
      quantization: "F32",
      contextLength: 2048,
      embeddingLength: 64,
      hasChatTemplate: false,
      sizeBytes: readFileSync(TINY).length,
    });
    expect(Number(tiny?.metadata.parameterCount)).toBeGreaterThan(100_000);
    if (existsSync(STORIES)) {
      const stories = list.data.models.find((m) => m.name === "stories260K");
      expect(stories?.metadata).toMatchObject({
        architecture: "llama",
        contextLength: 2048,
        embeddingLength: 64,
      });
    }
  });

  it("rejects a file that is not GGUF, a truncated GGUF and a missing file with clear errors", async () => {
    const llama = await srv.ai!.llama();
    const notGguf = path.join(dir, "notes.gguf");
    writeFileSync(notGguf, "these are not weights");
    const truncated = path.join(dir, "truncated.gguf");
    const bytes = readFileSync(TINY);
    writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await expect(inspectModelFile(llama, notGguf)).rejects.toMatchObject({ code: "not_gguf", status: 400 });
    await expect(inspectModelFile(llama, truncated)).rejects.toMatchObject({
      code: "truncated_gguf",
      status: 400,
    });
    await expect(inspectModelFile(llama, path.join(dir, "nope.gguf"))).rejects.toMatchObject({
      code: "model_file_missing",
    });
    // The CLI says the same, and registers nothing.
    const { execFile } = await import("node:child_process");
    const { promisify } = await import("node:util");
    const bin = new URL("../../installer/bin/worksynapse.mjs", import.meta.url).pathname;
    const env = { ...process.env, DATABASE_URL: srv.pg.url, WORKSYNAPSE_DATA_DIR: srv.config.dataDir };
    const err = (await promisify(execFile)(process.execPath, [bin, "models", "import", truncated], {
      env,
    }).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(err.code).toBe(1);
    expect(err.stderr).toContain("incomplete");
  });
});

describe("chat over server-sent events", () => {
  it("streams tokens, then a final message with usage (generated model and stories260K)", async () => {
    for (const model of existsSync(STORIES) ? ["stories260K", "tiny"] : ["tiny"]) {
      const r = await org.owner.request("POST", "/api/ai/chat", {
        model,
        messages: [{ role: "user", content: "Once upon a time" }],
        maxTokens: 16,
      });
      expect(r.status).toBe(200);
      expect(r.headers.get("content-type")).toContain("text/event-stream");
      const ev = await readEvents(r);
      const tokens = ev.filter((e) => e.event === "token");
      const done = ev.find((e) => e.event === "done")?.data as {
        message: { content: string };
        usage: { completionTokens: number; promptTokens: number };
      };
      expect(tokens.length).toBeGreaterThan(0);
      expect(tokens.map((t) => (t.data as { text: string }).text).join("")).toBe(done.message.content);
      expect(done.usage.completionTokens).toBeGreaterThan(0);
      expect(done.usage.completionTokens).toBeLessThanOrEqual(16);
      expect(done.usage.promptTokens).toBeGreaterThan(0);
    }
    const loaded = await org.owner.json<{
      data: { models: { name: string; loaded: boolean; memoryBytes: number }[] };
    }>("GET", "/api/ai/models");
    expect(loaded.data.models.find((m) => m.name === "tiny")).toMatchObject({ loaded: true });
    expect(loaded.data.models.find((m) => m.name === "tiny")?.memoryBytes).toBeGreaterThan(100_000);
    // The tokens are recorded right after the answer ends (the answer does not wait for that statement).
    const tokensToday = async () =>
      (
        await org.owner.json<{ data: { usageToday: { metric: string; organization: number }[] } }>(
          "GET",
          "/api/org",
        )
      ).data.usageToday.find((u) => u.metric === "ai.tokens")?.organization ?? 0;
    for (let i = 0; i < 100 && !(await tokensToday()); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await tokensToday()).toBeGreaterThan(0);
  });

  it("frees the sequence when the client disconnects", async () => {
    const ac = new AbortController();
    const r = await org.owner.request(
      "POST",
      "/api/ai/chat",
      { model: "tiny", messages: [{ role: "user", content: "Tell a long story" }], maxTokens: 2000 },
      { signal: ac.signal },
    );
    const reader = r.body!.getReader();
    await reader.read();
    ac.abort();
    const deadline = Date.now() + 10_000;
    let busy = 1;
    while (Date.now() < deadline) {
      busy = (await srv.ai!.status()).reduce((n, s) => n + s.busy, 0);
      if (busy === 0) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    expect(busy).toBe(0);
    const again = await readEvents(
      await org.owner.request("POST", "/api/ai/chat", {
        model: "tiny",
        messages: [{ role: "user", content: "Hi" }],
        maxTokens: 4,
      }),
    );
    expect(again.some((e) => e.event === "done")).toBe(true);
  });

  it("spreads concurrent requests over the model's contexts, one sequence each", async () => {
    // 2 sequences, 1 thread, CPU: one context per sequence, so two requests decode in parallel.
    const acs = [new AbortController(), new AbortController()];
    const streams = await Promise.all(
      acs.map((ac) =>
        org.owner.request(
          "POST",
          "/api/ai/chat",
          { model: "tiny", messages: [{ role: "user", content: "Tell a long story" }], maxTokens: 2000 },
          { signal: ac.signal },
        ),
      ),
    );
    for (const r of streams) await r.body!.getReader().read();
    const tiny = (await srv.ai!.status()).find((s) => s.busy > 0);
    expect(tiny).toMatchObject({ busy: 2, free: 0, contexts: [1, 1] });
    const listed = await org.owner.json<{ data: { models: { name: string; contexts: number }[] } }>(
      "GET",
      "/api/ai/models",
    );
    expect(listed.data.models.find((m) => m.name === "tiny")?.contexts).toBe(2);
    for (const ac of acs) ac.abort();
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (await srv.ai!.status()).some((s) => s.busy > 0))
      await new Promise((res) => setTimeout(res, 50));
    // Given back: every loaded model's contexts are idle again.
    for (const s of await srv.ai!.status()) expect(s).toMatchObject({ busy: 0, free: 2, contexts: [0, 0] });
  });

  it("starts an admitted caller's next answer before admission, and gives out nothing of it when refused", async () => {
    const member = await createMember(org, ["member"], "early");
    const ask = (maxTokens = 12) =>
      member.client.request("POST", "/api/ai/chat", {
        model: "tiny",
        messages: [{ role: "user", content: "Tell a long story" }],
        maxTokens,
      });
    const runtime = srv.ai!;
    const generate = runtime.generate.bind(runtime);
    const runs: Promise<GenerateResult>[] = [];
    runtime.generate = (req) => {
      const run = generate(req);
      runs.push(run);
      return run;
    };
    try {
      expect((await readEvents(await ask())).some((e) => e.event === "done")).toBe(true);
      // Started on the first request's model as soon as the session was identified: the same stream as ever.
      const second = await readEvents(await ask());
      const done = second.find((e) => e.event === "done")?.data as {
        message: { content: string };
        usage: { completionTokens: number };
      };
      const text = second
        .filter((e) => e.event === "token")
        .map((e) => (e.data as { text: string }).text)
        .join("");
      expect(text).toBe(done.message.content);
      expect(done.usage.completionTokens).toBeGreaterThan(0);
      expect(runs).toHaveLength(2);

      // The member loses ai.chat. The next request starts early on the guess, is refused, and none of its
      // answer leaves; the generation is cancelled and its sequence given back.
      const roles = (await org.owner.json<{ data: { id: string; key: string }[] }>("GET", "/api/roles")).data;
      await org.owner.json("PUT", `/api/users/${member.id}/roles`, {
        roleIds: roles.filter((r) => r.key === "guest").map((r) => r.id),
      });
      const refused = await ask(2000);
      expect(refused.status).toBe(403);
      expect(refused.headers.get("content-type")).toContain("application/json");
      expect(await refused.text()).not.toContain("event:");
      expect(runs).toHaveLength(3);
      // Cancelled while generating, or while evaluating the prompt (which rejects with an AbortError).
      const outcome = await runs[2]!.then(
        (r) => r.finishReason,
        (err: Error) => err.message,
      );
      expect(outcome).toMatch(/^cancelled$|aborted/);
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && (await runtime.status()).some((s) => s.busy > 0))
        await new Promise((res) => setTimeout(res, 50));
      expect((await runtime.status()).every((s) => s.busy === 0)).toBe(true);
      // A refused credential is not guessed again.
      expect((await ask(2000)).status).toBe(403);
      expect(runs).toHaveLength(3);
    } finally {
      runtime.generate = generate;
    }
  });

  it("answers valid JSON when asked for a JSON schema", async () => {
    const schema = {
      type: "object",
      properties: { name: { type: "string" }, count: { type: "integer" } },
      required: ["name", "count"],
      additionalProperties: false,
    };
    for (const model of existsSync(STORIES) ? ["tiny", "stories260K"] : ["tiny"]) {
      const ev = await readEvents(
        await org.owner.request("POST", "/api/ai/chat", {
          model,
          messages: [{ role: "user", content: "A person" }],
          maxTokens: 200,
          jsonSchema: schema,
        }),
      );
      const done = ev.find((e) => e.event === "done")?.data as {
        message: { content: string };
        json: unknown;
        finishReason: string;
      };
      if (done.finishReason === "length") continue; // a model rambling in a string can hit the cap; the grammar still held
      const parsed = z
        .object({ name: z.string(), count: z.number().int() })
        .strict()
        .parse(JSON.parse(done.message.content));
      expect(done.json).toEqual(parsed);
    }
  });

  it("refuses bad input and unknown models clearly", async () => {
    expect((await org.owner.request("POST", "/api/ai/chat", { messages: [] })).status).toBe(400);
    expect(
      (await org.owner.request("POST", "/api/ai/chat", { messages: [{ role: "wizard", content: "x" }] }))
        .status,
    ).toBe(400);
    const unknown = await org.owner.request("POST", "/api/ai/chat", {
      model: "gpt-9",
      messages: [{ role: "user", content: "x" }],
    });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe("model_not_found");
  });
});

describe("the OpenAI-compatible API, through the openai client", () => {
  it("lists models, completes chats (plain, streamed, JSON schema) and embeds", async () => {
    const client = new OpenAI({ apiKey: key, baseURL: `${srv.url}/v1`, maxRetries: 0 });
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toContain("tiny");

    const completion = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Hello" }],
      max_tokens: 8,
    });
    expect(completion.object).toBe("chat.completion");
    expect(completion.choices[0]?.message.role).toBe("assistant");
    expect(typeof completion.choices[0]?.message.content).toBe("string");
    expect(completion.usage?.completion_tokens).toBeGreaterThan(0);

    const stream = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Hello" }],
      max_tokens: 8,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null | undefined;
    let usage: number | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage?.completion_tokens ?? usage;
    }
    expect(text.length).toBeGreaterThan(0);
    expect(finish).toMatch(/stop|length/);
    expect(usage).toBeGreaterThan(0);

    const json = await client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "A flag" }],
      max_tokens: 100,
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "flag",
          schema: {
            type: "object",
            properties: { on: { type: "boolean" } },
            required: ["on"],
            additionalProperties: false,
          },
        },
      },
    });
    expect(
      z
        .object({ on: z.boolean() })
        .strict()
        .parse(JSON.parse(json.choices[0]?.message.content ?? "")),
    ).toBeDefined();

    const emb = await client.embeddings.create({ model: "tiny", input: ["hello world", "goodbye"] });
    expect(emb.data).toHaveLength(2);
    expect(emb.data[0]?.embedding).toHaveLength(64);
    expect(emb.usage.prompt_tokens).toBeGreaterThan(0);
    const floats = await client.embeddings.create({
      model: "tiny",
      input: "hello world",
      encoding_format: "float",
    });
    expect(floats.data[0]?.embedding[0]).toBeCloseTo(emb.data[0]?.embedding[0] as number, 5);

    await expect(
      new OpenAI({ apiKey: "wsk_bad", baseURL: `${srv.url}/v1`, maxRetries: 0 }).models.list(),
    ).rejects.toMatchObject({ status: 401 });
  }, 60_000);
});

describe("limits", () => {
  /** A new organization whose plan is overridden with `limits`. */
  const orgOnPlan = async (label: string, limits: Record<string, number>) => {
    const o = await createTestOrg(srv, label);
    await withOrg(srv.db.knex, o.orgId, (trx) =>
      trx("organizations")
        .where({ id: o.orgId })
        .update({ plan_overrides: JSON.stringify(limits) }),
    );
    return o;
  };

  it("answers 429 when the organization's daily AI requests are used up", async () => {
    const other = await orgOnPlan("quota", { aiRequestsPerDay: 1 });
    const ask = () =>
      other.owner.request("POST", "/api/ai/chat", {
        model: "tiny",
        messages: [{ role: "user", content: "Hi" }],
        maxTokens: 2,
      });
    expect((await ask()).status).toBe(200);
    const over = await ask();
    expect(over.status).toBe(429);
    expect(((await over.json()) as { error: { code: string } }).error.code).toBe("quota_exceeded");
  });

  it("answers 429 once the day's tokens are used up, counting the answer that just ended", async () => {
    const other = await orgOnPlan("tokens", { tokensPerDay: 5 });
    const ask = async () => {
      const r = await other.owner.request("POST", "/api/ai/chat", {
        model: "tiny",
        messages: [{ role: "user", content: "Hi" }],
        maxTokens: 8,
      });
      return { status: r.status, text: await r.text() };
    };
    const first = await ask();
    expect(first.status).toBe(200);
    expect(first.text).toContain("event: done");
    // Asked the moment the first answer ended: its tokens (more than 5) are already counted.
    const over = await ask();
    expect(over.status).toBe(429);
    expect((JSON.parse(over.text) as { error: { code: string } }).error.code).toBe("quota_exceeded");
  });

  it("serves organizations in turn: a busy organization cannot starve another", async () => {
    const fair = await getTestServer({
      env: { WORKSYNAPSE_AI_THREADS: "1", WORKSYNAPSE_AI_PARALLEL: "1", WORKSYNAPSE_AI_CONTEXT_SIZE: "512" },
    });
    try {
      const busyOrg = await createTestOrg(fair, "hog");
      const calm = await createTestOrg(fair, "calm");
      await importModel(fair.db.knex, await fair.ai!.llama(), fair.config, {
        file: TINY,
        name: "tiny",
        role: "chat",
      });
      const keyOf = async (o: TestOrg) =>
        new Client(fair, {
          apiKey: (
            await o.owner.json<{ data: { key: string } }>(
              "POST",
              "/api/api-keys",
              { name: "k", permissions: ["ai.chat"] },
              201,
            )
          ).data.key,
        });
      const [hog, other] = [await keyOf(busyOrg), await keyOf(calm)];
      await hog.request("POST", "/v1/chat/completions", {
        model: "tiny",
        messages: [{ role: "user", content: "x" }],
        max_tokens: 1,
      });
      const finished: string[] = [];
      const ask = (c: Client, label: string) =>
        c
          .request("POST", "/v1/chat/completions", {
            model: "tiny",
            messages: [{ role: "user", content: "Go on" }],
            max_tokens: 120,
          })
          .then(async (r) => {
            expect(r.status).toBe(200);
            await r.text();
            finished.push(label);
          });
      // The busy organization queues five requests first; the calm one asks once, last.
      const hogs = [1, 2, 3, 4, 5].map((i) => ask(hog, `hog${i}`));
      await new Promise((r) => setTimeout(r, 30));
      const calmOne = ask(other, "calm");
      await Promise.all([...hogs, calmOne]);
      // Round robin: the calm organization is served after at most two of the busy one's requests.
      expect(finished.indexOf("calm")).toBeLessThanOrEqual(2);
    } finally {
      await fair.close();
    }
  }, 60_000);

  it("answers 503 with Retry-After when the queue is full", async () => {
    const busy = await getTestServer({
      env: {
        WORKSYNAPSE_AI_THREADS: "1",
        WORKSYNAPSE_AI_PARALLEL: "1",
        WORKSYNAPSE_AI_MAX_QUEUE: "0",
        WORKSYNAPSE_AI_CONTEXT_SIZE: "512",
      },
    });
    try {
      const o = await createTestOrg(busy, "busy");
      await importModel(busy.db.knex, await busy.ai!.llama(), busy.config, {
        file: TINY,
        name: "tiny",
        role: "chat",
      });
      const c = new Client(busy, {
        apiKey: (
          await o.owner.json<{ data: { key: string } }>(
            "POST",
            "/api/api-keys",
            { name: "k", permissions: ["ai.chat"] },
            201,
          )
        ).data.key,
      });
      const statuses = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const r = await c.request("POST", "/v1/chat/completions", {
            model: "tiny",
            messages: [{ role: "user", content: "Go on" }],
            max_tokens: 300,
          });
          return { status: r.status, retry: r.headers.get("retry-after"), body: await r.text() };
        }),
      );
      expect(statuses.some((s) => s.status === 200)).toBe(true);
      const refused = statuses.filter((s) => s.status === 503);
      expect(refused.length).toBeGreaterThan(0);
      expect(refused[0]?.retry).toBe("2");
      expect(refused[0]?.body).toContain("busy");
    } finally {
      await busy.close();
    }
  }, 60_000);
});
