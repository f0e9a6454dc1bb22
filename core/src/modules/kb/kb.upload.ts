import { randomUUID } from "node:crypto";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Context } from "koa";
import type { Knex } from "knex";
import type { Caller } from "../../platform/auth/caller.js";
import { withOrg } from "../../platform/db/tenant.js";
import { AppError } from "../../platform/http/errors.js";
import { formatMegabytes, fsyncDir, receiveFiles, type Received } from "../../platform/http/uploads.js";
import { detectKind, FileRefused, MIME } from "./parse/detect.js";
import { documentDir, enqueueIndex, kbDir, presentDocument, type KbDeps } from "./kb.service.js";

/** What happened to one file of an upload. */
export interface UploadResult {
  name: string;
  outcome: "queued" | "replaced" | "duplicate" | "refused";
  document?: ReturnType<typeof presentDocument>;
  error?: { code: string; message: string };
}

const receive = (ctx: Context, deps: KbDeps) =>
  receiveFiles(ctx, path.join(kbDir(deps.config), "tmp"), {
    maxUploadBytes: deps.config.kb.maxUploadBytes,
    maxFileBytes: deps.config.kb.maxFileBytes,
    maxFiles: deps.config.kb.maxFilesPerUpload,
  });

/**
 * Stores uploaded documents in a collection the caller manages. Each file is written to a temp file,
 * fsynced, checked (type from its bytes against its extension, size, emptiness), renamed into place, and
 * only then is its row committed with the ingestion job (outbox). The same content twice in a collection
 * is reported as a duplicate; a file with the path of an existing document (its name, or its relative path in
 * a folder upload) replaces it.
 */
export async function upload(
  ctx: Context,
  knex: Knex,
  caller: Caller,
  deps: KbDeps,
  collectionId: string,
): Promise<UploadResult[]> {
  const files = await receive(ctx, deps);
  const results: UploadResult[] = [];
  for (const f of files) {
    try {
      results.push(await store(knex, caller, deps, collectionId, f));
    } catch (err) {
      if (!(err instanceof FileRefused)) throw err;
      results.push({ name: f.path, outcome: "refused", error: { code: err.code, message: err.message } });
    } finally {
      await rm(f.tmp, { force: true });
    }
  }
  return results;
}

async function store(knex: Knex, caller: Caller, deps: KbDeps, collectionId: string, f: Received) {
  const max = deps.config.kb.maxFileBytes;
  if (f.tooLarge)
    throw new FileRefused("file_too_large", `${f.name} is larger than ${formatMegabytes(max)}.`);
  const kind = await detectKind(f.tmp, f.name, (await stat(f.tmp)).size);
  const existing = await withOrg(knex, caller.orgId, async (trx) => ({
    same: await trx("kb_documents").where({ collection_id: collectionId, sha256: f.sha256 }).first(),
    named: await trx("kb_documents").where({ collection_id: collectionId, path: f.path }).first(),
  }));
  if (existing.same)
    return { name: f.path, outcome: "duplicate" as const, document: presentDocument(existing.same) };
  const id = (existing.named?.id as string | undefined) ?? randomUUID();
  const dir = documentDir(deps.config, caller.orgId, id);
  await mkdir(dir, { recursive: true });
  const final = path.join(dir, f.sha256);
  await rename(f.tmp, final);
  await fsyncDir(dir);
  try {
    return await withOrg(knex, caller.orgId, async (trx) => {
      const base = {
        name: f.name,
        path: f.path,
        kind,
        mime: MIME[kind],
        size_bytes: f.size,
        sha256: f.sha256,
        status: "queued",
        progress: 0,
        error: null,
        updated_at: trx.fn.now(),
      };
      let row;
      if (existing.named) {
        [row] = await trx("kb_documents")
          .where({ id })
          .update({ ...base, generation: trx.raw("generation + 1") })
          .returning("*");
      } else {
        [row] = await trx("kb_documents")
          .insert({
            ...base,
            id,
            org_id: caller.orgId,
            collection_id: collectionId,
            uploaded_by: caller.userId,
          })
          .returning("*");
      }
      if (!row) throw AppError.conflict("The document was deleted while it was being replaced.");
      await enqueueIndex({ caller, trx }, deps, id, row.generation as number, "upload");
      return {
        name: f.path,
        outcome: existing.named ? ("replaced" as const) : ("queued" as const),
        document: presentDocument(row),
      };
    });
  } catch (err) {
    // The row did not commit: the file must not stay (unless it is the content of the document being replaced).
    if (!existing.named) await rm(dir, { recursive: true, force: true });
    if ((err as { code?: string }).code === "23505") return { name: f.path, outcome: "duplicate" as const };
    throw err;
  }
}
