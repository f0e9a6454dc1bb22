import { Parser } from "htmlparser2";
import yauzl from "yauzl";

/** A piece of a document's text with where it sits: its page (PDF) and the headings above it. */
export interface Block {
  text: string;
  page?: number;
  headings: string[];
}

/** What extraction gives: the text in reading order, as blocks, and the page count when the format has pages. */
export interface Extracted {
  blocks: Block[];
  pages?: number;
}

/** A document that cannot be read, with a reason a person understands. */
export class ExtractError extends Error {
  constructor(
    readonly code: "encrypted" | "corrupt" | "zip_limits" | "empty" | "unsupported" | "too_large",
    message: string,
  ) {
    super(message);
  }
}

/** Limits that apply while extracting. */
export interface ExtractLimits {
  zipMaxEntries: number;
  zipMaxBytes: number;
  /** Most pages of a PDF read; a longer one is refused before any page is read. */
  maxPages: number;
  /** Most text, in characters, one document may yield. */
  maxTextChars: number;
}

/** The formats the knowledge base reads. */
export type Kind = "pdf" | "docx" | "txt" | "md" | "html" | "csv";

const paragraphs = (text: string) =>
  text
    .split(/\n\s*\n/)
    .map((p) => p.replace(/[ \t]+/g, " ").trim())
    .filter(Boolean);

/** Extracts the text of a document held in memory. */
export async function extract(kind: Kind, data: Buffer, limits: ExtractLimits): Promise<Extracted> {
  const out = await EXTRACTORS[kind](data, limits);
  if (!out.blocks.some((b) => b.text.trim()))
    throw new ExtractError("empty", "The document contains no text.");
  let chars = 0;
  for (const b of out.blocks) chars += b.text.length;
  if (chars > limits.maxTextChars) throw tooMuchText(limits.maxTextChars);
  return out;
}

const EXTRACTORS: Record<Kind, (data: Buffer, limits: ExtractLimits) => Promise<Extracted>> = {
  pdf: extractPdf,
  docx: extractDocx,
  html: async (data) => ({ blocks: htmlBlocks(data.toString("utf8")) }),
  md: async (data) => ({ blocks: markdownBlocks(data.toString("utf8")) }),
  txt: async (data) => ({
    blocks: paragraphs(data.toString("utf8")).map((text) => ({ text, headings: [] })),
  }),
  csv: async (data) => ({
    blocks: data
      .toString("utf8")
      .split(/\r?\n/)
      .filter((l) => l.trim())
      .map((text) => ({ text, headings: [] })),
  }),
};

const tooMuchText = (max: number) =>
  new ExtractError(
    "too_large",
    `The document holds more than ${max.toLocaleString("en")} characters of text.`,
  );

async function extractPdf(data: Buffer, limits: ExtractLimits): Promise<Extracted> {
  const { getDocumentProxy } = await import("unpdf");
  let pdf;
  try {
    // isEvalSupported: false: pdf.js never compiles code from a document (CVE-2024-4367).
    pdf = await getDocumentProxy(new Uint8Array(data), {
      isEvalSupported: false,
      useSystemFonts: false,
      disableFontFace: true,
      stopAtErrors: false,
    });
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name === "PasswordException") throw new ExtractError("encrypted", "The PDF is password-protected.");
    throw new ExtractError("corrupt", "The PDF is damaged or not a PDF.");
  }
  const totalPages = pdf.numPages;
  if (totalPages > limits.maxPages)
    throw new ExtractError(
      "too_large",
      `The PDF has ${totalPages} pages; at most ${limits.maxPages} are read.`,
    );
  // Page by page, stopping as soon as the text passes the limit (a page's text is never all held twice).
  const blocks: Block[] = [];
  let chars = 0;
  for (let i = 1; i <= totalPages; i++) {
    const page = await pdf.getPage(i);
    // As unpdf's extractText does for each page, but one page at a time (it reads every page at once).
    const content = await page.getTextContent();
    const text = content.items
      .map((item) => ("str" in item ? item.str + (item.hasEOL ? "\n" : "") : ""))
      .join("");
    page.cleanup();
    chars += text.length;
    if (chars > limits.maxTextChars) throw tooMuchText(limits.maxTextChars);
    for (const p of paragraphs(text)) blocks.push({ text: p, page: i, headings: [] });
  }
  return { blocks, pages: totalPages };
}

/** Reads a zip's central directory (nothing is inflated) and refuses archives past the limits. */
async function checkZip(data: Buffer, limits: ExtractLimits): Promise<void> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.fromBuffer(data, { lazyEntries: true, validateEntrySizes: true }, (err, z) =>
      err || !z ? reject(new ExtractError("corrupt", "The DOCX is damaged (not a valid zip).")) : resolve(z),
    ),
  );
  if (zip.entryCount > limits.zipMaxEntries)
    throw new ExtractError(
      "zip_limits",
      `The DOCX holds ${zip.entryCount} files; at most ${limits.zipMaxEntries} are accepted.`,
    );
  let total = 0;
  await new Promise<void>((resolve, reject) => {
    zip.on("entry", (e: yauzl.Entry) => {
      total += e.uncompressedSize;
      if (total > limits.zipMaxBytes) {
        zip.close();
        reject(
          new ExtractError(
            "zip_limits",
            `The DOCX unpacks to more than ${Math.round(limits.zipMaxBytes / 1048576)} MB; it is refused as a possible zip bomb.`,
          ),
        );
        return;
      }
      zip.readEntry();
    });
    zip.on("end", () => resolve());
    zip.on("error", () => reject(new ExtractError("corrupt", "The DOCX is damaged (not a valid zip).")));
    zip.readEntry();
  });
}

async function extractDocx(data: Buffer, limits: ExtractLimits): Promise<Extracted> {
  await checkZip(data, limits);
  const mammoth = (await import("mammoth")).default;
  let html: string;
  try {
    // External files stay unread (mammoth's default since 1.11, said here so a change of default cannot slip in);
    // images are dropped: only text is indexed.
    const result = await mammoth.convertToHtml(
      { buffer: data },
      { externalFileAccess: false, convertImage: mammoth.images.imgElement(async () => ({ src: "" })) },
    );
    html = result.value;
  } catch {
    throw new ExtractError("corrupt", "The DOCX is damaged or not a Word document.");
  }
  return { blocks: htmlBlocks(html) };
}

const SKIP = new Set(["script", "style", "noscript", "template", "head", "svg", "iframe", "object"]);
const BLOCK = new Set([
  "p",
  "div",
  "li",
  "tr",
  "br",
  "section",
  "article",
  "blockquote",
  "pre",
  "td",
  "th",
  "table",
  "ul",
  "ol",
]);

/** Text blocks of an HTML document, with the heading path (h1-h6) above each; scripts and styles are dropped. */
export function htmlBlocks(html: string): Block[] {
  const blocks: Block[] = [];
  const headings: string[] = [];
  let skipping = 0;
  let text = "";
  let heading: number | null = null;
  const flush = () => {
    const t = text.replace(/\s+/g, " ").trim();
    text = "";
    if (!t) return;
    if (heading !== null) {
      headings.splice(heading - 1);
      while (headings.length < heading - 1) headings.push("");
      headings.push(t);
    } else blocks.push({ text: t, headings: headings.filter(Boolean) });
  };
  const parser = new Parser(
    {
      onopentag(name) {
        if (SKIP.has(name)) skipping++;
        else if (/^h[1-6]$/.test(name)) {
          flush();
          heading = Number(name[1]);
        } else if (BLOCK.has(name)) flush();
      },
      ontext(t) {
        if (!skipping) text += t;
      },
      onclosetag(name) {
        if (SKIP.has(name)) skipping = Math.max(0, skipping - 1);
        else if (/^h[1-6]$/.test(name)) {
          flush();
          heading = null;
        } else if (BLOCK.has(name)) flush();
      },
    },
    { decodeEntities: true },
  );
  parser.write(html);
  parser.end();
  flush();
  return blocks;
}

/** Blocks of a Markdown document: paragraphs under their ATX headings (# ...). */
export function markdownBlocks(md: string): Block[] {
  const blocks: Block[] = [];
  const headings: string[] = [];
  let para: string[] = [];
  const flush = () => {
    const t = para.join("\n").trim();
    para = [];
    if (t) blocks.push({ text: t, headings: headings.filter(Boolean) });
  };
  let fence = false;
  for (const line of md.split(/\r?\n/)) {
    if (/^\s*(```|~~~)/.test(line)) fence = !fence;
    const h = !fence && /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (h) {
      flush();
      const level = (h[1] as string).length;
      headings.splice(level - 1);
      while (headings.length < level - 1) headings.push("");
      headings.push(h[2] as string);
    } else if (!fence && !line.trim()) flush();
    else para.push(line);
  }
  flush();
  return blocks;
}
