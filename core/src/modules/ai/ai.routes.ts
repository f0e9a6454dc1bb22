import { randomUUID } from "node:crypto";
import { openEventStream } from "../../platform/http/sse.js";
import type { Context } from "koa";
import type { Knex } from "knex";
import { z } from "zod";
import type { Config } from "../../config/schema.js";
import type { Caller } from "../../platform/auth/caller.js";
import type { Api, Scope } from "../../platform/http/api.js";
import { afterCommit, dataOf } from "../../platform/http/api.js";
import { AppError } from "../../platform/http/errors.js";
import { requestLog } from "../../platform/http/envelope.js";
import { admitAiRequest, recordUsageNow } from "../identity/org.service.js";
import {
  listModels,
  MODEL_ROLES,
  orgModels,
  removeModel,
  setModelRoles,
  setOrgModels,
  type ModelRow,
} from "./models.service.js";
import { importDir, importPack, listImportablePacks, packInImportDir, trustedPackKeys } from "./packs.js";
import type { Inference, ChatMessage, GenerateResult, ModelStatus } from "./runtime.js";
import { Speculations, type SpeculativeRequest } from "./speculation.js";

const message = z.object({
  role: z.enum(["system", "user", "assistant"]),
  content: z.string().max(100_000),
});

const chatBody = z
  .strictObject({
    messages: z.array(message).min(1).max(200),
    model: z.string().max(200).optional(),
    maxTokens: z.number().int().min(1).max(8192).optional(),
    temperature: z.number().min(0).max(2).optional(),
    jsonSchema: z.record(z.string(), z.unknown()).optional(),
  })
  .meta({ id: "ChatRequest" });

const modelRole = z.enum(MODEL_ROLES);
const modelSchema = z
  .object({
    id: z.uuid(),
    name: z.string(),
    sha256: z.string(),
    roles: z.array(modelRole).describe("What it is used for: chat, embedding or both."),
    metadata: z.object({
      architecture: z.string(),
      parameterCount: z.number(),
      quantization: z.string(),
      contextLength: z.number(),
      embeddingLength: z.number(),
      hasChatTemplate: z.boolean(),
      sizeBytes: z.number(),
    }),
    loaded: z.boolean(),
    memoryBytes: z.number(),
    /** Contexts the loaded model's sequences are spread over (0 when not loaded). */
    contexts: z.number(),
    busy: z.number(),
    queued: z.number(),
    createdAt: z.string(),
  })
  .meta({ id: "AiModel" });

/** A model with what the runtime says of its load (not loaded: zeros). */
function withLoad(m: ModelRow, status: ModelStatus[]) {
  const s = status.find((x) => x.id === m.id);
  return {
    ...m,
    loaded: Boolean(s),
    memoryBytes: s?.memoryBytes ?? 0,
    contexts: s?.contexts.length ?? 0,
    busy: s?.busy ?? 0,
    queued: s?.queued ?? 0,
  };
}

// The OpenAI-compatible surface takes the fields OpenAI clients send and ignores the ones it does not use.
const oaiChatBody = z.object({
  model: z.string().max(200),
  messages: z
    .array(
      z.object({
        role: z.enum(["system", "developer", "user", "assistant"]),
        content: z.union([z.string(), z.array(z.object({ type: z.literal("text"), text: z.string() }))]),
      }),
    )
    .min(1)
    .max(200),
  max_tokens: z.number().int().min(1).max(8192).optional(),
  max_completion_tokens: z.number().int().min(1).max(8192).optional(),
  temperature: z.number().min(0).max(2).optional(),
  stream: z.boolean().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).optional(),
  response_format: z
    .union([
      z.object({ type: z.literal("text") }),
      z.object({ type: z.literal("json_object") }),
      z.object({
        type: z.literal("json_schema"),
        json_schema: z.object({ name: z.string().optional(), schema: z.record(z.string(), z.unknown()) }),
      }),
    ])
    .optional(),
});
const oaiEmbeddingsBody = z.object({
  model: z.string().max(200),
  input: z.union([z.string().max(100_000), z.array(z.string().max(100_000)).min(1).max(256)]),
  encoding_format: z.enum(["float", "base64"]).optional(),
});

/** What a chat body asks the model for. */
const chatRequest = (body: z.infer<typeof chatBody>): SpeculativeRequest => ({
  messages: body.messages as ChatMessage[],
  maxTokens: body.maxTokens,
  temperature: body.temperature,
  jsonSchema: body.jsonSchema,
});

/** The same for an OpenAI-compatible chat completion (developer messages are system messages). */
const oaiRequest = (body: z.infer<typeof oaiChatBody>): SpeculativeRequest => {
  const format = body.response_format;
  return {
    messages: body.messages.map((m) => ({
      role: m.role === "developer" ? "system" : m.role,
      content: typeof m.content === "string" ? m.content : m.content.map((c) => c.text).join(""),
    })),
    maxTokens: body.max_completion_tokens ?? body.max_tokens,
    temperature: body.temperature,
    jsonSchema:
      format?.type === "json_schema"
        ? format.json_schema.schema
        : format?.type === "json_object"
          ? { type: "object" }
          : undefined,
  };
};

/** The error a failed generation reports in its stream; unexpected ones are logged with the request id. */
function generationFailure(ctx: Context, err: unknown): AppError {
  if (err instanceof AppError) return err;
  (ctx.state.rootLog as { error: (o: object, m: string) => void }).error(
    { err, reqId: ctx.state.requestId },
    "generation failed",
  );
  return new AppError(500, "ai_failed", "The model failed to answer.");
}

/** Registers the AI routes: models and defaults, streaming chat, and the OpenAI-compatible API. */
export function registerAiRoutes(
  api: Api,
  deps: { knex: Knex | null; config: Config; runtime: Inference | null },
): void {
  const tags = ["ai"];
  const need = <T>(v: T | null): T => {
    if (!v) throw AppError.unavailable("The AI runtime is not running on this process.");
    return v;
  };

  // The catalog changes only when an administrator imports or removes a model: a few seconds of caching
  // saves a query before every generation.
  let catalog: { at: number; models: ModelRow[] } | undefined;
  const models = async (trx: Knex.Transaction) => {
    if (!catalog || Date.now() - catalog.at > 5000)
      catalog = { at: Date.now(), models: await listModels(trx) };
    return catalog.models;
  };

  /** The model a request names (by name or id), else the organization's default for the role. */
  async function resolveModel(scope: Scope, role: "chat" | "embedding", name?: string): Promise<ModelRow> {
    if (name && name !== "default") {
      const m = (await models(scope.trx)).find((x) => x.name === name || x.id === name);
      if (!m) throw new AppError(404, "model_not_found", `No model named ${name} is installed.`);
      return m;
    }
    const m = (await orgModels(scope.trx, scope.caller.orgId))[role];
    if (!m)
      throw new AppError(
        409,
        "no_model",
        "No model is installed. An administrator imports one with `worksynapse models import`.",
      );
    return m;
  }

  /** Answers started before their request is admitted (time-to-first-token hiding; see speculation.ts). */
  const speculations = new Speculations(() => deps.runtime);

  /** Usage statements not finished yet, per organization (see account). */
  const recording = new Map<string, Promise<void>>();

  /**
   * Checks quotas before a generation (in the request's transaction), once this node has recorded the
   * organization's earlier answers: a request right after an answer sees that answer's tokens.
   */
  const admit = async (scope: Scope) => {
    await recording.get(scope.caller.orgId);
    await admitAiRequest(scope);
  };

  /**
   * Records token usage after a generation, in one statement of its own (the request's transaction has
   * committed). Not waited for by the response: the answer ends at its last token, not one statement later.
   */
  function account(ctx: Context, caller: Caller, tokens: number): void {
    const orgId = caller.orgId;
    const done = (recording.get(orgId) ?? Promise.resolve())
      .then(() => recordUsageNow(need(deps.knex), caller, "tokensPerDay", tokens))
      .catch((err: unknown) => requestLog(ctx).warn({ err, tokens }, "AI usage not recorded"))
      .finally(() => {
        if (recording.get(orgId) === done) recording.delete(orgId);
      });
    recording.set(orgId, done);
  }

  api.route({
    method: "get",
    path: "/api/ai/models",
    operationId: "listAiModels",
    summary: "Installed models, which are loaded, and this organization's defaults",
    tags,
    permission: "ai.chat",
    response: dataOf(
      z.object({
        models: z.array(modelSchema),
        defaults: z.object({ chat: z.string().nullable(), embedding: z.string().nullable() }),
        threads: z.number(),
      }),
    ),
    handler: async (_ctx, _in, scope) => {
      const runtime = need(deps.runtime);
      const status = await runtime.status();
      const models = (await listModels(scope.trx)).map((m) => withLoad(m, status));
      const defaults = await orgModels(scope.trx, scope.caller.orgId);
      return {
        data: {
          models,
          defaults: { chat: defaults.chat?.id ?? null, embedding: defaults.embedding?.id ?? null },
          threads: runtime.threads,
        },
      };
    },
  });

  api.route({
    method: "put",
    path: "/api/ai/defaults",
    operationId: "setAiDefaults",
    summary: "Choose this organization's default chat and embedding models",
    tags,
    permission: "admin.settings",
    body: z.strictObject({
      chatModelId: z.uuid().nullable().optional(),
      embeddingModelId: z.uuid().nullable().optional(),
    }),
    status: 204,
    handler: async (_ctx, { body }, { caller, trx }) => setOrgModels(trx, caller.orgId, body),
  });

  const packSchema = z
    .object({
      folder: z.string(),
      manifest: z
        .object({
          name: z.string(),
          role: z.enum(["chat", "embedding"]),
          licence: z.string(),
          contextLength: z.number(),
          architecture: z.string(),
          sizeBytes: z.number(),
          sha256: z.string(),
          createdAt: z.string(),
        })
        .nullable(),
      problem: z.string().nullable(),
    })
    .meta({ id: "ModelPack" });

  api.route({
    method: "get",
    path: "/api/ai/model-packs",
    operationId: "listModelPacks",
    scope: "installation",
    summary:
      "Model packs in the server's import folder, each checked: signed by a trusted key and holding the file its manifest names (system administrators)",
    tags,
    response: dataOf(z.object({ folder: z.string(), packs: z.array(packSchema) })),
    handler: async (_ctx, _in, _scope) => {
      const packs = await listImportablePacks(deps.config);
      return {
        data: {
          folder: importDir(deps.config),
          packs: packs.map((p) => ({
            folder: p.folder,
            problem: p.problem,
            manifest: p.manifest && {
              name: p.manifest.name,
              role: p.manifest.role,
              licence: p.manifest.licence,
              contextLength: p.manifest.contextLength,
              architecture: p.manifest.architecture,
              sizeBytes: p.manifest.sizeBytes,
              sha256: p.manifest.sha256,
              createdAt: p.manifest.createdAt,
            },
          })),
        },
      };
    },
  });

  api.route({
    method: "post",
    path: "/api/ai/model-packs/import",
    operationId: "importModelPack",
    scope: "installation",
    summary:
      "Import a model pack from the server's import folder: its signature and file are checked, the model copied in and registered (system administrators)",
    tags,
    body: z.strictObject({ folder: z.string().min(1).max(300) }),
    status: 201,
    response: dataOf(z.object({ id: z.uuid(), name: z.string(), roles: z.array(modelRole) })),
    handler: async (_ctx, { body }, { trx }) => {
      const runtime = need(deps.runtime);
      const dir = packInImportDir(deps.config, body.folder);
      const m = await importPack(trx, await runtime.llama(), deps.config, dir, trustedPackKeys(deps.config));
      catalog = undefined;
      return { data: { id: m.id, name: m.name, roles: m.roles } };
    },
  });

  api.route({
    method: "put",
    path: "/api/ai/models/:id/roles",
    operationId: "setAiModelRoles",
    scope: "installation",
    summary: "Set what a model is used for: chat, embedding or both (system administrators)",
    tags,
    params: z.object({ id: z.uuid() }),
    body: z.strictObject({ roles: z.array(modelRole).min(1).max(2) }),
    response: dataOf(modelSchema),
    errors: [400, 403, 404],
    handler: async (_ctx, { params, body }, { trx }) => {
      const m = await setModelRoles(trx, params.id, body.roles);
      catalog = undefined;
      return { data: withLoad(m, (await deps.runtime?.status()) ?? []) };
    },
  });

  api.route({
    method: "delete",
    path: "/api/ai/models/:id",
    operationId: "removeAiModel",
    scope: "installation",
    summary: "Remove an installed model and its file (system administrators)",
    tags,
    params: z.object({ id: z.uuid() }),
    status: 204,
    handler: async (_ctx, { params }, { trx }) => {
      await removeModel(trx, deps.config, params.id);
      catalog = undefined;
    },
  });

  api.route({
    method: "post",
    path: "/api/ai/chat",
    operationId: "chat",
    summary:
      "Chat with a local model; the answer streams as server-sent events (token, then done with usage)",
    tags,
    permission: "ai.chat",
    body: chatBody,
    response: z.string(),
    responseType: "text/event-stream",
    errors: [404, 409, 429, 503],
    early: ({ body }, who) => speculations.start(who, "chat", body.model, chatRequest(body), true),
    handler: async (ctx, { body }, scope) => {
      need(deps.runtime);
      const model = await resolveModel(scope, "chat", body.model);
      await admit(scope);
      const { stream, send, flush, signal } = openEventStream(ctx);
      const caller = scope.caller;
      let first = 0;
      const onToken = (text: string) => {
        first ||= performance.now();
        send("token", { text });
      };
      // The answer started early if this credential's last request was admitted on the same model; else now.
      // Either way it runs on after this handler returns, when the request's transaction has committed.
      const { result, startedAt: started } = speculations.generate(scope.early, {
        ...chatRequest(body),
        orgId: caller.orgId,
        model,
        signal,
        onToken,
      });
      void result
        .then(async (r: GenerateResult) => {
          const ms = performance.now() - started;
          flush();
          account(ctx, caller, r.promptTokens + r.completionTokens);
          send("done", {
            message: { role: "assistant", content: r.text },
            json: r.json,
            finishReason: r.finishReason,
            model: model.name,
            usage: {
              promptTokens: r.promptTokens,
              completionTokens: r.completionTokens,
              totalTokens: r.promptTokens + r.completionTokens,
            },
            timing: {
              ms: Math.round(ms),
              firstTokenMs: first ? Math.round(first - started) : null,
              tokensPerSecond: r.completionTokens / (ms / 1000),
            },
          });
        })
        .catch((err: unknown) => {
          const e = generationFailure(ctx, err);
          send("error", { error: { code: e.code, message: e.message } });
        })
        .finally(() => stream.end());
      return stream;
    },
  });

  // ----- OpenAI-compatible API (API keys; paths and shapes as OpenAI's) -----
  api.route({
    method: "get",
    path: "/v1/models",
    operationId: "openaiListModels",
    summary: "OpenAI-compatible: installed models",
    tags: ["openai"],
    permission: "ai.chat",
    response: z.object({
      object: z.literal("list"),
      data: z.array(
        z.object({ id: z.string(), object: z.literal("model"), created: z.number(), owned_by: z.string() }),
      ),
    }),
    handler: async (_ctx, _in, { trx }) => ({
      object: "list" as const,
      data: (await listModels(trx)).map((m) => ({
        id: m.name,
        object: "model" as const,
        created: Math.floor(Date.parse(m.createdAt) / 1000),
        owned_by: "worksynapse",
      })),
    }),
  });

  api.route({
    method: "post",
    path: "/v1/chat/completions",
    operationId: "openaiChatCompletions",
    summary:
      "OpenAI-compatible: chat completions (stream and non-stream, response_format with a JSON schema)",
    tags: ["openai"],
    permission: "ai.chat",
    body: oaiChatBody,
    response: z.unknown(),
    errors: [404, 409, 429, 503],
    early: ({ body }, who) =>
      speculations.start(who, "openai", body.model, oaiRequest(body), Boolean(body.stream)),
    handler: async (ctx, { body }, scope) => {
      need(deps.runtime);
      const model = await resolveModel(scope, "chat", body.model);
      await admit(scope);
      const request = { ...oaiRequest(body), orgId: scope.caller.orgId, model };
      const id = `chatcmpl-${randomUUID()}`;
      const created = Math.floor(Date.now() / 1000);
      const caller = scope.caller;
      const usageOf = (r: GenerateResult) => ({
        prompt_tokens: r.promptTokens,
        completion_tokens: r.completionTokens,
        total_tokens: r.promptTokens + r.completionTokens,
      });
      const finish = (r: GenerateResult) => (r.finishReason === "length" ? "length" : "stop");
      if (!body.stream) {
        const ac = new AbortController();
        ctx.res.on("close", () => {
          if (!ctx.res.writableFinished) ac.abort();
        });
        if (ctx.res.destroyed) ac.abort();
        const { result } = speculations.generate(scope.early, { ...request, signal: ac.signal });
        // Answered after the commit: a long answer must not hold a connection or the quota row's lock.
        return afterCommit(async () => {
          const r = await result;
          account(ctx, caller, r.promptTokens + r.completionTokens);
          return {
            id,
            object: "chat.completion",
            created,
            model: model.name,
            choices: [
              { index: 0, message: { role: "assistant", content: r.text }, finish_reason: finish(r) },
            ],
            usage: usageOf(r),
          };
        });
      }
      const { stream, send, flush, signal } = openEventStream(ctx);
      const chunk = (delta: object, finishReason: string | null, extra: object = {}) =>
        send(null, {
          id,
          object: "chat.completion.chunk",
          created,
          model: model.name,
          choices: [{ index: 0, delta, finish_reason: finishReason }],
          ...extra,
        });
      chunk({ role: "assistant", content: "" }, null);
      const onToken = (text: string) => chunk({ content: text }, null);
      void speculations
        .generate(scope.early, { ...request, signal, onToken })
        .result.then(async (r) => {
          flush();
          account(ctx, caller, r.promptTokens + r.completionTokens);
          chunk({}, finish(r), body.stream_options?.include_usage ? { usage: usageOf(r) } : {});
          send(null, "[DONE]");
        })
        .catch((err: unknown) => {
          const e = generationFailure(ctx, err);
          send(null, { error: { code: e.code, message: e.message } });
        })
        .finally(() => stream.end());
      return stream;
    },
  });

  api.route({
    method: "post",
    path: "/v1/embeddings",
    operationId: "openaiEmbeddings",
    summary: "OpenAI-compatible: embeddings",
    tags: ["openai"],
    permission: "ai.chat",
    body: oaiEmbeddingsBody,
    response: z.unknown(),
    errors: [404, 409, 429],
    handler: async (ctx, { body }, scope) => {
      const runtime = need(deps.runtime);
      const model = await resolveModel(scope, "embedding", body.model);
      await admit(scope);
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const caller = scope.caller;
      return afterCommit(async () => {
        const vectors = await runtime.embed(model, inputs);
        let tokens = 0;
        for (const t of inputs) tokens += await runtime.countTokens(model, t);
        account(ctx, caller, tokens);
        return {
          object: "list",
          // base64 is what OpenAI's own clients ask for: little-endian float32 bytes.
          data: vectors.map((v, index) => ({
            object: "embedding",
            index,
            embedding:
              body.encoding_format === "base64"
                ? Buffer.from(new Float32Array(v).buffer).toString("base64")
                : v,
          })),
          model: model.name,
          usage: { prompt_tokens: tokens, total_tokens: tokens },
        };
      });
    },
  });
}
