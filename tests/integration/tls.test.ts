import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent, fetch as undiciFetch } from "undici";
import { selfSigned, serverCert, type CertFiles } from "../support/certs.js";
import { NATS_URL } from "../support/env.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";
import { spawnCore, type CoreProcess } from "../support/process.js";

/** The built-in HTTPS server: certificate files, TLS 1.2 and newer only, HSTS, reload on SIGHUP. */
const dir = mkdtempSync(path.join(tmpdir(), "ws-tls-"));
const certPath = path.join(dir, "live.crt");
const keyPath = path.join(dir, "live.key");
let ca: CertFiles;
let first: CertFiles;
let second: CertFiles;
let db: TestDatabase;
let core: CoreProcess;
let port: number;

/** The certificate the server presents to a new connection, and the protocol agreed. */
function handshake(opts: tls.ConnectionOptions = {}): Promise<{ fingerprint: string; protocol: string }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, ca: ca.cert, servername: "localhost", ...opts }, () => {
      const r = { fingerprint: s.getPeerCertificate().fingerprint256, protocol: s.getProtocol() ?? "" };
      s.end();
      resolve(r);
    });
    s.once("error", reject);
  });
}
const fingerprintOf = (c: CertFiles) => new X509Certificate(c.cert).fingerprint256;

async function waitForLine(pattern: RegExp, ms = 10_000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const line = core.lines.find((l) => pattern.test(l));
    if (line) return line;
    if (Date.now() > end) throw new Error(`no log line ${pattern}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  ca = selfSigned("Site CA", dir);
  first = serverCert(ca, "first");
  second = serverCert(ca, "second");
  copyFileSync(first.certFile, certPath);
  copyFileSync(first.keyFile, keyPath);
  db = await createTestDatabase("tls");
  core = spawnCore(
    {
      DATABASE_URL: db.url,
      NATS_URL,
      WORKSYNAPSE_NATS_PREFIX: `tls${process.pid}`,
      WORKSYNAPSE_HTTP_TLS_CERT_PATH: certPath,
      WORKSYNAPSE_HTTP_TLS_KEY_PATH: keyPath,
    },
    ["--roles", "web"],
  );
  const url = await Promise.race([
    core.url,
    core.exit.then((e) => {
      throw new Error(`core exited ${JSON.stringify(e)}: ${core.stderr()}`);
    }),
  ]);
  expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  port = Number(new URL(url).port);
}, 120_000);

afterAll(async () => {
  core?.child.kill("SIGTERM");
  await core?.exit;
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe("the built-in HTTPS server", () => {
  it("serves over TLS with the site's certificate and sends HSTS", async () => {
    const dispatcher = new Agent({ connect: { ca: ca.cert } });
    const r = await undiciFetch(`https://localhost:${port}/readyz`, { dispatcher });
    expect(r.status).toBe(200);
    expect(r.headers.get("strict-transport-security")).toBe("max-age=31536000");
    await dispatcher.close();
    expect((await handshake()).fingerprint).toBe(fingerprintOf(first));
    // A client that does not trust the site CA is refused by its own check: the certificate is the site's.
    await expect(handshake({ ca: undefined })).rejects.toThrow(/self[- ]signed|unable to (get|verify)/i);
  });

  it("accepts TLS 1.2 and 1.3 and refuses anything older", async () => {
    expect((await handshake({ maxVersion: "TLSv1.2" })).protocol).toBe("TLSv1.2");
    expect((await handshake()).protocol).toBe("TLSv1.3");
    // The client is willing to speak TLS 1.0/1.1 (lowest security level); the server refuses.
    await expect(
      handshake({ minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" }),
    ).rejects.toThrow(/protocol|version|alert/i);
  });

  it("takes a renewed certificate on SIGHUP, and keeps the running one when the new files are bad", async () => {
    copyFileSync(second.certFile, certPath);
    copyFileSync(second.keyFile, keyPath);
    core.child.kill("SIGHUP");
    await waitForLine(/TLS certificate and key reloaded/);
    expect((await handshake()).fingerprint).toBe(fingerprintOf(second));

    writeFileSync(certPath, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n");
    core.child.kill("SIGHUP");
    await waitForLine(/TLS reload failed; the previous certificate stays in use/);
    expect((await handshake()).fingerprint).toBe(fingerprintOf(second));
    expect(core.child.exitCode).toBeNull();
  });

  it("refuses to start with a certificate and no key, naming both settings", async () => {
    const bad = spawnCore({ WORKSYNAPSE_HTTP_TLS_CERT_PATH: certPath }, ["--roles", "web"]);
    const exit = await bad.exit;
    expect(exit.code).toBe(2);
    expect(bad.stderr()).toMatch(/set both certPath and keyPath/);
  });
});
