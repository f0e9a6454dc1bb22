import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** A random opaque token (256 bits). */
export const newToken = () => randomBytes(32).toString("base64url");
/** How tokens are stored: their SHA-256, never the token. */
export const tokenHash = (token: string) => createHash("sha256").update(token).digest("hex");

/** Compares two hex hashes in constant time. */
export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, "hex");
  const y = Buffer.from(b, "hex");
  return x.length === y.length && timingSafeEqual(x, y);
}

/** An API key: `wsk_<prefix>_<secret>`; the prefix is shown in lists, the whole key only once. */
export function newApiKey(): { key: string; prefix: string; hash: string } {
  const prefix = randomBytes(6).toString("hex");
  const key = `wsk_${prefix}_${randomBytes(24).toString("base64url")}`;
  return { key, prefix, hash: tokenHash(key) };
}

/** Splits an API key into its prefix, or undefined when it is not shaped like one. */
export function apiKeyPrefix(key: string): string | undefined {
  return /^wsk_([0-9a-f]{12})_[A-Za-z0-9_-]{32}$/.exec(key)?.[1];
}
