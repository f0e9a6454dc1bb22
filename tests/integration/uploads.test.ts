// File names and size limits of uploads, as browsers send them: UTF-8 names (raw, and RFC 5987 filename*),
// NFC, control characters, long names, a file of exactly the limit, a request refused from its Content-Length
// before its body is read, and chat downloads that never run as a page of ours.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createTestOrg, type TestOrg } from "../support/identity.js";
import { uploadFiles, uploadFilesOk } from "../support/kb.js";
import { cleanFileName } from "../../core/src/platform/http/uploads.js";

type Data<T> = { data: T };
const MAX = 2048;
let srv: TestServer;
let org: TestOrg;
let collection: string;

beforeAll(async () => {
  srv = await getTestServer({
    env: {
      WORKSYNAPSE_KB_MAX_FILE_BYTES: String(MAX),
      WORKSYNAPSE_KB_MAX_UPLOAD_BYTES: String(64 * 1024),
      WORKSYNAPSE_CHAT_MAX_FILE_BYTES: String(MAX),
    },
  });
  org = await createTestOrg(srv, "uploads");
  collection = (
    await org.owner.json<Data<{ id: string }>>("POST", "/api/kb/collections", { name: "Files" }, 201)
  ).data.id;
});
afterAll(() => srv?.close());

/** A multipart body written by hand, for the header forms FormData does not produce. */
function multipart(disposition: string, data: string) {
  const boundary = "----wsboundary7d9";
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="files"; ${disposition}\r\n`),
    Buffer.from(`Content-Type: text/plain\r\n\r\n${data}\r\n--${boundary}--\r\n`),
  ]);
  return { body, type: `multipart/form-data; boundary=${boundary}` };
}

describe("file names", () => {
  it("keeps a UTF-8 name as a browser sends it (raw bytes in filename=)", async () => {
    const [r] = await uploadFilesOk(srv, org.owner, collection, [
      { name: "résumé été.txt", data: "curriculum one" },
    ]);
    expect(r?.document?.name).toBe("résumé été.txt");
  });

  it("decodes RFC 5987 filename*=UTF-8'' and normalises to NFC", async () => {
    const { body, type } = multipart(
      `filename="resume.txt"; filename*=UTF-8''${encodeURIComponent("cafe\u0301 menu.txt")}`,
      "menu of the day",
    );
    const r = await srv.fetch(`/api/kb/collections/${collection}/documents`, {
      method: "POST",
      headers: org.owner.headers({ "content-type": type }),
      body,
    });
    expect(r.status).toBe(201);
    const [doc] = ((await r.json()) as Data<{ document: { name: string } }[]>).data;
    expect(doc?.document.name).toBe("café menu.txt");
    expect(doc?.document.name).toBe("café menu.txt".normalize("NFC"));
  });

  it("strips control characters and shortens a long name keeping its extension", async () => {
    const long = `${"ü".repeat(200)}.txt`;
    const [a, b] = await uploadFilesOk(srv, org.owner, collection, [
      { name: "bell\u202Egnp.txt", data: "a format character" },
      { name: long, data: "a long name" },
    ]);
    expect(a?.document?.name).toBe("bellgnp.txt");
    expect(b?.document?.name.endsWith("….txt")).toBe(true);
    expect(Buffer.byteLength(b?.document?.name as string)).toBeLessThanOrEqual(255);
    // A control character can come only percent-encoded (filename*): raw, it breaks the header.
    const { body, type } = multipart(`filename*=UTF-8''${encodeURIComponent("tab\tbell\u0007.txt")}`, "ctl");
    const r = await srv.fetch(`/api/kb/collections/${collection}/documents`, {
      method: "POST",
      headers: org.owner.headers({ "content-type": type }),
      body,
    });
    expect(((await r.json()) as Data<{ document: { name: string } }[]>).data[0]?.document.name).toBe(
      "tabbell.txt",
    );
    expect(cleanFileName("../../etc/passwd")).toBe("passwd");
    expect(cleanFileName("C:\\Users\\x\\report.pdf")).toBe("report.pdf");
    expect(cleanFileName("")).toBe("unnamed");
    expect(cleanFileName("..")).toBe("unnamed");
  });
});

describe("size limits", () => {
  it("accepts a file of exactly the limit and refuses one byte more, saying 'larger than'", async () => {
    const results = await uploadFilesOk(srv, org.owner, collection, [
      { name: "exact.txt", data: "e".repeat(MAX) },
      { name: "over.txt", data: "o".repeat(MAX + 1) },
    ]);
    expect(results.map((r) => r.outcome)).toEqual(["queued", "refused"]);
    expect(JSON.stringify(results[1])).toContain("over.txt is larger than");
  });

  it("refuses an upload over the request limit from its Content-Length, before reading the body", async () => {
    const started = Date.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(srv.url).port), "127.0.0.1", () => {
        socket.write(
          [
            `POST /api/kb/collections/${collection}/documents HTTP/1.1`,
            `Host: ${new URL(srv.url).host}`,
            ...Object.entries(org.owner.headers()).map(([k, v]) => `${k}: ${v}`),
            "Content-Type: multipart/form-data; boundary=x",
            `Content-Length: ${1600 * 1024 * 1024}`,
            "",
            "",
          ].join("\r\n"),
        );
      });
      let text = "";
      socket.on("data", (d) => (text += d.toString()));
      socket.on("end", () => resolve(text));
      socket.on("error", reject);
    });
    expect(answer).toMatch(/^HTTP\/1.1 413/);
    expect(answer.toLowerCase()).toContain("connection: close");
    expect(answer).toContain("upload_too_large");
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("stops reading a streamed upload at the limit and closes the connection", async () => {
    const r = await uploadFiles(srv, org.owner, collection, [
      { name: "a.txt", data: "a".repeat(40 * 1024) },
      { name: "b.txt", data: "b".repeat(40 * 1024) },
    ]);
    expect(r.status).toBe(413);
    expect(r.headers.get("connection")).toBe("close");
  });
});

describe("downloads", () => {
  it("chat files come as attachments with a sandbox policy, whatever they contain", async () => {
    const channel = (
      await org.owner.json<Data<{ id: string }>>(
        "POST",
        "/api/chat/channels",
        { kind: "public", name: `files-${org.marker.toLowerCase()}`, memberIds: [] },
        201,
      )
    ).data.id;
    const form = new FormData();
    form.append("files", new Blob(["<script>alert(1)</script>"], { type: "text/html" }), "page.html");
    const posted = await srv.fetch(`/api/chat/channels/${channel}/files`, {
      method: "POST",
      headers: org.owner.headers(),
      body: form,
    });
    expect(posted.status).toBe(201);
    const file = ((await posted.json()) as Data<{ attachments: { id: string }[] }>).data.attachments[0];
    const r = await org.owner.request("GET", `/api/chat/channels/${channel}/files/${file?.id}`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-security-policy")).toContain("sandbox");
    expect(r.headers.get("content-disposition")).toContain("attachment");
  });
});
