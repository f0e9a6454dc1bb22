import { z } from "zod";

const id = z.uuid();
const title = z.string().trim().min(1).max(300);
/** A note's Markdown text: up to 1 MB of text. */
const body = z.string().max(1_000_000);
const tagName = z
  .string()
  .trim()
  .min(1)
  .max(60)
  .regex(/^[^,#\s][^,]*$/, "Tags cannot contain commas or start with # or a space");
const tags = z.array(tagName).max(30);
const folderName = z.string().trim().min(1).max(120);
const flag = z.enum(["true", "false"]).transform((v) => v === "true");

export const noteIdParams = z.object({ id });
export const versionParams = z.object({ id, versionId: id });

export const listNotesQuery = z.object({
  q: z.string().trim().min(1).max(500).optional(),
  view: z.enum(["all", "mine", "shared", "trash"]).default("all"),
  folderId: id.optional(),
  tag: z.string().trim().min(1).max(60).optional(),
  starred: flag.optional(),
  updatedAfter: z.iso.datetime({ offset: true }).optional(),
  updatedBefore: z.iso.datetime({ offset: true }).optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
});

export const createNoteBody = z
  .strictObject({ title, body: body.default(""), folderId: id.nullish(), tags: tags.optional() })
  .meta({ id: "CreateNoteRequest" });
export const saveNoteBody = z
  .strictObject({ title, body, baseVersion: z.number().int().min(1) })
  .meta({ id: "SaveNoteRequest" });
export const updateNoteBody = z
  .strictObject({
    folderId: id.nullable().optional(),
    tags: tags.optional(),
    starred: z.boolean().optional(),
    pinned: z.boolean().optional(),
  })
  .refine((b) => Object.keys(b).length > 0, "Give at least one of folderId, tags, starred, pinned")
  .meta({ id: "UpdateNoteRequest" });

const share = z.strictObject({
  granteeType: z.enum(["user", "group", "role"]),
  granteeId: id,
  access: z.enum(["view", "edit"]),
});
export const setSharesBody = z
  .strictObject({ shares: z.array(share).max(200) })
  .meta({ id: "SetNoteSharesRequest" });

export const createFolderBody = z
  .strictObject({ name: folderName, parentId: id.nullish() })
  .meta({ id: "CreateNoteFolderRequest" });
export const updateFolderBody = z
  .strictObject({ name: folderName.optional(), parentId: id.nullable().optional() })
  .refine((b) => Object.keys(b).length > 0, "Give a name or a parentId")
  .meta({ id: "UpdateNoteFolderRequest" });

const snippetPart = z.object({ text: z.string(), match: z.boolean() });
const person = z.object({ id, displayName: z.string() });

export const noteSummarySchema = z
  .object({
    id,
    title: z.string(),
    excerpt: z.string(),
    snippet: z.array(snippetPart).nullable(),
    folderId: id.nullable(),
    tags: z.array(z.string()),
    starred: z.boolean(),
    pinned: z.boolean(),
    access: z.enum(["owner", "edit", "view"]),
    owner: person,
    version: z.number(),
    trashedAt: z.string().nullable(),
    updatedAt: z.string(),
  })
  .meta({ id: "NoteSummary" });

export const noteShareSchema = share.extend({ name: z.string() }).meta({ id: "NoteShare" });

export const noteSchema = noteSummarySchema
  .extend({
    body: z.string(),
    updatedBy: person.nullable(),
    createdAt: z.string(),
    shares: z.array(noteShareSchema),
  })
  .meta({ id: "Note" });

export const noteListSchema = z.object({
  data: z.array(noteSummarySchema),
  page: z.object({ total: z.number(), limit: z.number(), offset: z.number() }),
});

export const noteVersionSchema = z
  .object({
    id,
    version: z.number(),
    title: z.string(),
    body: z.string(),
    author: person.nullable(),
    savedAt: z.string(),
  })
  .meta({ id: "NoteVersion" });

export const noteFolderSchema = z
  .object({ id, parentId: id.nullable(), name: z.string(), notes: z.number() })
  .meta({ id: "NoteFolder" });

export const noteTagSchema = z.object({ id, name: z.string(), notes: z.number() }).meta({ id: "NoteTag" });
