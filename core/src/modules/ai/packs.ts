import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { copyFile, mkdir, readFile, readdir, rename, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type { Knex } from "knex";
import type { Llama } from "node-llama-cpp";
import { z } from "zod";
import type { Config } from "../../config/schema.js";
import { AppError } from "../../platform/http/errors.js";
import { SignatureError, signFile, verifyFile } from "../../platform/minisign.js";
import { importModel, inspectModelFile, type ModelRow } from "./models.service.js";

/**
 * Model packs: how a model travels to an air-gapped site. A pack is a folder `<name>.wsmodel/` holding the GGUF
 * file, `manifest.json` (name, role, licence, context length, the file's size and SHA-256) and
 * `manifest.json.minisig`, the manifest's minisign signature. The signature covers the manifest, the manifest
 * covers the file: a pack is imported only when a trusted key signed it and the file is the one it names.
 */

export const PACK_FORMAT = "worksynapse-model-pack/1";
export const PACK_SUFFIX = ".wsmodel";

export const packManifestSchema = z.strictObject({
  format: z.literal(PACK_FORMAT),
  name: z.string().trim().min(1).max(200),
  role: z.enum(["chat", "embedding"]),
  file: z.string().regex(/^[A-Za-z0-9._-]+\.gguf$/),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  sizeBytes: z.number().int().positive(),
  licence: z.string().trim().min(1).max(200),
  contextLength: z.number().int().positive(),
  architecture: z.string(),
  createdAt: z.string(),
});
export type PackManifest = z.infer<typeof packManifestSchema>;

async function sha256(file: string): Promise<string> {
  const h = createHash("sha256");
  await pipeline(createReadStream(file), h);
  return h.digest("hex");
}

/** Makes a signed pack of a GGUF file in `outDir`; returns its folder. */
export async function createPack(opts: {
  llama: Llama;
  gguf: string;
  name: string;
  role: "chat" | "embedding";
  licence: string;
  privatePem: string;
  outDir: string;
}): Promise<string> {
  const meta = await inspectModelFile(opts.llama, opts.gguf);
  const slug = opts.name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "model";
  const dir = path.join(opts.outDir, `${slug}${PACK_SUFFIX}`);
  if (existsSync(dir)) throw new Error(`${dir} exists`);
  const tmp = `${dir}.tmp-${process.pid}`;
  await mkdir(tmp, { recursive: true });
  const file = `${slug}.gguf`;
  await copyFile(opts.gguf, path.join(tmp, file));
  const manifest: PackManifest = {
    format: PACK_FORMAT,
    name: opts.name,
    role: opts.role,
    file,
    sha256: await sha256(path.join(tmp, file)),
    sizeBytes: (await stat(path.join(tmp, file))).size,
    licence: opts.licence,
    contextLength: meta.contextLength,
    architecture: meta.architecture,
    createdAt: new Date().toISOString(),
  };
  await writeFile(path.join(tmp, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  await writeFile(
    path.join(tmp, "manifest.json.minisig"),
    await signFile(
      path.join(tmp, "manifest.json"),
      opts.privatePem,
      `model pack ${opts.name} (${opts.role})`,
    ),
  );
  await rename(tmp, dir);
  return dir;
}

/** The public key lines trusted for packs, from the configuration and any given minisign.pub texts. */
export function trustedPackKeys(config: Config, extra: string[] = []): string[] {
  return [...config.ai.packKeys.map((k) => `untrusted comment: configured key\n${k}\n`), ...extra];
}

/**
 * Checks a pack: the manifest's signature by one of the trusted keys, its shape, and the file's size and
 * SHA-256. Throws a 4xx AppError saying what is wrong; returns the manifest and the GGUF path.
 */
export async function verifyPack(
  dir: string,
  keys: string[],
): Promise<{ manifest: PackManifest; file: string }> {
  const manifestFile = path.join(dir, "manifest.json");
  if (!existsSync(manifestFile))
    throw AppError.badRequest(`${path.basename(dir)} is not a model pack (no manifest.json).`);
  if (!existsSync(`${manifestFile}.minisig`))
    throw AppError.badRequest("The pack is not signed (no manifest.json.minisig).");
  if (keys.length === 0)
    throw AppError.conflict(
      "No key is trusted for model packs: set ai.packKeys (WORKSYNAPSE_AI_PACK_KEYS) first.",
    );
  const sig = await readFile(`${manifestFile}.minisig`, "utf8");
  let verified = false;
  let lastProblem = "";
  for (const key of keys) {
    try {
      await verifyFile(manifestFile, sig, key);
      verified = true;
      break;
    } catch (err) {
      if (!(err instanceof SignatureError)) throw err;
      lastProblem = err.message;
    }
  }
  if (!verified)
    throw new AppError(
      422,
      "pack_rejected",
      /another key/.test(lastProblem)
        ? "The pack is signed with a key this server does not trust."
        : "The pack's manifest does not match its signature: it was changed or damaged.",
    );
  let manifest: PackManifest;
  try {
    manifest = packManifestSchema.parse(JSON.parse(await readFile(manifestFile, "utf8")));
  } catch {
    throw new AppError(422, "pack_rejected", "The pack's manifest is not a WorkSynapse model-pack manifest.");
  }
  const file = path.join(dir, manifest.file);
  const st = await stat(file).catch(() => null);
  if (!st?.isFile())
    throw new AppError(422, "pack_rejected", `The pack lacks its model file ${manifest.file}.`);
  if (st.size !== manifest.sizeBytes || (await sha256(file)) !== manifest.sha256)
    throw new AppError(
      422,
      "pack_rejected",
      `${manifest.file} is not the file the signed manifest names: it was changed or damaged.`,
    );
  return { manifest, file };
}

/** Verifies a pack and registers its model (copied into the data directory, as `models import` does). */
export async function importPack(
  knex: Knex,
  llama: Llama,
  config: Config,
  dir: string,
  keys: string[],
): Promise<ModelRow> {
  const { manifest, file } = await verifyPack(dir, keys);
  return importModel(knex, llama, config, { file, name: manifest.name, role: manifest.role });
}

export const importDir = (config: Config) => config.ai.importDir ?? path.join(config.dataDir, "import");

/** The packs in the server's import folder, each with what a check of it found. */
export async function listImportablePacks(
  config: Config,
): Promise<{ folder: string; manifest: PackManifest | null; problem: string | null }[]> {
  const dir = importDir(config);
  if (!existsSync(dir)) return [];
  const out = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || !e.name.endsWith(PACK_SUFFIX)) continue;
    try {
      const { manifest } = await verifyPack(path.join(dir, e.name), trustedPackKeys(config));
      out.push({ folder: e.name, manifest, problem: null });
    } catch (err) {
      out.push({ folder: e.name, manifest: null, problem: (err as Error).message });
    }
  }
  return out.sort((a, b) => a.folder.localeCompare(b.folder));
}

/** A pack folder of the import folder by name, never a path outside it. */
export function packInImportDir(config: Config, folder: string): string {
  if (!/^[A-Za-z0-9._-]+\.wsmodel$/.test(folder) || folder.startsWith("."))
    throw AppError.badRequest("Give the name of a pack folder in the import folder.");
  const dir = path.join(importDir(config), folder);
  if (!existsSync(dir)) throw AppError.notFound(`No pack ${folder} in the import folder.`);
  return dir;
}
