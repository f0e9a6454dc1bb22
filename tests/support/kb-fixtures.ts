// Documents the knowledge-base tests upload: real PDF and DOCX files made here, and hostile ones.
import { randomBytes } from "node:crypto";
import { Document, HeadingLevel, Packer, Paragraph } from "docx";
import { PDFDocument, StandardFonts } from "pdf-lib";
import yazl from "yazl";

/** One page of a generated PDF: its lines of text. */
export type PdfPage = string[];

/** A real multi-page PDF with text on each page (Helvetica, wrapped at 90 characters). */
export async function makePdf(pages: PdfPage[]): Promise<Buffer> {
  const doc = await PDFDocument.create();
  const font = await doc.embedFont(StandardFonts.Helvetica);
  for (const lines of pages) {
    const page = doc.addPage([595, 842]);
    let y = 800;
    for (const line of lines) {
      for (const part of wrap(line, 90)) {
        page.drawText(part, { x: 40, y, size: 11, font });
        y -= 16;
      }
      y -= 10;
    }
  }
  return Buffer.from(await doc.save());
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if ((line + " " + word).trim().length > width) {
      out.push(line);
      line = word;
    } else line = (line + " " + word).trim();
  }
  if (line) out.push(line);
  return out;
}

/** A PDF written object by object, with a correct cross-reference table. */
function rawPdf(objects: string[], trailer = ""): Buffer {
  let body = "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
  const offsets: number[] = [];
  objects.forEach((o, i) => {
    offsets.push(Buffer.byteLength(body, "latin1"));
    body += `${i + 1} 0 obj\n${o}\nendobj\n`;
  });
  const xref = Buffer.byteLength(body, "latin1");
  body += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const off of offsets) body += `${String(off).padStart(10, "0")} 00000 n \n`;
  body += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R ${trailer}>>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(body, "latin1");
}

const hex = (n: number) => randomBytes(n).toString("hex");

/** A PDF encrypted with the standard security handler and a user password (not the empty one). */
export function makeEncryptedPdf(): Buffer {
  const content = randomBytes(40).toString("latin1");
  return rawPdf(
    [
      "<< /Type /Catalog /Pages 2 0 R >>",
      "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
      "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
      `<< /Length ${content.length} >>\nstream\n${content}\nendstream`,
      `<< /Filter /Standard /V 1 /R 2 /O <${hex(32)}> /U <${hex(32)}> /P -44 >>`,
    ],
    `/Encrypt 5 0 R /ID [<${hex(16)}> <${hex(16)}>] `,
  );
}

/** A page tree that lists one page hundreds of thousands of times: a tiny file that keeps a parser busy. */
export function makeLoopingPdf(count = 400_000): Buffer {
  const kids = Array.from({ length: count }, () => "3 0 R").join(" ");
  const text = "BT /F1 12 Tf 40 800 Td (again and again) Tj ET";
  return rawPdf([
    "<< /Type /Catalog /Pages 2 0 R >>",
    `<< /Type /Pages /Kids [${kids}] /Count ${count} >>`,
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
    `<< /Length ${text.length} >>\nstream\n${text}\nendstream`,
    "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
  ]);
}

/** Bytes that start like a PDF and are not one. */
export function makeCorruptPdf(): Buffer {
  return Buffer.concat([Buffer.from("%PDF-1.7\n1 0 obj\n<< /Type /Catalog"), randomBytes(4000)]);
}

/** A real DOCX with headings (Heading 1 and 2) and paragraphs under them. */
export async function makeDocx(
  sections: { h1: string; h2?: string; paragraphs: string[] }[],
): Promise<Buffer> {
  const children: Paragraph[] = [];
  for (const s of sections) {
    children.push(new Paragraph({ text: s.h1, heading: HeadingLevel.HEADING_1 }));
    if (s.h2) children.push(new Paragraph({ text: s.h2, heading: HeadingLevel.HEADING_2 }));
    for (const p of s.paragraphs) children.push(new Paragraph({ text: p }));
  }
  return Packer.toBuffer(new Document({ sections: [{ children }] }));
}

const CONTENT_TYPES = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
</Types>`;
const ROOT_RELS = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>
</Relationships>`;
const W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"';

/** A zip archive of the given entries. */
export function makeZip(entries: { name: string; data: Buffer; compress?: boolean }[]): Promise<Buffer> {
  const z = new yazl.ZipFile();
  for (const e of entries) z.addBuffer(e.data, e.name, { compress: e.compress ?? true });
  z.end();
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    z.outputStream.on("data", (d: Buffer) => parts.push(d));
    z.outputStream.on("end", () => resolve(Buffer.concat(parts)));
    z.outputStream.on("error", reject);
  });
}

/** A DOCX (a Word zip, recognized as DOCX) whose one extra entry inflates to `megabytes` of zeros. */
export async function makeZipBombDocx(megabytes = 300): Promise<Buffer> {
  return makeZip([
    { name: "[Content_Types].xml", data: Buffer.from(CONTENT_TYPES) },
    { name: "_rels/.rels", data: Buffer.from(ROOT_RELS) },
    {
      name: "word/document.xml",
      data: Buffer.from(
        `<w:document ${W}><w:body><w:p><w:r><w:t>bomb</w:t></w:r></w:p></w:body></w:document>`,
      ),
    },
    { name: "word/media/zeros.bin", data: Buffer.alloc(megabytes * 1024 * 1024) },
  ]);
}

/** A DOCX with text and an image linked (not embedded) to a file on the server's disk. */
export async function makeExternalImageDocx(target: string, text: string): Promise<Buffer> {
  const doc = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document ${W} xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"
 xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"
 xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"
 xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture">
<w:body>
<w:p><w:r><w:t>${text}</w:t></w:r></w:p>
<w:p><w:r><w:drawing><wp:inline><wp:extent cx="100" cy="100"/><wp:docPr id="1" name="linked"/>
<a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture"><pic:pic>
<pic:nvPicPr><pic:cNvPr id="1" name="linked"/><pic:cNvPicPr/></pic:nvPicPr>
<pic:blipFill><a:blip r:link="rIdImg"/></pic:blipFill><pic:spPr/></pic:pic></a:graphicData></a:graphic>
</wp:inline></w:drawing></w:r></w:p>
</w:body></w:document>`;
  const rels = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rIdImg" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image" Target="file://${target}" TargetMode="External"/>
</Relationships>`;
  return makeZip([
    { name: "[Content_Types].xml", data: Buffer.from(CONTENT_TYPES) },
    { name: "_rels/.rels", data: Buffer.from(ROOT_RELS) },
    { name: "word/document.xml", data: Buffer.from(doc) },
    { name: "word/_rels/document.xml.rels", data: Buffer.from(rels) },
  ]);
}
