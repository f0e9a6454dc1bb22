import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import type { Config } from "../../config/schema.js";
import type { Caller } from "../../platform/auth/caller.js";
import { BUILTIN_ROLES } from "../../platform/auth/permissions.js";
import { withOrg } from "../../platform/db/tenant.js";
import { assertDistinctEmail, emailColumns } from "./emails.js";
import { AppError } from "../../platform/http/errors.js";
import { actorOf, audit } from "./audit.js";
import { permissionsOf, rolesOfUser } from "./auth.js";
import { burnPasswordCheck, hashPassword, passwordProblems, verifyPassword } from "./passwords.js";
import { newToken, tokenHash } from "./tokens.js";

/** Where a request comes from, for audit records. */
export interface RequestMeta {
  ip?: string;
  userAgent?: string;
}

const BUILTIN_ROLE_TEXT: Record<(typeof BUILTIN_ROLES)[number], [string, string]> = {
  owner: ["Owner", "Everything, including organization ownership"],
  admin: ["Administrator", "Manages people, roles, settings and every module"],
  member: ["Member", "Uses every module"],
  guest: ["Guest", "Reads what is shared with them"],
  auditor: ["Auditor", "Reads the audit log"],
};

/** Throws 400 with the password policy's messages when a new password is not acceptable. */
export function assertPassword(password: string, email: string): void {
  const problems = passwordProblems(password, { email });
  if (problems.length > 0) {
    throw AppError.validation({
      issues: problems.map((message) => ({ path: ["password"], message, code: "custom" })),
    } as unknown as import("zod").ZodError);
  }
}

const slugify = (name: string) =>
  name
    .toLowerCase()
    .normalize("NFKD")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 40) || "org";

/** Creates an organization with its built-in roles and its owner; runs in that organization's transaction. */
export async function createOrganization(
  knex: Knex | Knex.Transaction,
  input: {
    name: string;
    ownerEmail: string;
    ownerName: string;
    ownerPassword?: string;
    systemAdmin: boolean;
  },
  by: { actorType: "system" | "user" | "anonymous"; actorId?: string; meta?: RequestMeta },
): Promise<{ orgId: string; ownerId: string }> {
  if (input.ownerPassword !== undefined) assertPassword(input.ownerPassword, input.ownerEmail);
  const passwordHash = input.ownerPassword === undefined ? null : await hashPassword(input.ownerPassword);
  const orgId = randomUUID();
  return withOrg(knex as Knex, orgId, async (trx) => {
    const base = slugify(input.name);
    const slug = `${base}-${orgId.slice(0, 6)}`;
    await trx("organizations").insert({ id: orgId, name: input.name, slug });
    await trx("tenant_settings").insert({ org_id: orgId });
    const roles = await trx("roles")
      .insert(
        BUILTIN_ROLES.map((key) => ({
          org_id: orgId,
          key,
          name: BUILTIN_ROLE_TEXT[key][0],
          description: BUILTIN_ROLE_TEXT[key][1],
          builtin: true,
        })),
      )
      .returning(["id", "key"]);
    const ownerId = randomUUID();
    await insertUser(trx, {
      id: ownerId,
      org_id: orgId,
      email: input.ownerEmail,
      display_name: input.ownerName,
      password_hash: passwordHash,
      system_admin: input.systemAdmin,
    });
    const ownerRole = (roles as { id: string; key: string }[]).find((r) => r.key === "owner");
    await trx("user_roles").insert({ org_id: orgId, user_id: ownerId, role_id: ownerRole?.id });
    await audit(trx, {
      orgId,
      actorType: by.actorType,
      actorId: by.actorId ?? null,
      action: "organization.create",
      targetType: "organization",
      targetId: orgId,
      ip: by.meta?.ip,
      userAgent: by.meta?.userAgent,
      outcome: "success",
      details: { name: input.name, owner: input.ownerEmail },
    });
    return { orgId, ownerId };
  });
}

async function insertUser(
  trx: Knex.Transaction,
  row: Record<string, unknown> & { email: string },
): Promise<void> {
  await assertDistinctEmail(trx, row.email);
  try {
    await trx("users").insert({ ...row, ...emailColumns(row.email) });
  } catch (err) {
    if ((err as { code?: string }).code === "23505") {
      throw AppError.conflict("An account with this email address already exists.", { field: "email" });
    }
    throw err;
  }
}

/** True while no organization exists (the setup wizard is open). */
export async function needsSetup(knex: Knex): Promise<boolean> {
  const r = await knex.raw("select installation_has_organizations() as has");
  return !(r.rows[0] as { has: boolean }).has;
}

/** First run: creates the first organization and its owner (a system administrator), once. */
export async function setupInstallation(
  knex: Knex,
  input: { organizationName: string; name: string; email: string; password: string },
  meta: RequestMeta,
): Promise<{ orgId: string; userId: string }> {
  // One transaction-scoped lock makes two simultaneous setups impossible.
  return knex.transaction(async (trx) => {
    await trx.raw("select pg_advisory_xact_lock(hashtextextended('worksynapse:setup', 0))");
    const r = await trx.raw("select installation_has_organizations() as has");
    if ((r.rows[0] as { has: boolean }).has)
      throw AppError.conflict("Setup is already done. Sign in instead.");
    const { orgId, ownerId } = await createOrganization(
      trx,
      {
        name: input.organizationName,
        ownerEmail: input.email,
        ownerName: input.name,
        ownerPassword: input.password,
        systemAdmin: true,
      },
      { actorType: "anonymous", meta },
    );
    return { orgId, userId: ownerId };
  });
}

/** A new session for a user; the caller sets the cookie. */
export async function createSession(
  trx: Knex.Transaction,
  config: Config,
  orgId: string,
  userId: string,
  meta: RequestMeta,
  extra: Record<string, string | null> = {},
): Promise<{ token: string; expires: Date }> {
  const token = newToken();
  const expires = new Date(Date.now() + config.auth.sessionAbsoluteHours * 3600_000);
  await trx("sessions").insert({
    org_id: orgId,
    user_id: userId,
    token_hash: tokenHash(token),
    ip: meta.ip ?? null,
    user_agent: meta.userAgent ?? null,
    expires_at: expires,
    ...extra,
  });
  return { token, expires };
}

/** Sign-in with email and password, with per-account lockout; every outcome is audited. */
export async function signIn(
  knex: Knex,
  config: Config,
  input: { email: string; password: string },
  meta: RequestMeta,
): Promise<{ orgId: string; userId: string; token: string; expires: Date }> {
  const refused = () => AppError.unauthenticated("The email address or password is wrong.");
  const found = (await knex.raw("select * from auth_find_user(?)", [input.email])).rows[0] as
    { user_id: string; org_id: string } | undefined;
  if (!found) {
    await burnPasswordCheck(input.password);
    await audit(knex, {
      orgId: null,
      actorType: "anonymous",
      action: "auth.sign_in",
      ip: meta.ip,
      userAgent: meta.userAgent,
      outcome: "failure",
      details: { email: input.email.slice(0, 200), reason: "unknown_email" },
    });
    throw refused();
  }
  const { lockoutThreshold: max, lockoutMinutes: minutes } = config.auth;
  const entry = {
    orgId: found.org_id,
    actorType: "user" as const,
    actorId: found.user_id,
    ip: meta.ip,
    userAgent: meta.userAgent,
  };

  // Reserve an attempt atomically before evaluating the password: at most `max` evaluations per window,
  // however many requests arrive at once.
  const slot = await withOrg(knex, found.org_id, async (trx) => {
    const rows = (
      await trx.raw(
        `update users set
         failed_window_start = case when failed_window_start is null or failed_window_start < now() - make_interval(mins => ?)
           then now() else failed_window_start end,
         failed_logins = case when failed_window_start is null or failed_window_start < now() - make_interval(mins => ?)
           then 1 else failed_logins + 1 end
       where id = ? and status = 'active' and (locked_until is null or locked_until < now())
         and (failed_window_start is null or failed_window_start < now() - make_interval(mins => ?) or failed_logins < ?)
       returning password_hash, failed_logins`,
        [minutes, minutes, found.user_id, minutes, max],
      )
    ).rows as { password_hash: string | null; failed_logins: number }[];
    return rows[0];
  });
  if (!slot) {
    await audit(knex, {
      ...entry,
      action: "auth.sign_in",
      outcome: "denied",
      details: { reason: "locked_or_inactive" },
    });
    throw new AppError(
      401,
      "account_locked",
      `Too many failed attempts or the account is inactive. Try again in ${minutes} minutes or ask an administrator.`,
    );
  }
  const ok = slot.password_hash !== null && (await verifyPassword(slot.password_hash, input.password));
  // The failure records commit before the error is raised: a rolled-back audit would hide the attack.
  const result = await withOrg(knex, found.org_id, async (trx) => {
    if (!ok) {
      if (slot.failed_logins >= max) {
        await trx("users")
          .where({ id: found.user_id })
          .update({ locked_until: trx.raw("now() + make_interval(mins => ?)", [minutes]) });
        await audit(trx, {
          ...entry,
          action: "auth.lockout",
          outcome: "success",
          details: { failures: slot.failed_logins },
        });
      }
      await audit(trx, {
        ...entry,
        action: "auth.sign_in",
        outcome: "failure",
        details: { reason: "wrong_password" },
      });
      return undefined;
    }
    await trx("users").where({ id: found.user_id }).update({
      failed_logins: 0,
      failed_window_start: null,
      locked_until: null,
      last_login_at: trx.fn.now(),
    });
    // With SSO required, a right password still opens no session, except the break-glass owner's.
    const policy = (await trx("sso_settings").first("sso_required", "break_glass_user_id")) as
      { sso_required: boolean; break_glass_user_id: string | null } | undefined;
    if (policy?.sso_required && policy.break_glass_user_id !== found.user_id) {
      await audit(trx, {
        ...entry,
        action: "auth.sign_in",
        outcome: "denied",
        details: { reason: "sso_required" },
      });
      return "sso_required" as const;
    }
    const session = await createSession(trx, config, found.org_id, found.user_id, meta);
    await audit(trx, { ...entry, action: "auth.sign_in", outcome: "success" });
    return { orgId: found.org_id, userId: found.user_id, ...session };
  });
  if (!result) throw refused();
  if (result === "sso_required")
    throw new AppError(
      403,
      "sso_required",
      "Your organization signs in through single sign-on. Use its button on the sign-in page.",
    );
  return result;
}

/** Ends the caller's session. */
export async function signOut({ caller, trx }: { caller: Caller; trx: Knex.Transaction }): Promise<void> {
  if (caller.sessionId)
    await trx("sessions").where({ id: caller.sessionId }).update({ revoked_at: trx.fn.now() });
  await audit(trx, {
    ...actorOf(caller),
    action: "auth.sign_out",
    targetType: "session",
    targetId: caller.sessionId,
    outcome: "success",
  });
}

/** The signed-in person, their roles and permissions, and their organization. */
export async function me({ caller, trx }: { caller: Caller; trx: Knex.Transaction }) {
  const user = await trx("users")
    .select("id", "email", "display_name", "system_admin", "created_at")
    .where({ id: caller.userId })
    .first();
  const org = await trx("organizations")
    .select("id", "name", "slug", "plan")
    .where({ id: caller.orgId })
    .first();
  const roles = await rolesOfUser(trx, caller.userId);
  // A session opened through an IdP with single logout signs out there too (sso.routes.ts).
  const slo = caller.sessionId
    ? (
        await trx.raw(
          `select 1 from sessions s join sso_providers p on p.id = s.sso_provider_id
           where s.id = ? and p.enabled and s.saml_name_id is not null and coalesce(p.config->>'idpSloUrl', '') <> ''`,
          [caller.sessionId],
        )
      ).rows.length > 0
    : false;
  return {
    id: user.id as string,
    email: user.email as string,
    displayName: user.display_name as string,
    systemAdmin: user.system_admin as boolean,
    roles: roles.map((r) => r.key),
    permissions: [...caller.permissions].sort(),
    organization: {
      id: org.id as string,
      name: org.name as string,
      slug: org.slug as string,
      plan: org.plan as string,
    },
    via: caller.via,
    singleLogoutUrl: slo
      ? `/api/sso/saml/${encodeURIComponent(org.slug as string)}/logout?session=${caller.sessionId}`
      : null,
  };
}

/** Lists the caller's open sessions. */
export async function listSessions({ caller, trx }: { caller: Caller; trx: Knex.Transaction }) {
  const rows = await trx("sessions")
    .select("id", "ip", "user_agent", "created_at", "last_seen_at", "expires_at")
    .where({ user_id: caller.userId })
    .whereNull("revoked_at")
    .where("expires_at", ">", trx.fn.now())
    .orderBy("last_seen_at", "desc");
  return rows.map((r) => ({
    id: r.id as string,
    ip: r.ip as string | null,
    userAgent: r.user_agent as string | null,
    createdAt: (r.created_at as Date).toISOString(),
    lastSeenAt: (r.last_seen_at as Date).toISOString(),
    expiresAt: (r.expires_at as Date).toISOString(),
    current: r.id === caller.sessionId,
  }));
}

/** Revokes one of the caller's own sessions (404 for anyone else's). */
export async function revokeSession(
  { caller, trx }: { caller: Caller; trx: Knex.Transaction },
  id: string,
): Promise<void> {
  const n = await trx("sessions")
    .where({ id, user_id: caller.userId })
    .whereNull("revoked_at")
    .update({ revoked_at: trx.fn.now() });
  if (n === 0) throw AppError.notFound("No such session.");
  await audit(trx, {
    ...actorOf(caller),
    action: "session.revoke",
    targetType: "session",
    targetId: id,
    outcome: "success",
  });
}

/** Changes the caller's password after checking the current one; other sessions end. */
export async function changePassword(
  { caller, trx }: { caller: Caller; trx: Knex.Transaction },
  input: { currentPassword: string; newPassword: string },
): Promise<void> {
  const user = await trx("users").select("password_hash", "email").where({ id: caller.userId }).first();
  if (!user.password_hash || !(await verifyPassword(user.password_hash as string, input.currentPassword))) {
    await audit(trx, {
      ...actorOf(caller),
      action: "user.password_change",
      targetType: "user",
      targetId: caller.userId,
      outcome: "failure",
    });
    throw new AppError(400, "wrong_password", "The current password is wrong.", {
      fields: [{ path: "currentPassword", message: "Wrong password" }],
    });
  }
  assertPassword(input.newPassword, user.email as string);
  await trx("users")
    .where({ id: caller.userId })
    .update({ password_hash: await hashPassword(input.newPassword), password_changed_at: trx.fn.now() });
  await trx("sessions")
    .where({ user_id: caller.userId })
    .whereNot({ id: caller.sessionId ?? randomUUID() })
    .whereNull("revoked_at")
    .update({ revoked_at: trx.fn.now() });
  await audit(trx, {
    ...actorOf(caller),
    action: "user.password_change",
    targetType: "user",
    targetId: caller.userId,
    outcome: "success",
  });
}

/** Effective permissions of a user (for presenters). */
export async function userPermissions(trx: Knex.Transaction, userId: string): Promise<string[]> {
  return [...permissionsOf(trx, await rolesOfUser(trx, userId))].sort();
}
