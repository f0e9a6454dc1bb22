import type { Knex } from "knex";
import type { Caller } from "../../platform/auth/caller.js";
import { AppError } from "../../platform/http/errors.js";
import { actorOf, audit } from "../identity/audit.js";
import { listGrants, replaceGrants, type Grant } from "../identity/grants.js";

/** An authenticated service call: who asks, in which org-scoped transaction. */
export interface Svc {
  caller: Caller;
  trx: Knex.Transaction;
}

/** What the caller may do with a note. */
export type Access = "owner" | "edit" | "view";

/** Saves by one author within this window update the same history entry instead of adding one per autosave. */
const VERSION_COALESCE = "5 minutes";
/** Markers ts_headline puts around matches; control characters cannot come from the editor's text. */
const HL_START = "\u0002";
const HL_END = "\u0003";

interface NoteRow {
  id: string;
  owner_id: string;
  owner_name: string;
  folder_id: string | null;
  title: string;
  body: string;
  version: number;
  updated_by: string | null;
  updated_by_name: string | null;
  trashed_at: Date | null;
  created_at: Date;
  updated_at: Date;
  access: Access;
  starred: boolean;
  pinned: boolean;
  tags: string[];
  snippet?: string | null;
  total?: string | number;
}

/** A piece of a search snippet; `match` marks the words the query found. */
export interface SnippetPart {
  text: string;
  match: boolean;
}

/** Splits a ts_headline result into plain and matched parts, so the UI never renders markup from the server. */
export function snippetParts(headline: string): SnippetPart[] {
  const parts: SnippetPart[] = [];
  let rest = headline;
  while (rest.length) {
    const start = rest.indexOf(HL_START);
    if (start === -1) {
      parts.push({ text: rest, match: false });
      break;
    }
    if (start > 0) parts.push({ text: rest.slice(0, start), match: false });
    const end = rest.indexOf(HL_END, start);
    const stop = end === -1 ? rest.length : end;
    parts.push({ text: rest.slice(start + 1, stop), match: true });
    rest = end === -1 ? "" : rest.slice(end + 1);
  }
  return parts.filter((p) => p.text.length);
}

const excerptOf = (body: string) => body.replace(/\s+/g, " ").trim().slice(0, 160);

/** A note in lists. */
function presentSummary(row: NoteRow) {
  return {
    id: row.id,
    title: row.title,
    excerpt: excerptOf(row.body),
    snippet: row.snippet ? snippetParts(row.snippet) : null,
    folderId: row.access === "owner" ? row.folder_id : null,
    tags: row.tags,
    starred: row.starred,
    pinned: row.pinned,
    access: row.access,
    owner: { id: row.owner_id, displayName: row.owner_name },
    version: row.version,
    trashedAt: row.trashed_at ? row.trashed_at.toISOString() : null,
    updatedAt: row.updated_at.toISOString(),
  };
}

/** One note with its text. */
function presentNote(row: NoteRow) {
  return {
    ...presentSummary(row),
    body: row.body,
    updatedBy: row.updated_by ? { id: row.updated_by, displayName: row.updated_by_name ?? "" } : null,
    createdAt: row.created_at.toISOString(),
  };
}

/** Notes joined with what the caller may do with each, their marks and tags. */
function notesOf(trx: Knex.Transaction, userId: string) {
  return trx({ n: "notes" })
    .join({ o: "users" }, "o.id", "n.owner_id")
    .leftJoin({ ub: "users" }, "ub.id", "n.updated_by")
    .leftJoin({ m: "note_marks" }, (j) => j.on("m.note_id", "n.id").andOnVal("m.user_id", userId))
    .select(
      "n.id",
      "n.owner_id",
      "o.display_name as owner_name",
      "n.folder_id",
      "n.title",
      "n.body",
      "n.version",
      "n.updated_by",
      "ub.display_name as updated_by_name",
      "n.trashed_at",
      "n.created_at",
      "n.updated_at",
      trx.raw("note_access(n.id, n.owner_id, ?) as access", [userId]),
      trx.raw("coalesce(m.starred, false) as starred"),
      trx.raw("coalesce(m.pinned, false) as pinned"),
      trx.raw(
        "array(select t.name from note_tag_mapping tm join note_tags t on t.id = tm.tag_id where tm.note_id = n.id order by lower(t.name)) as tags",
      ),
    )
    .whereRaw("note_access(n.id, n.owner_id, ?) is not null", [userId]);
}

/** Filters of the note list. */
export interface ListQuery {
  q?: string;
  view: "all" | "mine" | "shared" | "trash";
  folderId?: string;
  tag?: string;
  starred?: boolean;
  updatedAfter?: string;
  updatedBefore?: string;
  limit: number;
  offset: number;
}

/** The notes the caller may read, filtered; with a query, ranked full-text hits with highlighted snippets. */
export async function listNotes({ caller, trx }: Svc, q: ListQuery) {
  const query = notesOf(trx, caller.userId).select(trx.raw("count(*) over () as total"));
  if (q.view === "trash") query.where("n.owner_id", caller.userId).whereNotNull("n.trashed_at");
  else query.whereNull("n.trashed_at");
  if (q.view === "mine") query.where("n.owner_id", caller.userId);
  if (q.view === "shared") query.whereNot("n.owner_id", caller.userId);
  if (q.folderId) query.where("n.folder_id", q.folderId).where("n.owner_id", caller.userId);
  if (q.tag)
    query.whereExists((sub) =>
      sub
        .from({ tm: "note_tag_mapping" })
        .join({ t: "note_tags" }, "t.id", "tm.tag_id")
        .whereRaw("tm.note_id = n.id")
        .whereRaw("lower(t.name) = lower(?)", [q.tag as string]),
    );
  if (q.starred) query.whereRaw("coalesce(m.starred, false)");
  if (q.updatedAfter) query.where("n.updated_at", ">=", q.updatedAfter);
  if (q.updatedBefore) query.where("n.updated_at", "<", q.updatedBefore);
  query.orderByRaw("coalesce(m.pinned, false) desc");
  if (q.q) {
    const tsq = trx.raw("websearch_to_tsquery('english', ?)", [q.q]);
    query
      .whereRaw("n.search @@ ?", [tsq])
      .select(
        trx.raw(
          `ts_headline('english', n.title || ' — ' || n.body, ?, 'StartSel=${HL_START}, StopSel=${HL_END}, MaxWords=30, MinWords=10, MaxFragments=2, FragmentDelimiter=" … "') as snippet`,
          [tsq],
        ),
      )
      .orderByRaw("ts_rank_cd(n.search, ?) desc", [tsq]);
  }
  query.orderBy("n.updated_at", "desc").orderBy("n.id").limit(q.limit).offset(q.offset);
  const rows = (await query) as NoteRow[];
  return {
    data: rows.map(presentSummary),
    page: { total: Number(rows[0]?.total ?? 0), limit: q.limit, offset: q.offset },
  };
}

/** A note the caller may read, or 404 (a note they cannot read does not exist for them). */
async function readable(svc: Svc, id: string, opts: { trashed?: boolean; lock?: boolean } = {}) {
  const query = notesOf(svc.trx, svc.caller.userId).where("n.id", id);
  if (opts.lock) query.forUpdate("n");
  const row = (await query.first()) as NoteRow | undefined;
  if (!row) throw AppError.notFound("Note not found.");
  if (row.trashed_at && !(opts.trashed && row.access === "owner")) {
    if (row.access === "owner") throw AppError.conflict("This note is in the trash; restore it first.");
    throw AppError.notFound("Note not found.");
  }
  return row;
}

/** A note the caller may edit: 404 when unreadable, 403 when shared view-only. */
async function editable(svc: Svc, id: string) {
  const row = await readable(svc, id, { lock: true });
  if (row.access === "view") throw AppError.forbidden("This note is shared with you view-only.");
  return row;
}

/** A note only its owner may act on (sharing, trash, delete, moving into the owner's folders). */
async function owned(svc: Svc, id: string, trashed = false) {
  const row = await readable(svc, id, { trashed, lock: true });
  if (row.access !== "owner") throw AppError.forbidden("Only the note's owner can do that.");
  return row;
}

/** One note with its text (the shares are listed for the owner). */
export async function getNote(svc: Svc, id: string) {
  const row = await readable(svc, id, { trashed: true });
  return { ...presentNote(row), shares: row.access === "owner" ? await sharesOf(svc.trx, id) : [] };
}

async function assertOwnFolder({ caller, trx }: Svc, folderId: string | null | undefined) {
  if (!folderId) return;
  const folder = await trx("note_folders").where({ id: folderId, owner_id: caller.userId }).first("id");
  if (!folder) throw AppError.badRequest("No such folder.", { field: "folderId" });
}

async function setTags({ caller, trx }: Svc, noteId: string, names: string[]) {
  const unique = [...new Map(names.map((n) => [n.toLowerCase(), n])).values()];
  await trx("note_tag_mapping").where({ note_id: noteId }).delete();
  if (!unique.length) return;
  for (const name of unique) {
    await trx.raw(
      "insert into note_tags (org_id, name) values (?, ?) on conflict (org_id, lower(name)) do nothing",
      [caller.orgId, name],
    );
  }
  const tags = await trx("note_tags").whereRaw("lower(name) = any(?::text[])", [
    unique.map((n) => n.toLowerCase()),
  ]);
  await trx("note_tag_mapping").insert(
    tags.map((t: { id: string }) => ({ org_id: caller.orgId, note_id: noteId, tag_id: t.id })),
  );
}

async function recordVersion(
  { caller, trx }: Svc,
  note: { id: string; version: number; title: string; body: string },
) {
  const updated = await trx("note_versions")
    .where({ note_id: note.id, author_id: caller.userId })
    .whereRaw(`updated_at > now() - interval '${VERSION_COALESCE}'`)
    .whereRaw("version = (select max(version) from note_versions v where v.note_id = ?)", [note.id])
    .update({ version: note.version, title: note.title, body: note.body, updated_at: trx.fn.now() });
  if (updated) return;
  await trx("note_versions").insert({
    org_id: caller.orgId,
    note_id: note.id,
    version: note.version,
    title: note.title,
    body: note.body,
    author_id: caller.userId,
  });
}

/** Creates a note owned by the caller. */
export async function createNote(
  svc: Svc,
  input: { title: string; body: string; folderId?: string | null; tags?: string[] },
) {
  await assertOwnFolder(svc, input.folderId);
  const [note] = await svc
    .trx("notes")
    .insert({
      org_id: svc.caller.orgId,
      owner_id: svc.caller.userId,
      folder_id: input.folderId ?? null,
      title: input.title,
      body: input.body,
      updated_by: svc.caller.userId,
    })
    .returning(["id", "version", "title", "body"]);
  await recordVersion(svc, note);
  if (input.tags?.length) await setTags(svc, note.id, input.tags);
  return getNote(svc, note.id);
}

/**
 * Saves a note's text if nobody saved since `baseVersion`; otherwise 409 with the current note, so the
 * editor can merge or keep both. Text is never overwritten silently.
 */
export async function saveNote(
  svc: Svc,
  id: string,
  input: { title: string; body: string; baseVersion: number },
) {
  const row = await editable(svc, id);
  if (row.version !== input.baseVersion) {
    throw AppError.conflict("Someone saved this note after you opened it.", {
      current: presentNote(row),
    });
  }
  if (row.title === input.title && row.body === input.body) return getNote(svc, id);
  const version = row.version + 1;
  await svc.trx("notes").where({ id }).update({
    title: input.title,
    body: input.body,
    version,
    updated_by: svc.caller.userId,
    updated_at: svc.trx.fn.now(),
  });
  await recordVersion(svc, { id, version, title: input.title, body: input.body });
  return getNote(svc, id);
}

/** Changes where a note is filed, its tags, and the caller's own star and pin. */
export async function updateNote(
  svc: Svc,
  id: string,
  input: { folderId?: string | null; tags?: string[]; starred?: boolean; pinned?: boolean },
) {
  const { caller, trx } = svc;
  if (input.folderId !== undefined) {
    await owned(svc, id);
    await assertOwnFolder(svc, input.folderId);
    await trx("notes").where({ id }).update({ folder_id: input.folderId });
  }
  if (input.tags !== undefined) {
    await editable(svc, id);
    await setTags(svc, id, input.tags);
    await trx("notes").where({ id }).update({ updated_at: trx.fn.now() });
  }
  if (input.starred !== undefined || input.pinned !== undefined) {
    await readable(svc, id);
    const marks = {
      ...(input.starred !== undefined && { starred: input.starred }),
      ...(input.pinned !== undefined && { pinned: input.pinned }),
    };
    await trx("note_marks")
      .insert({ org_id: caller.orgId, note_id: id, user_id: caller.userId, ...marks })
      .onConflict(["note_id", "user_id"])
      .merge(marks);
  }
  return getNote(svc, id);
}

/** Moves a note to the trash (owner only). */
export async function trashNote(svc: Svc, id: string) {
  await owned(svc, id);
  await svc.trx("notes").where({ id }).update({ trashed_at: svc.trx.fn.now() });
}

/** Takes a note out of the trash. */
export async function restoreNote(svc: Svc, id: string) {
  const row = await owned(svc, id, true);
  if (!row.trashed_at) throw AppError.conflict("This note is not in the trash.");
  await svc.trx("notes").where({ id }).update({ trashed_at: null });
  return getNote(svc, id);
}

/** Deletes a note for good, with its history and shares (owner only; audited). */
export async function deleteNote(svc: Svc, id: string) {
  const row = await owned(svc, id, true);
  await svc.trx("notes").where({ id }).delete();
  await audit(svc.trx, {
    ...actorOf(svc.caller),
    action: "note.delete",
    targetType: "note",
    targetId: id,
    outcome: "success",
    details: { title: row.title },
  });
}

/** Empties the caller's trash. */
export async function emptyTrash({ caller, trx }: Svc) {
  const n = await trx("notes").where({ owner_id: caller.userId }).whereNotNull("trashed_at").delete();
  if (n)
    await audit(trx, {
      ...actorOf(caller),
      action: "note.trash.empty",
      targetType: "note",
      outcome: "success",
      details: { deleted: n },
    });
}

// ---------- versions ----------

/** The history of a note, newest first. */
export async function listVersions(svc: Svc, id: string) {
  await readable(svc, id, { trashed: true });
  const rows = await svc
    .trx({ v: "note_versions" })
    .leftJoin({ u: "users" }, "u.id", "v.author_id")
    .where("v.note_id", id)
    .orderBy("v.version", "desc")
    .select("v.*", "u.display_name as author_name");
  return rows.map((v) => ({
    id: v.id as string,
    version: v.version as number,
    title: v.title as string,
    body: v.body as string,
    author: v.author_id ? { id: v.author_id as string, displayName: (v.author_name as string) ?? "" } : null,
    savedAt: (v.updated_at as Date).toISOString(),
  }));
}

/** Brings back an old version's text as a new save (nothing in the history is lost). */
export async function restoreVersion(svc: Svc, id: string, versionId: string) {
  const row = await editable(svc, id);
  const old = await svc.trx("note_versions").where({ id: versionId, note_id: id }).first();
  if (!old) throw AppError.notFound("Version not found.");
  return saveNote(svc, id, { title: old.title, body: old.body, baseVersion: row.version });
}

// ---------- sharing ----------

/** One grant of a note to a user, group or role. */
export type ShareInput = Grant<"view" | "edit">;

const NOTE_GRANTS = { table: "note_shares", key: "note_id" };

const sharesOf = (trx: Knex.Transaction, noteId: string) =>
  listGrants<ShareInput["access"]>(trx, NOTE_GRANTS, noteId);

/** Replaces who a note is shared with (owner only; audited). Every grantee must exist in the organization. */
export async function setShares(svc: Svc, id: string, shares: ShareInput[]) {
  await owned(svc, id);
  return replaceGrants(
    svc.trx,
    svc.caller,
    NOTE_GRANTS,
    { id, ownerId: svc.caller.userId, type: "note", action: "note.share" },
    shares,
  );
}

// ---------- folders and tags ----------

/** The caller's folders (flat, with parent ids; the UI nests them). */
export async function listFolders({ caller, trx }: Svc) {
  const rows = await trx({ f: "note_folders" })
    .where("f.owner_id", caller.userId)
    .orderByRaw("lower(f.name)")
    .select(
      "f.id",
      "f.parent_id",
      "f.name",
      trx.raw(
        "(select count(*) from notes n where n.folder_id = f.id and n.trashed_at is null)::int as notes",
      ),
    );
  return rows.map((f) => ({
    id: f.id as string,
    parentId: f.parent_id as string | null,
    name: f.name as string,
    notes: f.notes as number,
  }));
}

async function ownFolder({ caller, trx }: Svc, id: string) {
  const f = await trx("note_folders").where({ id, owner_id: caller.userId }).first();
  if (!f) throw AppError.notFound("Folder not found.");
  return f;
}

/** Creates a folder, optionally inside another of the caller's folders. */
export async function createFolder(svc: Svc, input: { name: string; parentId?: string | null }) {
  if (input.parentId)
    await ownFolder(svc, input.parentId).catch(() => {
      throw AppError.badRequest("No such parent folder.", { field: "parentId" });
    });
  const [f] = await svc
    .trx("note_folders")
    .insert({
      org_id: svc.caller.orgId,
      owner_id: svc.caller.userId,
      parent_id: input.parentId ?? null,
      name: input.name,
    })
    .returning("*");
  return { id: f.id as string, parentId: f.parent_id as string | null, name: f.name as string, notes: 0 };
}

/** Renames a folder or moves it under another (never under itself or its own subfolders). */
export async function updateFolder(svc: Svc, id: string, input: { name?: string; parentId?: string | null }) {
  await ownFolder(svc, id);
  if (input.parentId) {
    await ownFolder(svc, input.parentId).catch(() => {
      throw AppError.badRequest("No such parent folder.", { field: "parentId" });
    });
    const cycle = await svc.trx.raw(
      `with recursive up as (select id, parent_id from note_folders where id = ?
         union all select f.id, f.parent_id from note_folders f join up on f.id = up.parent_id)
       select 1 from up where id = ? limit 1`,
      [input.parentId, id],
    );
    if (cycle.rows.length)
      throw AppError.badRequest("A folder cannot go inside itself.", { field: "parentId" });
  }
  await svc
    .trx("note_folders")
    .where({ id })
    .update({
      ...(input.name !== undefined && { name: input.name }),
      ...(input.parentId !== undefined && { parent_id: input.parentId }),
    });
  return (await listFolders(svc)).find((f) => f.id === id)!;
}

/** Deletes a folder and its subfolders; their notes are kept and move to no folder. */
export async function deleteFolder(svc: Svc, id: string) {
  await ownFolder(svc, id);
  await svc.trx("note_folders").where({ id }).delete();
}

/** The tags on notes the caller can read, with how many such notes carry each. */
export async function listTags({ caller, trx }: Svc) {
  const rows = await trx({ t: "note_tags" })
    .join({ tm: "note_tag_mapping" }, "tm.tag_id", "t.id")
    .join({ n: "notes" }, "n.id", "tm.note_id")
    .whereNull("n.trashed_at")
    .whereRaw("note_access(n.id, n.owner_id, ?) is not null", [caller.userId])
    .groupBy("t.id", "t.name")
    .orderByRaw("lower(t.name)")
    .select("t.id", "t.name", trx.raw("count(*)::int as notes"));
  return rows.map((t) => ({ id: t.id as string, name: t.name as string, notes: t.notes as number }));
}
