// Streamed multipart uploads: each file goes to a temp file, hashed on the way and fsynced, within limits.
// The knowledge base and chat attachments both receive files through this one path.
import { createHash, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, open, rm } from "node:fs/promises";
import path from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import busboy from "busboy";
import type { Context } from "koa";
import { AppError } from "./errors.js";

/** A file received to a temporary place, fsynced, with its hash and whether it passed the per-file limit. */
export interface Received {
  /** The file's name (the last segment of its path). */
  name: string;
  /** The relative path it was sent with (a folder upload: `guides/install/index.md`), else its name. */
  path: string;
  tmp: string;
  size: number;
  sha256: string;
  tooLarge: boolean;
}

/** The limits of one upload request. */
export interface UploadLimits {
  maxUploadBytes: number;
  maxFileBytes: number;
  maxFiles: number;
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

/**
 * 413 for an upload past the request limit. The connection closes after the answer, so the rest of the body is
 * never read (Node would otherwise read it to the end to keep the connection).
 */
const tooLarge = (max: number) =>
  new AppError(
    413,
    "upload_too_large",
    `An upload may hold at most ${max} bytes (${formatMegabytes(max)}).`,
    { limit: max },
    { Connection: "close" },
  );

/** A byte count as people read a size limit: "50 MB". */
export const formatMegabytes = (bytes: number) => `${Math.round((bytes / 1048576) * 10) / 10} MB`;

/** Longest stored file name, in UTF-8 bytes (what file systems and archive formats allow). */
const MAX_NAME_BYTES = 255;

/**
 * A file name as stored and shown: the last path segment, NFC (as macOS's NFD names look elsewhere), without
 * control or format characters, at most 255 UTF-8 bytes with its extension kept when it must be shortened.
 */
export function cleanFileName(raw: string | undefined): string {
  let name = (raw ?? "")
    .normalize("NFC")
    .replace(/[\p{Cc}\p{Cf}]/gu, "")
    .split(/[/\\]/)
    .pop()
    ?.trim();
  if (!name || name === "." || name === "..") name = "unnamed";
  if (Buffer.byteLength(name) <= MAX_NAME_BYTES) return name;
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : "";
  const stem = [...name.slice(0, name.length - ext.length)];
  // Shortened by whole characters (never half a UTF-8 sequence or a surrogate pair).
  while (stem.length && Buffer.byteLength(stem.join("") + "…" + ext) > MAX_NAME_BYTES) stem.pop();
  return stem.join("") + "…" + ext;
}

/** Deepest folder path kept, and its length in UTF-8 bytes. */
const MAX_PATH_SEGMENTS = 32;
const MAX_PATH_BYTES = 1024;

/**
 * A relative path as sent by a folder upload, as stored and shown: each segment cleaned as a file name, empty,
 * `.` and `..` segments dropped (a path is a label here, never a place on disk), `/` between segments, at most
 * 32 segments and 1,024 bytes (the innermost kept).
 */
export function cleanFilePath(raw: string | undefined): string {
  const segments = (raw ?? "")
    .split(/[/\\]/)
    .map((s) =>
      s
        .normalize("NFC")
        .replace(/[\p{Cc}\p{Cf}]/gu, "")
        .trim(),
    )
    .filter((s) => s && s !== "." && s !== "..")
    .map((s) => cleanFileName(s));
  let kept = segments.slice(-MAX_PATH_SEGMENTS);
  while (kept.length > 1 && Buffer.byteLength(kept.join("/")) > MAX_PATH_BYTES) kept = kept.slice(1);
  return kept.join("/") || cleanFileName(raw);
}

/** fsyncs a directory, so a rename into it survives a crash. */
export const fsyncDir = async (dir: string) => {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
};

/**
 * Receives a multipart upload into `tmpDir`: 415 unless multipart, 413 past the request's limit (declared or
 * counted), 400 for too many files, none, or a malformed or interrupted body. Nothing is left behind on error.
 */
export async function receiveFiles(
  ctx: Context,
  tmpDir: string,
  limits: UploadLimits,
  /** Filled with the request's text fields (each cut to 10,000 characters), when given. */
  fields?: Record<string, string>,
): Promise<Received[]> {
  const type = ctx.get("content-type");
  if (!/^multipart\/form-data/i.test(type))
    throw new AppError(415, "unsupported_media_type", "Upload files as multipart/form-data.");
  const declared = Number(ctx.get("content-length") || 0);
  if (declared > limits.maxUploadBytes) throw tooLarge(limits.maxUploadBytes);
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
          // Browsers send file names as raw UTF-8 in filename="..." (busboy reads latin1 by default);
          // filename*=UTF-8''... (RFC 5987) is decoded as it says.
          defParamCharset: "utf8",
          // The relative path of a folder upload is kept (cleanFilePath); names are cut to their last segment.
          preservePath: true,
          limits: {
            files: limits.maxFiles,
            // One byte past the limit: a file of exactly the limit is allowed ("at most N bytes").
            fileSize: limits.maxFileBytes + 1,
            fields: 10,
            parts: limits.maxFiles + 10,
          },
        });
      } catch {
        reject(AppError.badRequest("The upload is not valid multipart/form-data."));
        return;
      }
      bb.on("file", (_field, stream, info) => {
        const name = cleanFileName(info.filename);
        const rec: Received = {
          name,
          path: cleanFilePath(info.filename),
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
            reject(tooLarge(limits.maxUploadBytes));
          }
        });
        stream.on("limit", () => (rec.tooLarge = true));
        // The pipe is set up at once: a listener added later would miss data already flowing.
        const write = pipeline(stream, meter, createWriteStream(rec.tmp, { mode: 0o600 })).then(async () => {
          const fh = await open(rec.tmp, "r+");
          try {
            await fh.sync();
          } finally {
            await fh.close();
          }
          rec.size = meter.bytes;
          rec.sha256 = meter.hash.digest("hex");
        });
        // A write that fails (a full disk) ends the upload at once; handled here, so its rejection is never
        // left unhandled (which would end the process) while the rest of the body is still arriving.
        write.catch((err: unknown) => {
          ctx.req.unpipe(bb);
          reject(err);
        });
        writes.push(write);
      });
      bb.on("field", (name, value) => {
        if (fields) fields[name.slice(0, 100)] = value.slice(0, 10_000);
      });
      bb.on("filesLimit", () => (tooMany = true));
      bb.on("error", () => reject(AppError.badRequest("The upload is not valid multipart/form-data.")));
      bb.on("close", () => resolve());
      ctx.req.on("aborted", () => reject(AppError.badRequest("The upload was interrupted.")));
      ctx.req.pipe(bb);
    });
    await Promise.all(writes);
  } catch (err) {
    // An answer given before the body was read to its end (a full disk, a cut-off part) closes the connection:
    // a client that reused it would have its next request read as the rest of this body, or reset.
    if (!ctx.req.complete) ctx.set("Connection", "close");
    // Streams cut off mid-file end their pipelines with an error; never wait long for them.
    await Promise.race([Promise.allSettled(writes), new Promise((r) => setTimeout(r, 5000))]);
    await Promise.all(files.map((f) => rm(f.tmp, { force: true })));
    throw err;
  }
  if (tooMany) {
    await Promise.all(files.map((f) => rm(f.tmp, { force: true })));
    throw AppError.badRequest(`An upload may hold at most ${limits.maxFiles} files.`);
  }
  if (!files.length) throw AppError.badRequest("The upload holds no file.");
  return files;
}

/** A stored file sent as a download: never rendered as a page of ours, whatever it contains. */
export function sendDownload(ctx: Context, f: { path: string; name: string; mime: string; size: number }) {
  ctx.type = f.mime;
  ctx.length = f.size;
  ctx.attachment(f.name);
  ctx.set("Content-Security-Policy", "sandbox; default-src 'none'");
  return createReadStream(f.path);
}
