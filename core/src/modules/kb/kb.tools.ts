import { z } from "zod";
import type { Passage, ToolRegistry } from "../../platform/tools/registry.js";
import * as kb from "./kb.service.js";

/** The knowledge base's AI tool: search with citations, limited to what the user may read. */
export function registerKbTools(tools: ToolRegistry, deps: kb.KbDeps): void {
  tools.register({
    name: "kb.search",
    description:
      "Search the organization's documents the user may read. Returns passages with citations (document, page, heading).",
    permission: "kb.read",
    effect: "read",
    citable: true,
    input: z.strictObject({
      query: z.string().trim().min(1).max(1000),
      limit: z.number().int().min(1).max(20).default(5),
    }),
    run: async (ctx, input) => {
      const hits = await kb.search(ctx, deps, { query: input.query, limit: input.limit, mode: "hybrid" });
      return hits.map((h, i): Passage => ({
        ref: i + 1,
        text: h.text,
        document: h.citation.documentName,
        documentId: h.citation.documentId,
        collection: h.citation.collectionName,
        chunkIndex: h.citation.chunkIndex,
        page: h.citation.page,
        heading: h.citation.heading.join(" › "),
      }));
    },
  });
}
