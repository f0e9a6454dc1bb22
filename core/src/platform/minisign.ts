import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from "node:crypto";
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";

/**
 * Ed25519 signatures in minisign's format (https://jedisct1.github.io/minisign/), so that a site verifies a
 * bundle with Debian's `minisign -Vm FILE -p minisign.pub` as well as with `worksynapse bundle verify`.
 * Signatures are of the file's BLAKE2b-512 hash ("ED", minisign's default), with a trusted comment signed too.
 * Signing keys are kept as PKCS#8 PEM files; the key id is the first 8 bytes of SHA-256 of the public key.
 */

export class SignatureError extends Error {}

const rawPublic = (key: KeyObject): Buffer =>
  Buffer.from((key.export({ format: "jwk" }) as { x: string }).x, "base64url");
const keyIdOf = (pk: Buffer): Buffer => createHash("sha256").update(pk).digest().subarray(0, 8);
const keyIdHex = (id: Buffer) => Buffer.from(id).reverse().toString("hex").toUpperCase();

/** A new signing key (PKCS#8 PEM, keep it secret) and its public key in minisign's format. */
export function generateSigningKey(): { privatePem: string; publicKey: string } {
  const { privateKey } = generateKeyPairSync("ed25519");
  const privatePem = privateKey.export({ format: "pem", type: "pkcs8" }) as string;
  return { privatePem, publicKey: minisignPublicKey(privatePem) };
}

/** The minisign public key file of a PKCS#8 PEM Ed25519 key. */
export function minisignPublicKey(privatePem: string): string {
  const pk = rawPublic(createPublicKey(createPrivateKey(privatePem)));
  const id = keyIdOf(pk);
  return `untrusted comment: minisign public key ${keyIdHex(id)}\n${Buffer.concat([Buffer.from("Ed"), id, pk]).toString("base64")}\n`;
}

async function blake2b(file: string): Promise<Buffer> {
  const h = createHash("blake2b512");
  await pipeline(createReadStream(file), h);
  return h.digest();
}

/** Signs a file; returns the text of its .minisig file. */
export async function signFile(file: string, privatePem: string, trustedComment: string): Promise<string> {
  if (/[\r\n]/.test(trustedComment)) throw new SignatureError("a trusted comment is one line");
  const key = createPrivateKey(privatePem);
  const id = keyIdOf(rawPublic(createPublicKey(key)));
  const sig = sign(null, await blake2b(file), key);
  const global = sign(null, Buffer.concat([sig, Buffer.from(trustedComment)]), key);
  return [
    `untrusted comment: signature from worksynapse secret key`,
    Buffer.concat([Buffer.from("ED"), id, sig]).toString("base64"),
    `trusted comment: ${trustedComment}`,
    global.toString("base64"),
    "",
  ].join("\n");
}

function parsePublicKey(text: string): { id: Buffer; key: KeyObject } {
  const line = text
    .split("\n")
    .map((l) => l.trim())
    .find((l) => l && !l.startsWith("untrusted comment:"));
  const raw = Buffer.from(line ?? "", "base64");
  if (raw.length !== 42 || raw.subarray(0, 2).toString() !== "Ed")
    throw new SignatureError("not a minisign public key");
  const pk = raw.subarray(10);
  const key = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: pk.toString("base64url") },
    format: "jwk",
  });
  return { id: raw.subarray(2, 10), key };
}

/** Verifies a file against its .minisig text and a minisign public key; returns the trusted comment. */
export async function verifyFile(file: string, signature: string, publicKey: string): Promise<string> {
  const { id, key } = parsePublicKey(publicKey);
  const lines = signature.split("\n").map((l) => l.replace(/\r$/, ""));
  const sigRaw = Buffer.from(lines[1] ?? "", "base64");
  const trusted = lines[2] ?? "";
  const global = Buffer.from(lines[3] ?? "", "base64");
  if (sigRaw.length !== 74 || !trusted.startsWith("trusted comment: ") || global.length !== 64)
    throw new SignatureError("not a minisign signature");
  const algorithm = sigRaw.subarray(0, 2).toString();
  if (algorithm !== "ED") throw new SignatureError(`unsupported signature algorithm ${algorithm}`);
  if (!sigRaw.subarray(2, 10).equals(id))
    throw new SignatureError("the signature was made with another key than this public key");
  const sig = sigRaw.subarray(10);
  if (!verify(null, await blake2b(file), key, sig))
    throw new SignatureError("the signature does not match the file: it was changed or damaged");
  const comment = trusted.slice("trusted comment: ".length);
  if (!verify(null, Buffer.concat([sig, Buffer.from(comment)]), key, global))
    throw new SignatureError("the trusted comment was changed");
  return comment;
}
