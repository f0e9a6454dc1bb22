import { createHash } from "node:crypto";
import {
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  closeSync,
  renameSync,
  rmSync,
  statSync,
  copyFileSync,
} from "node:fs";
import path from "node:path";
import type { Knex } from "knex";
import { GgufInsights, readGgufFileInfo, type Llama } from "node-llama-cpp";
import type { Config } from "../../config/schema.js";
import { AppError } from "../../platform/http/errors.js";

/** What the registry knows of a model file. */
export interface ModelMetadata {
  architecture: string;
  parameterCount: number;
  quantization: string;
  contextLength: number;
  embeddingLength: number;
  hasChatTemplate: boolean;
  sizeBytes: number;
}

/** What a model is used for. */
export type ModelRole = "chat" | "embedding";
export const MODEL_ROLES: readonly ModelRole[] = ["chat", "embedding"];

/** A registered model as the API shows it. */
export interface ModelRow {
  id: string;
  name: string;
  sha256: string;
  /** What it is used for: chat, embedding, or both. */
  roles: ModelRole[];
  metadata: ModelMetadata;
  createdAt: string;
}

/** Where model files live: <data dir>/models/<sha256>.gguf. */
export const modelsDir = (config: Config) => path.join(config.dataDir, "models");
/** The file of a registered model. */
export const modelFile = (config: Config, sha256: string) => path.join(modelsDir(config), `${sha256}.gguf`);

const GGML_TYPE_NAMES: Record<number, string> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  6: "Q5_0",
  7: "Q5_1",
  8: "Q8_0",
  10: "Q2_K",
  11: "Q3_K",
  12: "Q4_K",
  13: "Q5_K",
  14: "Q6_K",
  15: "Q8_K",
  30: "BF16",
};

const invalid = (code: string, message: string) => new AppError(400, code, message);

/** Checks a file is a complete GGUF model llama.cpp can load, and reads its metadata. Nothing is downloaded. */
export async function inspectModelFile(llama: Llama, file: string): Promise<ModelMetadata> {
  if (!existsSync(file)) throw invalid("model_file_missing", `No file at ${file}.`);
  const size = statSync(file).size;
  const head = Buffer.alloc(4);
  const fd = openSync(file, "r");
  try {
    readSync(fd, head, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  if (head.toString("latin1") !== "GGUF")
    throw invalid("not_gguf", "This file is not a GGUF model (its first bytes are not GGUF).");
  let info;
  try {
    info = await readGgufFileInfo(file, { readTensorInfo: true });
  } catch (err) {
    throw invalid("invalid_gguf", `The GGUF header cannot be read: ${(err as Error).message.split("\n")[0]}`);
  }
  const tensors = info.fullTensorInfo ?? [];
  const lastStart = tensors.reduce((m, t) => Math.max(m, Number(t.fileOffset)), 0);
  if (tensors.length === 0 || size <= lastStart) {
    throw invalid(
      "truncated_gguf",
      `The model file is incomplete (${size} bytes; its tensors go past that). Copy it again.`,
    );
  }
  const insights = await GgufInsights.from(info, llama);
  if (!insights.isSupportedByLlamaCpp)
    throw invalid("unsupported_model", "llama.cpp does not support this model's architecture.");
  // Loading (memory-mapped, so cheap) is the check that the tensor data is all there.
  try {
    const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
    await model.dispose();
  } catch (err) {
    throw invalid(
      "truncated_gguf",
      `llama.cpp cannot load the model: ${(err as Error).message.split("\n")[0]}`,
    );
  }
  const md = info.metadata as { general?: { architecture?: string }; tokenizer?: { chat_template?: string } };
  return {
    architecture: md.general?.architecture ?? "unknown",
    parameterCount: Number(insights.totalParameters),
    quantization:
      GGML_TYPE_NAMES[insights.dominantTensorType as number] ?? String(insights.dominantTensorType),
    contextLength: insights.trainContextSize ?? 0,
    embeddingLength: insights.embeddingVectorSize ?? 0,
    hasChatTemplate: typeof md.tokenizer?.chat_template === "string",
    sizeBytes: size,
  };
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Presents a row of ai_models. */
export function presentModel(r: Record<string, unknown>): ModelRow {
  return {
    id: r.id as string,
    name: r.name as string,
    sha256: r.sha256 as string,
    roles: r.roles as ModelRole[],
    metadata: {
      architecture: r.architecture as string,
      parameterCount: Number(r.parameter_count ?? 0),
      quantization: (r.quantization as string) ?? "",
      contextLength: Number(r.context_length ?? 0),
      embeddingLength: Number(r.embedding_length ?? 0),
      hasChatTemplate: r.has_chat_template as boolean,
      sizeBytes: Number(r.size_bytes),
    },
    // A Date from a row, or already a string from JSON built in SQL.
    createdAt: new Date(r.created_at as Date | string).toISOString(),
  };
}

/**
 * Copies a GGUF file into the models folder (hashing it), checks it, and registers it for a role. The same file
 * again for another role adds that role to its model (one file, one copy, loaded once); for a role it already
 * has, 409.
 */
export async function importModel(
  knex: Knex,
  llama: Llama,
  config: Config,
  input: { file: string; name?: string; role: ModelRole },
): Promise<ModelRow> {
  const meta = await inspectModelFile(llama, input.file);
  const sha = await sha256Of(input.file);
  const existing = await knex("ai_models").where({ sha256: sha }).first();
  if (existing) {
    if ((existing.roles as ModelRole[]).includes(input.role))
      throw AppError.conflict(
        `This model is already registered as ${existing.name as string} for ${input.role}.`,
      );
    return setModelRoles(knex, existing.id as string, [...(existing.roles as ModelRole[]), input.role]);
  }
  mkdirSync(modelsDir(config), { recursive: true });
  const target = modelFile(config, sha);
  const tmp = `${target}.${process.pid}.tmp`;
  // Copied under a temporary name and renamed: a crash never leaves a half file under the real name.
  copyFileSync(input.file, tmp);
  renameSync(tmp, target);
  const name = input.name ?? path.basename(input.file).replace(/\.gguf$/i, "");
  try {
    const [row] = await knex("ai_models")
      .insert({
        name,
        sha256: sha,
        size_bytes: meta.sizeBytes,
        roles: [input.role],
        architecture: meta.architecture,
        parameter_count: meta.parameterCount,
        quantization: meta.quantization,
        context_length: meta.contextLength,
        embedding_length: meta.embeddingLength,
        has_chat_template: meta.hasChatTemplate,
      })
      .returning("*");
    return presentModel(row);
  } catch (err) {
    rmSync(target, { force: true });
    if ((err as { code?: string }).code === "23505")
      throw AppError.conflict(`A model named ${name} exists.`, { field: "name" });
    throw err;
  }
}

/** Sets what a model is used for (at least one role). */
export async function setModelRoles(
  db: Knex | Knex.Transaction,
  id: string,
  roles: ModelRole[],
): Promise<ModelRow> {
  const unique = MODEL_ROLES.filter((r) => roles.includes(r));
  if (!unique.length) throw AppError.badRequest("A model needs at least one role.");
  const [row] = await db("ai_models").where({ id }).update({ roles: unique }).returning("*");
  if (!row) throw AppError.notFound("No such model.");
  return presentModel(row);
}

/** Every registered model. */
export async function listModels(db: Knex | Knex.Transaction): Promise<ModelRow[]> {
  return ((await db("ai_models").select("*").orderBy("created_at")) as Record<string, unknown>[]).map(
    presentModel,
  );
}

/** Removes a model and its file. */
export async function removeModel(
  db: Knex | Knex.Transaction,
  config: Config,
  id: string,
): Promise<ModelRow> {
  const row = await db("ai_models").where({ id }).first();
  if (!row) throw AppError.notFound("No such model.");
  await db("ai_models").where({ id }).delete();
  rmSync(modelFile(config, row.sha256 as string), { force: true });
  return presentModel(row);
}

/** The organization's default chat and embedding models (falling back to the first of each role). */
export async function orgModels(
  trx: Knex.Transaction,
  orgId: string,
): Promise<{ chat?: ModelRow; embedding?: ModelRow }> {
  const all = await listModels(trx);
  const chosen = await trx("ai_org_models").where({ org_id: orgId }).first();
  const pick = (id: string | null | undefined, role: ModelRole) =>
    all.find((m) => m.id === id) ??
    all.find((m) => m.roles.includes(role)) ??
    (role === "embedding" ? all[0] : undefined);
  return {
    chat: pick(chosen?.chat_model_id as string | null, "chat"),
    embedding: pick(chosen?.embedding_model_id as string | null, "embedding"),
  };
}

/** The organization's chat model, or 409 no_model with what an administrator does about it. */
export async function requireChatModel(trx: Knex.Transaction, orgId: string): Promise<ModelRow> {
  const m = (await orgModels(trx, orgId)).chat;
  if (!m)
    throw new AppError(
      409,
      "no_model",
      "No chat model is installed. An administrator imports one with `worksynapse models import`.",
    );
  return m;
}

/** Sets the organization's default models. */
export async function setOrgModels(
  trx: Knex.Transaction,
  orgId: string,
  input: { chatModelId?: string | null; embeddingModelId?: string | null },
) {
  for (const id of [input.chatModelId, input.embeddingModelId]) {
    if (id && !(await trx("ai_models").where({ id }).first())) throw AppError.notFound("No such model.");
  }
  await trx("ai_org_models")
    .insert({
      org_id: orgId,
      chat_model_id: input.chatModelId ?? null,
      embedding_model_id: input.embeddingModelId ?? null,
    })
    .onConflict("org_id")
    .merge();
}
