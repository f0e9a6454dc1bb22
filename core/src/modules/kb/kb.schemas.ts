import { z } from "zod";

const id = z.uuid();
const person = z.object({ id, displayName: z.string() });

export const idParams = z.object({ id });

export const createCollectionBody = z
  .strictObject({
    name: z.string().trim().min(1).max(120),
    description: z.string().trim().max(2000).optional(),
  })
  .meta({ id: "CreateKbCollectionRequest" });
export const updateCollectionBody = z
  .strictObject({
    name: z.string().trim().min(1).max(120).optional(),
    description: z.string().trim().max(2000).optional(),
  })
  .refine((b) => Object.keys(b).length > 0, "Give a name or a description")
  .meta({ id: "UpdateKbCollectionRequest" });

const share = z.strictObject({
  granteeType: z.enum(["user", "group", "role"]),
  granteeId: id,
  access: z.enum(["view", "manage"]),
});
export const setSharesBody = z
  .strictObject({ shares: z.array(share).max(200) })
  .meta({ id: "SetKbSharesRequest" });
export const kbShareSchema = share.extend({ name: z.string() }).meta({ id: "KbShare" });

export const collectionSchema = z
  .object({
    id,
    name: z.string(),
    description: z.string(),
    owner: person,
    access: z.enum(["owner", "manage", "view"]),
    documents: z.number(),
    createdAt: z.string(),
  })
  .meta({ id: "KbCollection" });
export const collectionDetailSchema = collectionSchema
  .extend({ shares: z.array(kbShareSchema) })
  .meta({ id: "KbCollectionDetail" });

export const documentSchema = z
  .object({
    id,
    collectionId: id,
    name: z.string(),
    path: z.string().describe("The relative path it was uploaded with (folder uploads), else its name."),
    kind: z.string(),
    sizeBytes: z.number(),
    sha256: z.string(),
    status: z.enum(["queued", "extracting", "chunking", "embedding", "indexed", "failed"]),
    progress: z.number(),
    error: z.string().nullable(),
    pages: z.number().nullable(),
    chunks: z.number(),
    hasVectors: z.boolean(),
    createdAt: z.string(),
    indexedAt: z.string().nullable(),
  })
  .meta({ id: "KbDocument" });

export const documentDetailSchema = documentSchema
  .extend({
    chunkList: z.array(
      z.object({
        index: z.number(),
        text: z.string(),
        page: z.number().nullable(),
        heading: z.array(z.string()),
        start: z.number(),
        end: z.number(),
      }),
    ),
  })
  .meta({ id: "KbDocumentDetail" });

export const uploadResultSchema = z
  .object({
    name: z.string(),
    outcome: z.enum(["queued", "replaced", "duplicate", "refused"]),
    document: documentSchema.optional(),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
  })
  .meta({ id: "KbUploadResult" });

export const uploadBody = z
  .object({ files: z.array(z.string().meta({ format: "binary" })) })
  .meta({ id: "KbUploadRequest" });

export const searchBody = z
  .strictObject({
    query: z.string().trim().min(1).max(1000),
    collectionIds: z.array(id).max(100).optional(),
    limit: z.number().int().min(1).max(50).default(8),
    mode: z.enum(["hybrid", "vector", "fts"]).default("hybrid"),
  })
  .meta({ id: "KbSearchRequest" });

const snippetPart = z.object({ text: z.string(), match: z.boolean() });
export const citationSchema = z
  .object({
    documentId: id,
    documentName: z
      .string()
      .describe("The document's path (its name, or its relative path in a folder upload)."),
    collectionId: id,
    collectionName: z.string(),
    page: z.number().nullable(),
    heading: z.array(z.string()),
    chunkIndex: z.number(),
    start: z.number(),
    end: z.number(),
  })
  .meta({ id: "KbCitation" });
export const searchHitSchema = z
  .object({
    chunkId: z.string(),
    /** The fused rank (reciprocal rank fusion of the vector and full-text lists). */
    score: z.number(),
    relevance: z
      .object({
        bm25: z.number().nullable().describe("Full-text relevance (BM25), when full text found the passage."),
        distance: z.number().nullable().describe("Vector distance, when vector search found the passage."),
      })
      .describe("The underlying relevance next to the fused rank."),
    text: z.string(),
    snippet: z.array(snippetPart),
    citation: citationSchema,
  })
  .meta({ id: "KbSearchHit" });

const modes = z.enum(["hybrid", "vector", "fts"]);
export const searchModeSchema = z
  .object({
    requested: modes,
    mode: modes.describe("The mode that ran."),
    reason: z
      .enum(["no_embedding_model", "embedding_unavailable", "reindexing"])
      .nullable()
      .describe("Why the mode that ran is not the one asked for."),
    message: z.string().nullable(),
  })
  .meta({ id: "KbSearchMode" });

export const statusSchema = z
  .object({
    embeddingModel: z.object({ id, name: z.string() }).nullable(),
    indexModel: z.object({ id, name: z.string() }).nullable(),
    reindexNeeded: z.boolean(),
    reindexing: z
      .object({ remaining: z.number() })
      .nullable()
      .describe("An in-place re-index under way: documents still to do (search uses full text meanwhile)."),
    warnings: z.array(z.string()),
  })
  .meta({ id: "KbStatus" });
