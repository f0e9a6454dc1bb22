import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import yauzl from "yauzl";
import type { Context } from "koa";
import type { Knex } from "knex";
import type { Caller } from "../../platform/auth/caller.js";
import { withOrg } from "../../platform/db/tenant.js";
import { AppError } from "../../platform/http/errors.js";
import {
  cleanFileName,
  cleanFilePath,
  formatMegabytes,
  fsyncDir,
  receiveFiles,
  type Received,
} from "../../platform/http/uploads.js";
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
  const one = async (f: Received) => {
    try {
      results.push(await store(knex, caller, deps, collectionId, f));
    } catch (err) {
      if (!(err instanceof FileRefused)) throw err;
      results.push({ name: f.path, outcome: "refused", error: { code: err.code, message: err.message } });
    } finally {
      await rm(f.tmp, { force: true });
    }
  };
  try {
    for (const f of files) {
      if (!/\.zip$/i.test(f.name)) {
        await one(f);
        continue;
      }
      // An archive: each file in it is uploaded with its path in the archive (a folder, zipped).
      try {
        await unzipEach(f, deps, one);
      } catch (err) {
        if (!(err instanceof FileRefused)) throw err;
        results.push({ name: f.path, outcome: "refused", error: { code: err.code, message: err.message } });
      }
    }
  } finally {
    for (const f of files) await rm(f.tmp, { force: true });
  }
  return results;
}

/**
 * Hands each file of a zip archive to `each` as a received file, with its path in the archive (cleaned: `..`
 * dropped, so nothing is ever written by it). Checked as a possible bomb, as DOCX files are: at most
 * `kb.zipMaxEntries` entries and `kb.maxUploadBytes` unpacked in all (sizes as they unpack, not as declared),
 * each file at most `kb.maxFileBytes` (larger ones are refused one by one). Folders and links are skipped.
 */
async function unzipEach(
  zipFile: Received,
  deps: KbDeps,
  each: (f: Received) => Promise<void>,
): Promise<void> {
  const { zipMaxEntries, maxUploadBytes, maxFileBytes } = deps.config.kb;
  const notZip = () => new FileRefused("not_zip", `${zipFile.name} is not a readable zip archive.`);
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    // Names are decoded here (decodeStrings off): yauzl would end the whole archive at a `../` name, which is
    // only a label here (cleanFilePath drops it).
    yauzl.open(
      zipFile.tmp,
      { lazyEntries: true, validateEntrySizes: true, decodeStrings: false },
      (err, z) => (err || !z ? reject(notZip()) : resolve(z)),
    ),
  );
  try {
    if (zip.entryCount > zipMaxEntries)
      throw new FileRefused(
        "zip_too_many_entries",
        `${zipFile.name} holds ${zip.entryCount} entries; at most ${zipMaxEntries} are accepted.`,
      );
    let total = 0;
    for (;;) {
      const entry = await new Promise<yauzl.Entry | null>((resolve, reject) => {
        zip.once("entry", resolve);
        zip.once("end", () => resolve(null));
        zip.once("error", () => reject(notZip()));
        zip.readEntry();
      });
      zip.removeAllListeners("entry").removeAllListeners("end").removeAllListeners("error");
      if (!entry) break;
      const raw = entry.fileName as unknown as Buffer;
      // UTF-8 when the archive says so (general purpose flag bit 11), else the old DOS code page, read as Latin-1.
      const fileName = raw.toString(entry.generalPurposeBitFlag & 0x800 ? "utf8" : "latin1");
      const mode = (entry.externalFileAttributes >>> 16) & 0o170000;
      if (fileName.endsWith("/") || mode === 0o040000 || mode === 0o120000) continue;
      const rec: Received = {
        name: cleanFileName(fileName),
        path: cleanFilePath(fileName),
        tmp: path.join(path.dirname(zipFile.tmp), randomUUID()),
        size: 0,
        sha256: "",
        tooLarge: false,
      };
      const stream = await new Promise<NodeJS.ReadableStream>((resolve, reject) =>
        zip.openReadStream(entry, (err, r) => (err || !r ? reject(notZip()) : resolve(r))),
      );
      const hash = createHash("sha256");
      let size = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          size += chunk.length;
          total += chunk.length;
          if (total > maxUploadBytes)
            return done(
              new FileRefused(
                "zip_too_large",
                `${zipFile.name} unpacks to more than ${formatMegabytes(maxUploadBytes)}; it is refused as a possible zip bomb.`,
              ),
            );
          // Past the per-file limit the rest is read (for the total) but not kept: this file is refused.
          if (size > maxFileBytes) {
            rec.tooLarge = true;
            return done();
          }
          hash.update(chunk);
          done(null, chunk);
        },
      });
      try {
        await pipeline(stream, meter, createWriteStream(rec.tmp, { mode: 0o600 }));
      } catch (err) {
        await rm(rec.tmp, { force: true });
        throw err instanceof FileRefused ? err : notZip();
      }
      const fh = await open(rec.tmp, "r+");
      await fh.sync().finally(() => fh.close());
      rec.size = size;
      rec.sha256 = hash.digest("hex");
      await each(rec);
    }
  } finally {
    zip.close();
  }
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
