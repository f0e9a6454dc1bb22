import { z } from "zod";
import type { ToolRegistry } from "../../platform/tools/registry.js";
import * as notes from "./notes.service.js";

/** The AI tools of the notes module: search and read what the user may read; create (needs approval). */
export function registerNotesTools(tools: ToolRegistry): void {
  tools.register({
    name: "notes.search",
    description: "Search the notes the user may read. Returns ids, titles and matching snippets.",
    permission: "notes.read",
    effect: "read",
    input: z.strictObject({
      query: z.string().trim().min(1).max(500),
      limit: z.number().int().min(1).max(20).default(5),
    }),
    run: async (ctx, input) => {
      const { data } = await notes.listNotes(ctx, {
        q: input.query,
        view: "all",
        limit: input.limit,
        offset: 0,
      });
      return data.map((n) => ({
        id: n.id,
        title: n.title,
        snippet: (n.snippet ?? []).map((p) => p.text).join(""),
        tags: n.tags,
        updatedAt: n.updatedAt,
      }));
    },
  });
  tools.register({
    name: "notes.read",
    description: "Read one note the user may read, by id.",
    permission: "notes.read",
    effect: "read",
    input: z.strictObject({ id: z.uuid() }),
    run: async (ctx, input) => {
      const n = await notes.getNote(ctx, input.id);
      return { id: n.id, title: n.title, body: n.body, tags: n.tags, updatedAt: n.updatedAt };
    },
  });
  tools.register({
    name: "notes.create",
    description: "Create a note for the user (asks the user to approve first).",
    permission: "notes.write",
    effect: "write",
    input: z.strictObject({
      title: z.string().trim().min(1).max(300),
      body: z.string().max(100_000),
      tags: z.array(z.string().trim().min(1).max(60)).max(10).optional(),
    }),
    run: async (ctx, input) => {
      const n = await notes.createNote(ctx, input);
      return { id: n.id, title: n.title };
    },
  });
}
