import type { Client } from "./identity.js";
import type { TestServer } from "./server.js";

type Data<T> = { data: T };
/** A file to upload. */
export interface KbFile {
  name: string;
  data: Buffer | string;
}
/** A document as the collection listing shows it (the fields tests look at). */
export interface KbDoc {
  id: string;
  name: string;
  status: string;
  error: string | null;
  chunks: number;
}

/** Uploads files as multipart/form-data the way the browser does. */
export async function uploadFiles(srv: TestServer, c: Client, collection: string, files: KbFile[]) {
  const form = new FormData();
  for (const f of files)
    form.append("files", new Blob([typeof f.data === "string" ? f.data : new Uint8Array(f.data)]), f.name);
  return srv.fetch(`/api/kb/collections/${collection}/documents`, {
    method: "POST",
    headers: c.headers(),
    body: form,
  });
}

/** Uploads files that must be accepted; returns each file's outcome and document. */
export async function uploadFilesOk(srv: TestServer, c: Client, collection: string, files: KbFile[]) {
  const r = await uploadFiles(srv, c, collection, files);
  const text = await r.text();
  if (r.status !== 201) throw new Error(`upload: ${r.status} ${text}`);
  return (JSON.parse(text) as Data<{ name: string; outcome: string; document?: KbDoc }[]>).data;
}

/** Waits until every listed document has finished (indexed or failed). */
export async function settledDocs(c: Client, collection: string, ids: string[]): Promise<Map<string, KbDoc>> {
  const deadline = Date.now() + 40_000;
  for (;;) {
    const docs = (await c.json<Data<KbDoc[]>>("GET", `/api/kb/collections/${collection}/documents`)).data;
    const mine = docs.filter((d) => ids.includes(d.id));
    if (mine.length === ids.length && mine.every((d) => d.status === "indexed" || d.status === "failed"))
      return new Map(mine.map((d) => [d.id, d]));
    if (Date.now() > deadline) throw new Error(`not settled: ${JSON.stringify(mine)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
