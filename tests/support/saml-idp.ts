// A real SAML identity provider for tests: Debian's SimpleSAMLphp served by `php -S`, configured here.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { selfSigned, type CertFiles } from "./certs.js";
import { freePort } from "./slapd.js";

const WWW = process.env.SIMPLESAMLPHP_WWW ?? "/usr/share/simplesamlphp/www";

/** A person the IdP knows: password and attributes (each a list of values). */
export interface IdpUser {
  username: string;
  password: string;
  attributes: Record<string, string[]>;
}

/** A running SimpleSAMLphp IdP. */
export interface SamlIdp {
  url: string;
  entityId: string;
  metadataUrl: string;
  cert: CertFiles;
  /** Registers a service provider (its entity id, ACS URL and single logout URL) at the IdP. */
  addSp(entityId: string, acsUrl: string, sloUrl?: string): void;
  stop(): Promise<void>;
}

const php = (v: unknown): string => {
  if (Array.isArray(v)) return `[${v.map(php).join(", ")}]`;
  if (v && typeof v === "object")
    return `[${Object.entries(v)
      .map(([k, x]) => `${php(k)} => ${php(x)}`)
      .join(", ")}]`;
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") return String(v);
  return `'${String(v).replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
};

/**
 * Starts SimpleSAMLphp as an IdP with a username/password source holding `users`, on `host` (a loopback
 * address: another one than the server's makes the IdP another site, as a real IdP is, for the browser).
 */
export async function startSamlIdp(users: IdpUser[], host = "127.0.0.1"): Promise<SamlIdp> {
  const dir = mkdtempSync(path.join(tmpdir(), "ws-idp-"));
  for (const d of ["config", "metadata", "cert", "log", "data", "tmp"]) mkdirSync(path.join(dir, d));
  const cert = selfSigned("test-idp", path.join(dir, "cert"));
  const port = await freePort();
  const url = `http://${host}:${port}`;
  const entityId = `${url}/saml2/idp/metadata.php`;
  const conf = {
    baseurlpath: `${url}/`,
    certdir: path.join(dir, "cert") + "/",
    loggingdir: path.join(dir, "log") + "/",
    datadir: path.join(dir, "data") + "/",
    tempdir: path.join(dir, "tmp"),
    metadatadir: path.join(dir, "metadata") + "/",
    technicalcontact_name: "Test",
    technicalcontact_email: "test@example.org",
    secretsalt: randomBytes(16).toString("hex"),
    "auth.adminpassword": randomBytes(16).toString("hex"),
    "admin.protectindexpage": false,
    "admin.protectmetadata": false,
    timezone: "UTC",
    "logging.handler": "file",
    "logging.logfile": "simplesamlphp.log",
    "enable.saml20-idp": true,
    "module.enable": { exampleauth: true, core: true, saml: true, admin: true },
    "store.type": "phpsession",
    "session.cookie.secure": false,
    "session.phpsession.cookiename": "IDPSESSID",
    "session.cookie.name": "IdpSessionID",
    "session.authtoken.cookiename": "IdpAuthToken",
    "language.default": "en",
    "metadata.sources": [{ type: "flatfile" }],
  };
  writeFileSync(path.join(dir, "config", "config.php"), `<?php\n$config = ${php(conf)};\n`);
  const source: Record<string, unknown> = { 0: "exampleauth:UserPass" };
  for (const u of users) source[`${u.username}:${u.password}`] = u.attributes;
  writeFileSync(
    path.join(dir, "config", "authsources.php"),
    `<?php\n$config = ['admin' => ['core:AdminPassword'], 'users' => ${php(source).replace("'0' => ", "")}];\n`,
  );
  writeFileSync(
    path.join(dir, "metadata", "saml20-idp-hosted.php"),
    `<?php\n$metadata[${php(entityId)}] = ${php({
      host: "__DEFAULT__",
      privatekey: "test-idp.key",
      certificate: "test-idp.crt",
      auth: "users",
      "attributes.NameFormat": "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
      "saml20.sign.assertion": true,
      "saml20.sign.response": true,
      authproc: {
        10: {
          class: "saml:AttributeNameID",
          attribute: "mail",
          Format: "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        },
      },
    })};\n`,
  );
  const sps: Record<string, unknown> = {};
  const writeSps = () =>
    writeFileSync(
      path.join(dir, "metadata", "saml20-sp-remote.php"),
      `<?php\n${Object.entries(sps)
        .map(([id, m]) => `$metadata[${php(id)}] = ${php(m)};`)
        .join("\n")}\n`,
    );
  writeSps();
  const child: ChildProcess = spawn("php", ["-S", `${host}:${port}`, "-t", WWW], {
    // Several workers: the built-in server is otherwise one request at a time, and a kept-alive idle
    // connection (a browser's, or fetch's) would stall everyone else.
    env: { ...process.env, SIMPLESAMLPHP_CONFIG_DIR: path.join(dir, "config"), PHP_CLI_SERVER_WORKERS: "4" },
    stdio: ["ignore", "ignore", "pipe"],
    // Its own process group: php forks workers, and stopping must end them too.
    detached: true,
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(`${url}/saml2/idp/metadata.php`);
      if (r.status === 200) break;
      throw new Error(`metadata ${r.status}: ${(await r.text()).slice(0, 500)}`);
    } catch (err) {
      if (i > 100 || child.exitCode !== null)
        throw new Error(`SimpleSAMLphp did not start: ${String(err)} ${stderr}`, { cause: err });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url,
    entityId,
    metadataUrl: `${url}/saml2/idp/metadata.php`,
    cert,
    addSp(spEntityId, acsUrl, sloUrl) {
      sps[spEntityId] = {
        AssertionConsumerService: acsUrl,
        ...(sloUrl
          ? {
              SingleLogoutService: [
                { Binding: "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect", Location: sloUrl },
              ],
            }
          : {}),
        NameIDFormat: "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
      };
      writeSps();
    },
    stop: async () => {
      try {
        if (child.pid) process.kill(-child.pid, "SIGTERM");
      } catch {
        // already gone
      }
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once("exit", r)));
      if (!process.env.KEEP_IDP) rmSync(dir, { recursive: true, force: true });
    },
  };
}
