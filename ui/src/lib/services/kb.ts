import { ApiError } from "$lib/api/client";
import type { components } from "$lib/api/schema";
import { t } from "$lib/i18n";

/** A document with its ingestion status. */
export type KbDocument = components["schemas"]["KbDocument"];
/** What happened to one uploaded file. */
export type KbUploadResult = components["schemas"]["KbUploadResult"];
/** A progress message of the ingestion. */
export interface KbProgress {
  documentId: string;
  collectionId: string;
  status: KbDocument["status"];
  progress: number;
  error: string | null;
}

/** A file to upload and the relative path it keeps (a folder upload), else its name. */
export interface UploadItem {
  file: File;
  path: string;
}

/** Picked files: their paths are the folder picker's relative paths, else their names. */
export const picked = (files: Iterable<File>): UploadItem[] =>
  [...files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));

/** The files of a drop, folders walked with their relative paths (a dropped folder is not a file). */
export async function dropped(data: DataTransfer): Promise<UploadItem[]> {
  const entries = [...data.items]
    .map((i) => i.webkitGetAsEntry?.())
    .filter((e): e is FileSystemEntry => Boolean(e));
  if (!entries.length) return picked(data.files);
  const out: UploadItem[] = [];
  const walk = async (entry: FileSystemEntry, prefix: string): Promise<void> => {
    if (entry.isFile) {
      const file = await new Promise<File>((resolve, reject) =>
        (entry as FileSystemFileEntry).file(resolve, reject),
      );
      out.push({ file, path: prefix + entry.name });
    } else if (entry.isDirectory) {
      const reader = (entry as FileSystemDirectoryEntry).createReader();
      // readEntries gives a batch at a time, an empty one at the end.
      for (;;) {
        const batch = await new Promise<FileSystemEntry[]>((resolve, reject) =>
          reader.readEntries(resolve, reject),
        );
        if (!batch.length) break;
        for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const e of entries) await walk(e, "");
  return out;
}

/**
 * Uploads files with progress. The one call that does not go through the generated client: fetch cannot
 * report upload progress, XMLHttpRequest can. It sends the same CSRF header as the client. Each file's name
 * in the form is its relative path, which the server keeps (documents are identified by path).
 */
export function uploadFiles(
  collectionId: string,
  files: UploadItem[],
  onProgress: (fraction: number) => void,
): Promise<KbUploadResult[]> {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const f of files) form.append("files", f.file, f.path);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/kb/collections/${encodeURIComponent(collectionId)}/documents`);
    xhr.setRequestHeader("x-requested-with", "worksynapse");
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new TypeError("network"));
    xhr.onload = () => {
      const body = xhr.response as {
        data?: KbUploadResult[];
        error?: { code: string; message: string; details?: unknown };
      };
      if (xhr.status === 201 && body?.data) resolve(body.data);
      else
        reject(
          new ApiError(
            xhr.status,
            body?.error?.code ?? `http_${xhr.status}`,
            body?.error?.message ?? t("error.unexpected"),
            body?.error?.details,
          ),
        );
    };
    xhr.send(form);
  });
}

/** Listens to ingestion progress (the browser reconnects by itself); returns the function that stops. */
export function onKbProgress(handler: (p: KbProgress) => void): () => void {
  const source = new EventSource("/api/kb/events");
  source.addEventListener("progress", (e) =>
    handler(JSON.parse((e as MessageEvent<string>).data) as KbProgress),
  );
  return () => source.close();
}

/** Human-readable size. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
