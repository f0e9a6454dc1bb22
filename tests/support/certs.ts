// Test certificates made with Debian's openssl: a CA, server certificates it signs, and self-signed keys.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** A key pair and certificate on disk, with the PEM texts. */
export interface CertFiles {
  keyFile: string;
  certFile: string;
  key: string;
  cert: string;
}

const openssl = (args: string[], cwd: string) => execFileSync("openssl", args, { cwd, stdio: "pipe" });

function read(dir: string, name: string): CertFiles {
  const keyFile = path.join(dir, `${name}.key`);
  const certFile = path.join(dir, `${name}.crt`);
  return { keyFile, certFile, key: readFileSync(keyFile, "utf8"), cert: readFileSync(certFile, "utf8") };
}

/** A self-signed certificate (a CA, or an IdP's signing key). */
export function selfSigned(name: string, dir = mkdtempSync(path.join(tmpdir(), "ws-cert-"))): CertFiles {
  openssl(
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", `/CN=${name}`]
      .concat(["-keyout", `${name}.key`, "-out", `${name}.crt`])
      .concat([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign,digitalSignature",
      ]),
    dir,
  );
  return read(dir, name);
}

/** A server certificate for 127.0.0.1 and localhost, signed by `ca`. */
export function serverCert(ca: CertFiles, name = "server"): CertFiles {
  const dir = path.dirname(ca.keyFile);
  writeFileSync(
    path.join(dir, `${name}.ext`),
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  openssl(
    [
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      "/CN=127.0.0.1",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
    ],
    dir,
  );
  openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      ca.certFile,
      "-CAkey",
      ca.keyFile,
      "-CAcreateserial",
    ].concat(["-days", "30", "-out", `${name}.crt`, "-extfile", `${name}.ext`]),
    dir,
  );
  return read(dir, name);
}
