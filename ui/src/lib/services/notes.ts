import { merge } from "node-diff3";
import { api, unwrap } from "$lib/api/client";
import type { components } from "$lib/api/schema";

/** A note with its text. */
export type Note = components["schemas"]["Note"];
/** A note in lists. */
export type NoteSummary = components["schemas"]["NoteSummary"];
/** A folder, flat with its parent id. */
export type NoteFolder = components["schemas"]["NoteFolder"];
/** One grant of a note. */
export type NoteShare = components["schemas"]["NoteShare"];

/** A folder and its subfolders, for the folder tree. */
export interface FolderNode extends NoteFolder {
  depth: number;
}

/** The folders in tree order (each followed by its subfolders), with their depth. */
export function folderTree(folders: NoteFolder[]): FolderNode[] {
  const children = new Map<string | null, NoteFolder[]>();
  for (const f of folders) children.set(f.parentId, [...(children.get(f.parentId) ?? []), f]);
  const out: FolderNode[] = [];
  const walk = (parent: string | null, depth: number) => {
    for (const f of children.get(parent) ?? []) {
      out.push({ ...f, depth });
      walk(f.id, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

/** The result of merging two people's edits of the same text. */
export interface MergeOutcome {
  text: string;
  /** True when both changed the same lines: the text then carries conflict markers to resolve. */
  conflict: boolean;
}

/** Three-way merge of my text and theirs, from the text we both started with. */
export function mergeTexts(
  base: string,
  mine: string,
  theirs: string,
  labels: { mine: string; theirs: string },
) {
  const result = merge(mine.split("\n"), base.split("\n"), theirs.split("\n"), {
    label: { a: labels.mine, b: labels.theirs },
  });
  return { text: result.result.join("\n"), conflict: result.conflict } satisfies MergeOutcome;
}

/** Filters of the note list as the page holds them. */
export interface NoteFilter {
  view: "all" | "mine" | "shared" | "trash";
  folderId?: string;
  tag?: string;
  starred?: boolean;
  q?: string;
  updatedAfter?: string;
}

/** Loads one page of notes for a filter. */
export async function listNotes(filter: NoteFilter, offset = 0) {
  return unwrap(
    api.GET("/api/notes", {
      params: {
        query: {
          view: filter.view,
          folderId: filter.folderId,
          tag: filter.tag,
          starred: filter.starred ? "true" : undefined,
          q: filter.q?.trim() || undefined,
          updatedAfter: filter.updatedAfter,
          limit: 100,
          offset,
        },
      },
    }),
  );
}
