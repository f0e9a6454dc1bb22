import { open } from "node:fs/promises";
import { fileTypeFromFile } from "file-type";
import type { Kind } from "./extract.js";

/** The extensions accepted, by format. */
export const EXTENSIONS: Record<string, Kind> = {
  pdf: "pdf",
  docx: "docx",
  txt: "txt",
  text: "txt",
  md: "md",
  markdown: "md",
  html: "html",
  htm: "html",
  csv: "csv",
};

/** The MIME type a format is stored and served with. */
export const MIME: Record<Kind, string> = {
  pdf: "application/pdf",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  txt: "text/plain; charset=utf-8",
  md: "text/markdown; charset=utf-8",
  html: "text/html; charset=utf-8",
  csv: "text/csv; charset=utf-8",
};

/** Why a file was refused at upload. */
export class FileRefused extends Error {
  constructor(
    readonly code:
      | "unsupported_type"
      | "type_mismatch"
      | "empty_file"
      | "file_too_large"
      | "not_zip"
      | "zip_too_many_entries"
      | "zip_too_large",
    message: string,
  ) {
    super(message);
  }
}

/** The extension of a file name, lowercased, or "". */
export const extensionOf = (name: string) => /\.([a-z0-9]+)$/i.exec(name)?.[1]?.toLowerCase() ?? "";

/** True when the start of a file is UTF-8 text (no NUL bytes, valid encoding up to a possibly cut last character). */
function looksLikeText(head: Buffer): boolean {
  if (head.includes(0)) return false;
  // A multi-byte character may be cut at the end of the sample: drop up to 3 trailing bytes of one.
  let end = head.length;
  for (let i = 1; i <= 3 && end - i >= 0; i++) {
    const b = head[end - i] as number;
    if ((b & 0xc0) === 0xc0) {
      end -= i;
      break;
    }
    if ((b & 0x80) === 0) break;
  }
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(head.subarray(0, end));
    return true;
  } catch {
    return false;
  }
}

/**
 * Decides a stored file's format from its bytes and checks it against the name's extension: a PDF must
 * start like a PDF, a DOCX must be a Word zip, text formats must be UTF-8 text with no binary signature.
 */
export async function detectKind(file: string, name: string, size: number): Promise<Kind> {
  const ext = extensionOf(name);
  const kind = EXTENSIONS[ext];
  if (!kind)
    throw new FileRefused(
      "unsupported_type",
      `${name}: only PDF, DOCX, TXT, Markdown, HTML and CSV files are accepted.`,
    );
  if (size === 0) throw new FileRefused("empty_file", `${name} is empty.`);
  const detected = await fileTypeFromFile(file);
  const lie = () =>
    new FileRefused(
      "type_mismatch",
      `${name}: the file's content is ${detected ? detected.ext.toUpperCase() : "not"} ${detected ? "" : kind.toUpperCase()}, not what its .${ext} extension says.`.replace(
        /\s+/g,
        " ",
      ),
    );
  if (kind === "pdf" || kind === "docx") {
    if (detected?.ext !== kind) throw lie();
    return kind;
  }
  if (detected && !["xml", "html"].includes(detected.ext)) throw lie();
  const fh = await open(file, "r");
  try {
    const head = Buffer.alloc(Math.min(size, 64 * 1024));
    await fh.read(head, 0, head.length, 0);
    if (!looksLikeText(head)) throw lie();
  } finally {
    await fh.close();
  }
  return kind;
}
