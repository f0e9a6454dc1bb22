import { remove as withoutConfusables } from "confusables";
import type { Knex } from "knex";
import { AppError } from "../../platform/http/errors.js";

/** Control and format characters (zero-width joiners, bidi overrides...): never part of a real address. */
const INVISIBLE = /[\p{Cc}\p{Cf}]/u;

/**
 * The look-alike key of an email address: NFKC (fullwidth and compatibility forms folded), confusable letters
 * replaced by the Latin ones they imitate (the `confusables` library's table: Cyrillic, Greek, ...), lower case.
 * Two different addresses with one skeleton look identical on screen.
 */
export function emailSkeleton(email: string): string {
  return withoutConfusables(email.normalize("NFKC").replace(INVISIBLE, "")).normalize("NFKC").toLowerCase();
}

/** Why an address cannot be an account's, or null: invisible characters, or a form NFKC would change. */
export function emailProblem(email: string): string | null {
  if (INVISIBLE.test(email)) return "The email address holds invisible characters.";
  if (email.normalize("NFKC") !== email)
    return "The email address is not in normal form (it holds fullwidth or compatibility characters).";
  return null;
}

/** The columns an account's email is stored in (its look-alike key beside it). */
export const emailColumns = (email: string) => ({ email, email_skeleton: emailSkeleton(email) });

/**
 * Refuses an address that is not in normal form or that looks like another account's address anywhere in the
 * installation (the lookup is a security-definer function: it answers yes or no and shows nobody's address).
 */
export async function assertDistinctEmail(trx: Knex | Knex.Transaction, email: string): Promise<void> {
  const problem = emailProblem(email);
  if (problem) throw new AppError(400, "email_not_normal", problem, { field: "email" });
  const row = (await trx.raw("select email_lookalike(?, ?) as taken", [emailSkeleton(email), email]))
    .rows[0] as {
    taken: boolean;
  };
  if (row.taken)
    throw new AppError(
      409,
      "email_confusable",
      "This email address looks the same as another account's address but is a different one.",
      { field: "email" },
    );
}
