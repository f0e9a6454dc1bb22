import { Algorithm, hash, verify } from "@node-rs/argon2";
import { dictionary } from "@zxcvbn-ts/language-common";

/** OWASP's argon2id settings: 19 MiB, 2 passes, 1 lane. */
const OPTIONS = { algorithm: Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 };
/** Shortest and longest accepted password (NIST 800-63B: at least 8, allow at least 64; we ask 12 and allow 256). */
export const PASSWORD_MIN = 12;
export const PASSWORD_MAX = 256;
const COMMON = new Set((dictionary["passwords-common"] as string[]).map((p) => p.toLowerCase()));

/** What is wrong with a new password (empty when it is acceptable); no composition rules. */
export function passwordProblems(password: string, context: { email?: string } = {}): string[] {
  const problems: string[] = [];
  const length = [...password].length;
  if (length < PASSWORD_MIN) problems.push(`Use at least ${PASSWORD_MIN} characters.`);
  if (length > PASSWORD_MAX) problems.push(`Use at most ${PASSWORD_MAX} characters.`);
  if (COMMON.has(password.toLowerCase())) problems.push("This password is too common; choose another.");
  const local = context.email?.split("@")[0]?.toLowerCase();
  if (local && local.length >= 4 && password.toLowerCase().includes(local)) {
    problems.push("Do not use your email address in your password.");
  }
  return problems;
}

/** An argon2id hash of a password. */
export const hashPassword = (password: string) => hash(password, OPTIONS);

/** Checks a password against a stored hash. */
export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  try {
    return await verify(stored, password);
  } catch {
    return false;
  }
}

let dummy: Promise<string> | undefined;
/** Spends the same time as a real check, so an unknown address cannot be told apart by timing. */
export async function burnPasswordCheck(password: string): Promise<void> {
  dummy ??= hashPassword("worksynapse-timing-equalizer");
  await verifyPassword(await dummy, password);
}
