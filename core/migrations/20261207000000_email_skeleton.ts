import type { Knex } from "knex";
import { emailSkeleton } from "../src/modules/identity/emails.js";

/**
 * Each account's email look-alike key (NFKC, confusable letters folded, lower case), so an identity provider
 * cannot bring in an address that differs from an existing account's only by look-alike Unicode. The lookup is
 * installation-wide, as addresses are, through a security-definer function that answers only yes or no.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("users", (t) => t.text("email_skeleton"));
  const users = (await knex("users").select("id", "email")) as { id: string; email: string }[];
  for (const u of users)
    await knex("users")
      .where({ id: u.id })
      .update({ email_skeleton: emailSkeleton(u.email) });
  await knex.raw("create index users_email_skeleton on users (email_skeleton)");
  await knex.raw(`
    create function email_lookalike(p_skeleton text, p_email text) returns boolean
    language sql stable security definer set search_path = public, pg_temp as $$
      select exists (select 1 from users where email_skeleton = p_skeleton and lower(email) <> lower(p_email))
    $$`);
  const app = (await knex.raw("select current_setting('worksynapse.app_role') as r")).rows[0].r as string;
  await knex.raw("revoke all on function email_lookalike(text, text) from public");
  await knex.raw(`grant execute on function email_lookalike(text, text) to "${app}"`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw("drop function email_lookalike(text, text)");
  await knex.schema.alterTable("users", (t) => t.dropColumn("email_skeleton"));
}
