import type { Block } from "./extract.js";

/** A piece of a document sized for retrieval, with where it comes from. */
export interface Chunk {
  index: number;
  text: string;
  page: number | null;
  headings: string[];
  /** Character offsets of the chunk's own text (without the overlap) in the document's text. */
  start: number;
  end: number;
}

/** Sizes of chunks in tokens; a token is taken as about 4 characters (the embedding model's tokenizer is not needed). */
export interface ChunkOptions {
  tokens: number;
  overlap: number;
}

const CHARS_PER_TOKEN = 4;

/** Splits a block too long for one chunk at sentence ends, else at spaces. */
function pieces(text: string, max: number): string[] {
  if (text.length <= max) return [text];
  const out: string[] = [];
  let rest = text;
  while (rest.length > max) {
    const window = rest.slice(0, max);
    let cut = Math.max(window.lastIndexOf(". "), window.lastIndexOf("? "), window.lastIndexOf("! "));
    if (cut < max * 0.5) cut = window.lastIndexOf(" ");
    if (cut < max * 0.3) cut = max - 1;
    out.push(rest.slice(0, cut + 1).trim());
    rest = rest.slice(cut + 1).trimStart();
  }
  if (rest) out.push(rest);
  return out;
}

/**
 * Packs blocks into chunks of about `tokens` tokens. A chunk never spans two pages or two sections (a
 * change of heading path), so its citation is exact; consecutive chunks of one section share `overlap`
 * tokens of context. The document's text is the blocks joined by blank lines; offsets point into it.
 */
export function chunkBlocks(blocks: Block[], opts: ChunkOptions): Chunk[] {
  const max = opts.tokens * CHARS_PER_TOKEN;
  const overlap = Math.min(opts.overlap * CHARS_PER_TOKEN, Math.floor(max / 3));
  const chunks: Chunk[] = [];
  let offset = 0;
  let cur: {
    parts: string[];
    start: number;
    end: number;
    page: number | null;
    headings: string[];
    lead: string;
  } | null = null;
  const sectionOf = (b: { page?: number | null; headings: string[] }) =>
    `${b.page ?? ""}|${b.headings.join("\u0000")}`;
  const close = () => {
    if (!cur || !cur.parts.length) return;
    const body = cur.parts.join("\n\n");
    chunks.push({
      index: chunks.length,
      text: cur.lead ? `${cur.lead} ${body}` : body,
      page: cur.page,
      headings: cur.headings,
      start: cur.start,
      end: cur.end,
    });
  };
  for (const block of blocks) {
    const blockStart = offset;
    offset += block.text.length + 2;
    let pos = blockStart;
    for (const piece of pieces(block.text, max - overlap)) {
      const at = block.text.indexOf(piece, pos - blockStart);
      const start = at >= 0 ? blockStart + at : pos;
      pos = start + piece.length;
      const sameSection =
        cur && sectionOf(cur) === sectionOf({ page: block.page ?? null, headings: block.headings });
      const size = cur ? cur.parts.join("\n\n").length + cur.lead.length + piece.length + 2 : 0;
      if (!cur || !sameSection || size > max) {
        const prev: string = cur && sameSection ? cur.parts.join("\n\n") : "";
        close();
        const lead: string = prev ? prev.slice(Math.max(0, prev.length - overlap)).replace(/^\S*\s/, "") : "";
        cur = { parts: [], start, end: start, page: block.page ?? null, headings: block.headings, lead };
      }
      cur.parts.push(piece);
      cur.end = pos;
    }
  }
  close();
  return chunks;
}
