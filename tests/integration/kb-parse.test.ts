import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocument, ParseFailed } from "../../core/src/modules/kb/parse/parser.js";
import { chunkBlocks } from "../../core/src/modules/kb/parse/chunk.js";
import { detectKind, FileRefused } from "../../core/src/modules/kb/parse/detect.js";
import type { Kind } from "../../core/src/modules/kb/parse/extract.js";
import {
  makeCorruptPdf,
  makeDocx,
  makeEncryptedPdf,
  makeExternalImageDocx,
  makeLoopingPdf,
  makePdf,
  makeZipBombDocx,
} from "../support/kb-fixtures.js";

const dir = mkdtempSync(path.join(tmpdir(), "ws-kb-parse-"));
const LIMITS = {
  timeoutMs: 4000,
  memoryMb: 256,
  zipMaxEntries: 2000,
  zipMaxBytes: 100 * 1024 * 1024,
  maxPages: 5000,
  maxTextChars: 20_000_000,
};
const put = (name: string, data: Buffer | string) => {
  const f = path.join(dir, name);
  writeFileSync(f, data);
  return f;
};
const parse = (name: string, data: Buffer | string, kind: Kind) =>
  parseDocument(put(name, data), kind, LIMITS);
const failure = async (p: Promise<unknown>) => {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ParseFailed);
  return err as ParseFailed;
};

describe("document parsing in a child process", () => {
  it("reads a PDF page by page and keeps page numbers", async () => {
    const out = await parse(
      "a.pdf",
      await makePdf([
        ["Intro page about triage."],
        ["Second page: sepsis bundle within one hour."],
        ["Third page."],
      ]),
      "pdf",
    );
    expect(out.pages).toBe(3);
    expect(out.blocks.find((b) => b.text.includes("sepsis"))?.page).toBe(2);
  });

  it("reads a DOCX with its heading path", async () => {
    const out = await parse(
      "a.docx",
      await makeDocx([
        { h1: "Infection control", h2: "Hand hygiene", paragraphs: ["Wash for twenty seconds."] },
        { h1: "Discharge", paragraphs: ["Book the follow-up visit."] },
      ]),
      "docx",
    );
    expect(out.blocks.find((b) => b.text.includes("twenty"))?.headings).toEqual([
      "Infection control",
      "Hand hygiene",
    ]);
    expect(out.blocks.find((b) => b.text.includes("follow-up"))?.headings).toEqual(["Discharge"]);
  });

  it("reads Markdown and HTML with headings, drops scripts and styles", async () => {
    const md = await parse("a.md", "# Runbook\n\n## Restart\n\nRun the restart script.\n", "md");
    expect(md.blocks).toEqual([{ text: "Run the restart script.", headings: ["Runbook", "Restart"] }]);
    const html = await parse(
      "a.html",
      "<html><head><style>p{}</style><script>alert(1)</script></head><body><h1>Policy</h1><p>Badge &amp; key.</p><script>steal()</script></body></html>",
      "html",
    );
    expect(html.blocks).toEqual([{ text: "Badge & key.", headings: ["Policy"] }]);
  });

  it("refuses a corrupted PDF, an encrypted PDF and a zip bomb with clear reasons", async () => {
    expect((await failure(parse("bad.pdf", makeCorruptPdf(), "pdf"))).code).toBe("corrupt");
    const enc = await failure(parse("enc.pdf", makeEncryptedPdf(), "pdf"));
    expect(enc.code).toBe("encrypted");
    expect(enc.message).toMatch(/password/);
    const bomb = await failure(parse("bomb.docx", await makeZipBombDocx(150), "docx"));
    expect(bomb.code).toBe("zip_limits");
    expect(bomb.message).toMatch(/zip bomb/);
  });

  it("stops a PDF that keeps the parser busy at the wall-clock limit", async () => {
    // With the page limit on (the default), its 400,000 pages are refused before any is read.
    const t1 = Date.now();
    const refused = await failure(parse("loop0.pdf", makeLoopingPdf(), "pdf"));
    expect(refused.code).toBe("too_large");
    expect(Date.now() - t1).toBeLessThan(3000);
    const t0 = Date.now();
    // Past the page limit and with enough memory to keep going: the wall clock stops it.
    const loose = { ...LIMITS, maxPages: 1_000_000 };
    const err = await failure(
      parseDocument(put("loop.pdf", makeLoopingPdf()), "pdf", { ...loose, timeoutMs: 2500, memoryMb: 2048 }),
    );
    expect(err.code).toBe("parse_timeout");
    expect(Date.now() - t0).toBeLessThan(2500 + 3000);
    // With the default memory, the same file hits the memory limit first: also stopped, also explained.
    const mem = await failure(parseDocument(put("loop2.pdf", makeLoopingPdf()), "pdf", loose));
    expect(["parse_timeout", "parse_memory"]).toContain(mem.code);
  });

  it("refuses a PDF past the page limit before reading it, and a document past the text limit", async () => {
    const pdf = await makePdf(Array.from({ length: 12 }, (_, i) => [`Page ${i + 1} of the long report.`]));
    const pages = await failure(parseDocument(put("long.pdf", pdf), "pdf", { ...LIMITS, maxPages: 10 }));
    expect(pages.code).toBe("too_large");
    expect(pages.message).toBe("The PDF has 12 pages; at most 10 are read.");
    const text = await failure(
      parseDocument(put("wordy.txt", "word ".repeat(600)), "txt", { ...LIMITS, maxTextChars: 1000 }),
    );
    expect(text.code).toBe("too_large");
    expect(text.message).toMatch(/more than 1,000 characters/);
    // Within the limits the same PDF reads, page by page.
    expect((await parseDocument(put("long2.pdf", pdf), "pdf", LIMITS)).pages).toBe(12);
  });

  it("watches the parser's whole resident memory, not only its heap", async () => {
    const { residentMb } = await import("../../core/src/modules/kb/parse/parser.js");
    const own = residentMb(process.pid) as number;
    expect(own).toBeGreaterThan(10);
    expect(Math.abs(own - process.memoryUsage().rss / 1048576)).toBeLessThan(64);
    // A file read into memory is held outside the JavaScript heap: the resident-set watch stops it.
    const big = put("big.txt", Buffer.alloc(160 * 1024 * 1024, "a"));
    const err = await failure(parseDocument(big, "txt", { ...LIMITS, memoryMb: 128 }));
    expect(err.code).toBe("parse_memory");
    expect(err.message).toBe("Reading the document needed more than 128 MB of memory; it was stopped.");
    // The next document gets a fresh parser.
    expect((await parse("after.txt", "Still reading.", "txt")).blocks[0]?.text).toBe("Still reading.");
  });

  it("a parser killed from outside between two documents: the next document is read by a new one", async () => {
    const { readdirSync, readFileSync } = await import("node:fs");
    expect((await parse("first.txt", "First document.", "txt")).blocks[0]?.text).toBe("First document.");
    const parsers = readdirSync("/proc")
      .filter((d) => /^\d+$/.test(d))
      .filter((pid) => {
        try {
          const ppid = Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ")[1]);
          return (
            ppid === process.pid && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("parse/worker.js")
          );
        } catch {
          return false;
        }
      });
    expect(parsers.length).toBe(1);
    process.kill(Number(parsers[0]), "SIGKILL");
    // At once, before the parent has seen it go: sent to the dead process, the document is read by a new one.
    expect((await parse("second.txt", "Second document.", "txt")).blocks[0]?.text).toBe("Second document.");
  });

  it("never reads a file a DOCX links to", async () => {
    const secret = put("secret.png", "SECRET-CONTENT-7731");
    const out = await parse("ext.docx", await makeExternalImageDocx(secret, "Visible text."), "docx");
    expect(JSON.stringify(out)).not.toContain("SECRET");
    expect(out.blocks.map((b) => b.text)).toEqual(["Visible text."]);
  });
});

describe("type detection", () => {
  it("refuses an extension that lies, an empty file and an unknown type", async () => {
    const pdf = await makePdf([["x"]]);
    const cases: [string, Buffer | string, string][] = [
      ["report.docx", pdf, "type_mismatch"],
      ["notes.txt", pdf, "type_mismatch"],
      [
        "photo.pdf",
        Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 0x4a, 0x46, 0x49, 0x46, 0, 1]),
        "type_mismatch",
      ],
      ["empty.txt", "", "empty_file"],
      ["tool.exe", "MZ", "unsupported_type"],
    ];
    for (const [name, data, code] of cases) {
      const f = put(name, data);
      const err = await detectKind(f, name, Buffer.byteLength(data)).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(FileRefused);
      expect((err as FileRefused).code, name).toBe(code);
    }
    expect(await detectKind(put("ok.pdf", pdf), "ok.pdf", pdf.length)).toBe("pdf");
    expect(await detectKind(put("ok.md", "# hi\n"), "ok.md", 5)).toBe("md");
  });
});

describe("chunking", () => {
  it("keeps chunks within size, never across pages or sections, with overlap and offsets", () => {
    const long = Array.from({ length: 120 }, (_, i) => `Sentence number ${i} about ward procedures.`).join(
      " ",
    );
    const chunks = chunkBlocks(
      [
        { text: long, page: 1, headings: ["A"] },
        { text: "Short on page two.", page: 2, headings: ["A"] },
        { text: "Under B.", page: 2, headings: ["B"] },
      ],
      { tokens: 100, overlap: 20 },
    );
    const page1 = chunks.filter((c) => c.page === 1);
    expect(page1.length).toBeGreaterThan(3);
    for (const c of page1) expect(c.text.length).toBeLessThanOrEqual(100 * 4 + 20 * 4);
    // Overlap: each next chunk of the same section starts with words from the previous one's end.
    const tail = (page1[0]?.text ?? "").split(" ").slice(-3).join(" ");
    expect(page1[1]?.text.startsWith(tail) || page1[1]?.text.includes(tail)).toBe(true);
    expect(chunks.map((c) => [c.page, c.headings])).toContainEqual([2, ["B"]]);
    expect(chunks.find((c) => c.text === "Under B.")).toBeTruthy();
    // Offsets point at the chunk's own text in the joined document.
    const docText = [long, "Short on page two.", "Under B."].join("\n\n");
    const last = chunks[chunks.length - 1]!;
    expect(docText.slice(last.start, last.end)).toBe("Under B.");
  });
});
