// A real OpenLDAP server (Debian's slapd) for tests: generated config and directory on free ports, plain and TLS.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Client } from "ldapts";
import { selfSigned, serverCert, type CertFiles } from "./certs.js";

/** A running slapd with its URLs, admin credentials and CA. */
export interface Slapd {
  url: string;
  tlsUrl: string;
  base: string;
  adminDn: string;
  adminPassword: string;
  ca: CertFiles;
  /** Runs changes as the directory's administrator. */
  admin<T>(fn: (c: Client) => Promise<T>): Promise<T>;
  stop(): Promise<void>;
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const SLAPD = process.env.SLAPD_BIN ?? "/usr/sbin/slapd";

/** Starts slapd with the given LDIF entries (under dc=corp,dc=example) loaded by slapadd. */
export async function startSlapd(ldif: string): Promise<Slapd> {
  const dir = mkdtempSync(path.join(tmpdir(), "ws-slapd-"));
  const db = path.join(dir, "db");
  mkdirSync(db);
  const ca = selfSigned("test-ldap-ca", dir);
  const cert = serverCert(ca, "ldap-server");
  const base = "dc=corp,dc=example";
  const adminDn = `cn=admin,${base}`;
  const adminPassword = "directory-admin-secret";
  const conf = path.join(dir, "slapd.conf");
  writeFileSync(
    conf,
    [
      "include /etc/ldap/schema/core.schema",
      "include /etc/ldap/schema/cosine.schema",
      "include /etc/ldap/schema/inetorgperson.schema",
      "include /etc/ldap/schema/nis.schema",
      `pidfile ${dir}/slapd.pid`,
      "modulepath /usr/lib/ldap",
      "moduleload back_mdb",
      "moduleload memberof",
      `TLSCACertificateFile ${ca.certFile}`,
      `TLSCertificateFile ${cert.certFile}`,
      `TLSCertificateKeyFile ${cert.keyFile}`,
      "database mdb",
      "maxsize 104857600",
      `suffix "${base}"`,
      `rootdn "${adminDn}"`,
      `rootpw ${adminPassword}`,
      `directory ${db}`,
      "overlay memberof",
      "access to attrs=userPassword by self auth by anonymous auth by * none",
      "access to * by users read by * none",
      "",
    ].join("\n"),
  );
  const root = `dn: ${base}\nobjectClass: dcObject\nobjectClass: organization\ndc: corp\no: Corp\n\n`;
  writeFileSync(path.join(dir, "data.ldif"), root + ldif);
  execFileSync("/usr/sbin/slapadd", ["-f", conf, "-l", path.join(dir, "data.ldif")], { stdio: "pipe" });
  const port = await freePort();
  const tlsPort = await freePort();
  const url = `ldap://127.0.0.1:${port}`;
  const tlsUrl = `ldaps://127.0.0.1:${tlsPort}`;
  const child: ChildProcess = spawn(SLAPD, ["-d", "0", "-f", conf, "-h", `${url}/ ${tlsUrl}/`], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const admin = async <T>(fn: (c: Client) => Promise<T>): Promise<T> => {
    const c = new Client({ url, timeout: 5000, connectTimeout: 5000 });
    try {
      await c.bind(adminDn, adminPassword);
      return await fn(c);
    } finally {
      await c.unbind();
    }
  };
  for (let i = 0; ; i++) {
    try {
      await admin(async () => undefined);
      break;
    } catch (err) {
      if (i > 100 || child.exitCode !== null)
        throw new Error(`slapd did not start: ${stderr || String(err)}`, { cause: err });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url,
    tlsUrl,
    base,
    adminDn,
    adminPassword,
    ca,
    admin,
    stop: async () => {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once("exit", r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** LDIF for a person under ou=people. */
export function personLdif(uid: string, name: string, mail: string, password: string): string {
  return `dn: uid=${uid},ou=people,dc=corp,dc=example\nobjectClass: inetOrgPerson\nuid: ${uid}\ncn: ${name}\nsn: ${name.split(" ").pop()}\nmail: ${mail}\nuserPassword: ${password}\n\n`;
}

/** LDIF for a groupOfNames under ou=groups. */
export function groupLdif(cn: string, members: string[]): string {
  return `dn: cn=${cn},ou=groups,dc=corp,dc=example\nobjectClass: groupOfNames\ncn: ${cn}\n${members.map((m) => `member: uid=${m},ou=people,dc=corp,dc=example`).join("\n")}\n\n`;
}

/** The two organizational units. */
export const OUS =
  "dn: ou=people,dc=corp,dc=example\nobjectClass: organizationalUnit\nou: people\n\n" +
  "dn: ou=groups,dc=corp,dc=example\nobjectClass: organizationalUnit\nou: groups\n\n";
