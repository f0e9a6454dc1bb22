import { z } from "zod";
import type { Api } from "../../platform/http/api.js";
import { dataOf } from "../../platform/http/api.js";
import * as notes from "./notes.service.js";
import * as s from "./notes.schemas.js";

const tags = ["notes"];

/** Registers the notes, note folders and note tags routes. */
export function registerNotesRoutes(api: Api): void {
  api.route({
    method: "get",
    path: "/api/notes",
    operationId: "listNotes",
    summary: "Notes the caller may read: filters, or ranked full-text search with highlighted snippets",
    tags,
    permission: "notes.read",
    query: s.listNotesQuery,
    response: s.noteListSchema,
    handler: async (_ctx, { query }, scope) => notes.listNotes(scope, query),
  });
  api.route({
    method: "post",
    path: "/api/notes",
    operationId: "createNote",
    summary: "Create a note",
    tags,
    permission: "notes.write",
    body: s.createNoteBody,
    status: 201,
    response: dataOf(s.noteSchema),
    handler: async (_ctx, { body }, scope) => ({ data: await notes.createNote(scope, body) }),
  });
  api.route({
    method: "delete",
    path: "/api/notes/trash",
    operationId: "emptyNotesTrash",
    summary: "Delete every note in the caller's trash for good",
    tags,
    permission: "notes.write",
    status: 204,
    handler: async (_ctx, _in, scope) => notes.emptyTrash(scope),
  });
  api.route({
    method: "get",
    path: "/api/notes/:id",
    operationId: "getNote",
    summary: "One note with its text",
    tags,
    permission: "notes.read",
    params: s.noteIdParams,
    response: dataOf(s.noteSchema),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await notes.getNote(scope, params.id) }),
  });
  api.route({
    method: "put",
    path: "/api/notes/:id",
    operationId: "saveNote",
    summary: "Save a note's title and text; 409 with the current note when someone saved since baseVersion",
    tags,
    permission: "notes.write",
    params: s.noteIdParams,
    body: s.saveNoteBody,
    response: dataOf(s.noteSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await notes.saveNote(scope, params.id, body),
    }),
  });
  api.route({
    method: "patch",
    path: "/api/notes/:id",
    operationId: "updateNote",
    summary: "File a note in a folder, set its tags, star or pin it (stars and pins are the caller's own)",
    tags,
    permission: "notes.write",
    params: s.noteIdParams,
    body: s.updateNoteBody,
    response: dataOf(s.noteSchema),
    errors: [403, 404],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await notes.updateNote(scope, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/notes/:id",
    operationId: "trashNote",
    summary: "Move a note to the trash (owner only)",
    tags,
    permission: "notes.write",
    params: s.noteIdParams,
    status: 204,
    errors: [403, 404],
    handler: async (_ctx, { params }, scope) => notes.trashNote(scope, params.id),
  });
  api.route({
    method: "post",
    path: "/api/notes/:id/restore",
    operationId: "restoreNote",
    summary: "Take a note out of the trash",
    tags,
    permission: "notes.write",
    params: s.noteIdParams,
    response: dataOf(s.noteSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params }, scope) => ({ data: await notes.restoreNote(scope, params.id) }),
  });
  api.route({
    method: "delete",
    path: "/api/notes/:id/permanent",
    operationId: "deleteNote",
    summary: "Delete a note for good, with its history (owner only)",
    tags,
    permission: "notes.write",
    params: s.noteIdParams,
    status: 204,
    errors: [403, 404],
    handler: async (_ctx, { params }, scope) => notes.deleteNote(scope, params.id),
  });
  api.route({
    method: "get",
    path: "/api/notes/:id/versions",
    operationId: "listNoteVersions",
    summary: "A note's version history, newest first",
    tags,
    permission: "notes.read",
    params: s.noteIdParams,
    response: dataOf(z.array(s.noteVersionSchema)),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await notes.listVersions(scope, params.id) }),
  });
  api.route({
    method: "post",
    path: "/api/notes/:id/versions/:versionId/restore",
    operationId: "restoreNoteVersion",
    summary: "Bring back an old version's text as a new save",
    tags,
    permission: "notes.write",
    params: s.versionParams,
    response: dataOf(s.noteSchema),
    errors: [403, 404],
    handler: async (_ctx, { params }, scope) => ({
      data: await notes.restoreVersion(scope, params.id, params.versionId),
    }),
  });
  api.route({
    method: "put",
    path: "/api/notes/:id/shares",
    operationId: "setNoteShares",
    summary: "Replace who a note is shared with: users, groups or roles, view or edit (owner only)",
    tags,
    permission: "notes.write",
    params: s.noteIdParams,
    body: s.setSharesBody,
    response: dataOf(z.array(s.noteShareSchema)),
    errors: [403, 404],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await notes.setShares(scope, params.id, body.shares),
    }),
  });

  // ----- folders and tags -----
  api.route({
    method: "get",
    path: "/api/note-folders",
    operationId: "listNoteFolders",
    summary: "The caller's note folders (flat, with parent ids)",
    tags,
    permission: "notes.read",
    response: dataOf(z.array(s.noteFolderSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await notes.listFolders(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/note-folders",
    operationId: "createNoteFolder",
    summary: "Create a folder",
    tags,
    permission: "notes.write",
    body: s.createFolderBody,
    status: 201,
    response: dataOf(s.noteFolderSchema),
    handler: async (_ctx, { body }, scope) => ({ data: await notes.createFolder(scope, body) }),
  });
  api.route({
    method: "patch",
    path: "/api/note-folders/:id",
    operationId: "updateNoteFolder",
    summary: "Rename a folder or move it into another",
    tags,
    permission: "notes.write",
    params: s.noteIdParams,
    body: s.updateFolderBody,
    response: dataOf(s.noteFolderSchema),
    errors: [404],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await notes.updateFolder(scope, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/note-folders/:id",
    operationId: "deleteNoteFolder",
    summary: "Delete a folder and its subfolders; their notes are kept",
    tags,
    permission: "notes.write",
    params: s.noteIdParams,
    status: 204,
    errors: [404],
    handler: async (_ctx, { params }, scope) => notes.deleteFolder(scope, params.id),
  });
  api.route({
    method: "get",
    path: "/api/note-tags",
    operationId: "listNoteTags",
    summary: "Tags on the notes the caller may read, with counts",
    tags,
    permission: "notes.read",
    response: dataOf(z.array(s.noteTagSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await notes.listTags(scope) }),
  });
}
