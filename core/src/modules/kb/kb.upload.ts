import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import busboy from "busboy";
import type { Context } from "koa";
import type { Knex } from "knex";
import type { Caller } from "../../platform/auth/caller.js";
import { withOrg } from "../../platform/db/tenant.js";
import { AppError } from "../../platform/http/errors.js";
import { detectKind, FileRefused, MIME } from "./parse/detect.js";
import { documentDir, enqueueIndex, kbDir, presentDocument, type KbDeps } from "./kb.service.js";

/** A file received to a temporary place, fsynced, with its hash; or why it was refused. */
interface Received {
  name: string;
  tmp: string;
  size: number;
  sha256: string;
  tooLarge: boolean;
}

/** What happened to one file of an upload. */
export interface UploadResult {
  name: string;
  outcome: "queued" | "replaced" | "duplicate" | "refused";
  document?: ReturnType<typeof presentDocument>;
  error?: { code: string; message: string };
}

/** Counts and hashes bytes as they pass. */
class Meter extends Transform {
  readonly hash = createHash("sha256");
  bytes = 0;
  constructor(private readonly onBytes: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes(chunk.length);
    cb(null, chunk);
  }
}

const fsyncDir = async (dir: string) => {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
};

/** Receives a multipart upload: each file streamed to a temp file, hashed on the way, and fsynced. */
async function receive(ctx: Context, deps: KbDeps): Promise<Received[]> {
  const limits = deps.config.kb;
  const type = ctx.get("content-type");
  if (!/^multipart\/form-data/i.test(type))
    throw new AppError(415, "unsupported_media_type", "Upload files as multipart/form-data.");
  const declared = Number(ctx.get("content-length") || 0);
  if (declared > limits.maxUploadBytes)
    throw new AppError(413, "upload_too_large", `An upload may hold at most ${limits.maxUploadBytes} bytes.`);
  const tmpDir = path.join(kbDir(deps.config), "tmp");
  await mkdir(tmpDir, { recursive: true });
  const files: Received[] = [];
  const writes: Promise<void>[] = [];
  let total = 0;
  let tooMany = false;
  try {
    await new Promise<void>((resolve, reject) => {
      let bb: busboy.Busboy;
      try {
        bb = busboy({
          headers: ctx.req.headers,
          limits: {
            files: limits.maxFilesPerUpload,
            fileSize: limits.maxFileBytes,
            fields: 10,
            parts: limits.maxFilesPerUpload + 10,
          },
        });
      } catch {
        reject(AppError.badRequest("The upload is not valid multipart/form-data."));
        return;
      }
      bb.on("file", (_field, stream, info) => {
        const name = path.basename(info.filename || "unnamed").slice(0, 255);
        const rec: Received = {
          name,
          tmp: path.join(tmpDir, randomUUID()),
          size: 0,
          sha256: "",
          tooLarge: false,
        };
        files.push(rec);
        const meter = new Meter((n) => {
          total += n;
          if (total > limits.maxUploadBytes) {
            ctx.req.unpipe(bb);
            stream.destroy();
            reject(
              new AppError(
                413,
                "upload_too_large",
                `An upload may hold at most ${limits.maxUploadBytes} bytes.`,
              ),
            );
          }
        });
        stream.on("limit", () => (rec.tooLarge = true));
        // The pipe is set up at once: a listener added later would miss data already flowing.
        writes.push(
          pipeline(stream, meter, createWriteStream(rec.tmp, { mode: 0o600 })).then(async () => {
            const fh = await open(rec.tmp, "r+");
            try {
              await fh.sync();
            } finally {
              await fh.close();
            }
            rec.size = meter.bytes;
            rec.sha256 = meter.hash.digest("hex");
          }),
        );
      });
      bb.on("filesLimit", () => (tooMany = true));
      bb.on("error", () => reject(AppError.badRequest("The upload is not valid multipart/form-data.")));
      bb.on("close", () => resolve());
      ctx.req.on("aborted", () => reject(AppError.badRequest("The upload was interrupted.")));
      ctx.req.pipe(bb);
    });
    await Promise.all(writes);
  } catch (err) {
    // Streams cut off mid-file end their pipelines with an error; never wait long for them.
    await Promise.race([Promise.allSettled(writes), new Promise((r) => setTimeout(r, 5000))]);
    await Promise.all(files.map((f) => rm(f.tmp, { force: true })));
    throw err;
  }
  if (tooMany) {
    await Promise.all(files.map((f) => rm(f.tmp, { force: true })));
    throw AppError.badRequest(`An upload may hold at most ${limits.maxFilesPerUpload} files.`);
  }
  if (!files.length) throw AppError.badRequest("The upload holds no file.");
  return files;
}

/**
 * Stores uploaded documents in a collection the caller manages. Each file is written to a temp file,
 * fsynced, checked (type from its bytes against its extension, size, emptiness), renamed into place, and
 * only then is its row committed with the ingestion job (outbox). The same content twice in a collection
 * is reported as a duplicate; a new file with the name of an existing document replaces it.
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
      results.push({ name: f.name, outcome: "refused", error: { code: err.code, message: err.message } });
    } finally {
      await rm(f.tmp, { force: true });
    }
  }
  return results;
}

async function store(knex: Knex, caller: Caller, deps: KbDeps, collectionId: string, f: Received) {
  const max = deps.config.kb.maxFileBytes;
  if (f.tooLarge)
    throw new FileRefused("file_too_large", `${f.name} is larger than ${Math.round(max / 1048576)} MB.`);
  const kind = await detectKind(f.tmp, f.name, (await stat(f.tmp)).size);
  const existing = await withOrg(knex, caller.orgId, async (trx) => ({
    same: await trx("kb_documents").where({ collection_id: collectionId, sha256: f.sha256 }).first(),
    named: await trx("kb_documents").where({ collection_id: collectionId, name: f.name }).first(),
  }));
  if (existing.same)
    return { name: f.name, outcome: "duplicate" as const, document: presentDocument(existing.same) };
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
        name: f.name,
        outcome: existing.named ? ("replaced" as const) : ("queued" as const),
        document: presentDocument(row),
      };
    });
  } catch (err) {
    // The row did not commit: the file must not stay (unless it is the content of the document being replaced).
    if (!existing.named) await rm(dir, { recursive: true, force: true });
    if ((err as { code?: string }).code === "23505") return { name: f.name, outcome: "duplicate" as const };
    throw err;
  }
}
