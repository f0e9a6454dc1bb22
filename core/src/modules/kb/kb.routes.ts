import type { Knex } from "knex";
import { z } from "zod";
import { afterCommit, dataOf, type Api } from "../../platform/http/api.js";
import type { Bus } from "../../platform/bus/bus.js";
import { withOrg } from "../../platform/db/tenant.js";
import { AppError } from "../../platform/http/errors.js";
import { openEventStream } from "../../platform/http/sse.js";
import { progressSubject, type KbProgress } from "./kb.events.js";
import * as kb from "./kb.service.js";
import * as s from "./kb.schemas.js";
import { upload } from "./kb.upload.js";

const tags = ["kb"];

/** What the knowledge-base routes need. */
export interface KbRouteDeps extends kb.KbDeps {
  knex: Knex | null;
  bus: Bus | null;
}

/** Registers collections, documents, upload, search and progress routes. */
export function registerKbRoutes(api: Api, deps: KbRouteDeps): void {
  const guesses = new kb.SearchGuesses();
  const knex = () => {
    if (!deps.knex) throw AppError.unavailable("The knowledge base needs a database.");
    return deps.knex;
  };

  api.route({
    method: "get",
    path: "/api/kb/collections",
    operationId: "listKbCollections",
    summary: "Collections the caller may read",
    tags,
    permission: "kb.read",
    response: dataOf(z.array(s.collectionSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await kb.listCollections(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/kb/collections",
    operationId: "createKbCollection",
    summary: "Create a collection",
    tags,
    permission: "kb.write",
    body: s.createCollectionBody,
    status: 201,
    response: dataOf(s.collectionDetailSchema),
    errors: [409],
    handler: async (_ctx, { body }, scope) => ({ data: await kb.createCollection(scope, body) }),
  });
  api.route({
    method: "get",
    path: "/api/kb/collections/:id",
    operationId: "getKbCollection",
    summary: "One collection with its shares",
    tags,
    permission: "kb.read",
    params: s.idParams,
    response: dataOf(s.collectionDetailSchema),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await kb.getCollection(scope, params.id) }),
  });
  api.route({
    method: "patch",
    path: "/api/kb/collections/:id",
    operationId: "updateKbCollection",
    summary: "Rename or describe a collection (managers)",
    tags,
    permission: "kb.write",
    params: s.idParams,
    body: s.updateCollectionBody,
    response: dataOf(s.collectionDetailSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await kb.updateCollection(scope, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/kb/collections/:id",
    operationId: "deleteKbCollection",
    summary: "Delete a collection and its documents (owner)",
    tags,
    permission: "kb.write",
    params: s.idParams,
    status: 204,
    errors: [403, 404],
    handler: async (_ctx, { params }, scope) => kb.deleteCollection(scope, deps, params.id),
  });
  api.route({
    method: "put",
    path: "/api/kb/collections/:id/shares",
    operationId: "setKbCollectionShares",
    summary: "Replace who may read (view) or manage a collection: users, groups, roles",
    tags,
    permission: "kb.write",
    params: s.idParams,
    body: s.setSharesBody,
    response: dataOf(z.array(s.kbShareSchema)),
    errors: [403, 404],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await kb.setShares(scope, params.id, body.shares),
    }),
  });
  api.route({
    method: "get",
    path: "/api/kb/collections/:id/documents",
    operationId: "listKbDocuments",
    summary: "Documents of a collection with their ingestion status",
    tags,
    permission: "kb.read",
    params: s.idParams,
    response: dataOf(z.array(s.documentSchema)),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await kb.listDocuments(scope, params.id) }),
  });
  api.route({
    method: "post",
    path: "/api/kb/collections/:id/documents",
    operationId: "uploadKbDocuments",
    summary:
      "Upload documents (multipart/form-data, field `files`): PDF, DOCX, TXT, Markdown, HTML, CSV. Each is queued for ingestion",
    tags,
    permission: "kb.write",
    params: s.idParams,
    multipart: s.uploadBody,
    status: 201,
    response: dataOf(z.array(s.uploadResultSchema)),
    errors: [403, 404, 413, 415],
    handler: async (ctx, { params }, scope) => {
      await kb.getCollection(scope, params.id).then((c) => {
        if (c.access === "view")
          throw AppError.forbidden("You can read this collection but not upload to it.");
      });
      // The body is streamed to disk after the permission check's transaction has committed.
      return afterCommit(async () => {
        const results = await upload(ctx, knex(), scope.caller, deps, params.id);
        const refused = results.filter((r) => r.outcome === "refused");
        if (refused.length === results.length) {
          const first = refused[0]?.error;
          const status = first?.code === "file_too_large" ? 413 : 400;
          throw new AppError(status, first?.code ?? "refused", first?.message ?? "Refused.", {
            files: results,
          });
        }
        return { data: results };
      });
    },
  });
  api.route({
    method: "get",
    path: "/api/kb/documents/:id",
    operationId: "getKbDocument",
    summary: "One document with its chunks (text, page, heading)",
    tags,
    permission: "kb.read",
    params: s.idParams,
    response: dataOf(s.documentDetailSchema),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await kb.getDocument(scope, deps, params.id) }),
  });
  api.route({
    method: "get",
    path: "/api/kb/documents/:id/file",
    operationId: "downloadKbDocument",
    summary: "The document's original file",
    tags,
    permission: "kb.read",
    params: s.idParams,
    responseType: "application/octet-stream",
    response: z.string().meta({ format: "binary" }),
    errors: [404],
    handler: async (ctx, { params }, scope) => {
      const f = await kb.documentFile(scope, deps, params.id);
      ctx.type = f.mime;
      ctx.length = f.size;
      ctx.attachment(f.name);
      return f.stream();
    },
  });
  api.route({
    method: "delete",
    path: "/api/kb/documents/:id",
    operationId: "deleteKbDocument",
    summary: "Delete a document: its file, row and chunks",
    tags,
    permission: "kb.write",
    params: s.idParams,
    status: 204,
    errors: [403, 404],
    handler: async (_ctx, { params }, scope) => kb.deleteDocument(scope, deps, params.id),
  });
  api.route({
    method: "post",
    path: "/api/kb/documents/:id/retry",
    operationId: "retryKbDocument",
    summary: "Ingest a document again",
    tags,
    permission: "kb.write",
    params: s.idParams,
    response: dataOf(s.documentSchema),
    errors: [403, 404],
    handler: async (_ctx, { params }, scope) => ({ data: await kb.retryDocument(scope, deps, params.id) }),
  });
  api.route({
    method: "post",
    path: "/api/kb/search",
    operationId: "searchKb",
    summary:
      "Hybrid search (vectors and full text, fused by reciprocal rank) over the collections the caller may read",
    tags,
    permission: "kb.read",
    body: s.searchBody,
    response: z.object({ data: z.array(s.searchHitSchema), search: s.searchModeSchema }),
    // The index query of this credential's last plan runs alongside loading the caller, planning and committing.
    early: ({ body }, who) => guesses.start(deps, who, body),
    handler: async (_ctx, { body }, scope) => {
      const plan = await kb.planSearch(scope, body);
      // Embedding the query and searching the index hold no database connection.
      return afterCommit(async () => {
        const run = await guesses.run(deps, plan, body, scope.early);
        return { data: kb.finishSearch(plan, run.hits, body), search: kb.searchModeOf(body, run) };
      });
    },
  });
  api.route({
    method: "get",
    path: "/api/kb/status",
    operationId: "getKbStatus",
    summary: "The embedding model of the index, and warnings for the admin",
    tags,
    permission: "kb.read",
    response: dataOf(s.statusSchema),
    handler: async (_ctx, _in, scope) => ({ data: await kb.indexStatus(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/kb/reindex",
    operationId: "reindexKb",
    summary: "Rebuild the organization's index with its current embedding model",
    tags,
    permission: "kb.admin",
    status: 202,
    handler: async (_ctx, _in, scope) => {
      await kb.reindex(scope, deps);
      return { data: { queued: true } };
    },
  });
  api.route({
    method: "get",
    path: "/api/kb/events",
    operationId: "kbEvents",
    summary: "Server-sent ingestion progress of documents in the collections the caller may read",
    tags,
    permission: "kb.read",
    responseType: "text/event-stream",
    response: z.string(),
    handler: async (ctx, _in, scope) => {
      if (!deps.bus) throw AppError.unavailable("The bus is not connected.");
      const bus = deps.bus;
      let readable = new Set(await kb.readableCollectionIds(scope));
      const orgId = scope.caller.orgId;
      const caller = scope.caller;
      const events = openEventStream(ctx);
      // Sent at once, so the response starts now (and tells a browser how soon to reconnect).
      events.stream.write("retry: 3000\n\n");
      let refreshing: Promise<void> | null = null;
      const refresh = () =>
        (refreshing ??= withOrg(knex(), orgId, (trx) => kb.readableCollectionIds({ caller, trx }))
          .then((ids) => void (readable = new Set(ids)))
          .catch(() => undefined)
          .finally(() => (refreshing = null)));
      const stop = bus.listen(progressSubject(bus.prefix, orgId), (payload) => {
        const p = payload as KbProgress;
        const send = () => readable.has(p.collectionId) && events.send("progress", p);
        if (readable.has(p.collectionId)) send();
        // A collection shared since the stream opened: look again before deciding.
        else void refresh().then(send);
      });
      const timer = setInterval(() => void refresh(), 30_000);
      events.onClose(() => {
        stop();
        clearInterval(timer);
      });
      return events.stream;
    },
  });
}
