// Enterprise sign-in providers of an organization: settings, role mapping, provisioning and sessions.
import type { Knex } from "knex";
import type { Config } from "../../config/schema.js";
import type { Scope } from "../../platform/http/api.js";
import { openSecret, sealSecret } from "../../platform/crypto.js";
import { AppError } from "../../platform/http/errors.js";
import { actorOf, audit } from "../identity/audit.js";
import { createSession, type RequestMeta } from "../identity/identity.service.js";
import { assertCanGrant } from "../identity/admin.service.js";
import { limitsOf } from "../identity/org.service.js";
import { assertDistinctEmail, emailColumns } from "../identity/emails.js";
import { Directory, ldapConfigSchema, normalizeDn } from "./ldap.js";
import { samlConfigSchema } from "./saml.js";

/** The two kinds of provider; an organization has at most one of each. */
export type ProviderKind = "saml" | "ldap";

/** A directory group (DN for LDAP, group value for SAML) and the role it grants. */
export interface GroupRole {
  group: string;
  roleId: string;
}

/** A provider row as the services use it. */
export interface ProviderRow {
  id: string;
  orgId: string;
  kind: ProviderKind;
  enabled: boolean;
  label: string;
  config: Record<string, unknown>;
  secret: string | null;
  groupRoles: GroupRole[];
  defaultRoleId: string | null;
  syncMinutes: number;
  lastSyncAt: Date | null;
  lastSync: Record<string, unknown>;
}

/** A reason an SSO sign-in was refused: stable code, a message for the person, the HTTP status. */
export class SsoError extends Error {
  constructor(
    readonly reason: string,
    message: string,
    readonly status = 401,
  ) {
    super(message);
  }
}

/** The purpose SSO secrets (the LDAP bind password) are sealed for. */
export const SSO_SECRET_PURPOSE = "sso-provider";
const SECRET_PURPOSE = SSO_SECRET_PURPOSE;

const present = (r: Record<string, unknown>): ProviderRow => ({
  id: r.id as string,
  orgId: r.org_id as string,
  kind: r.kind as ProviderKind,
  enabled: r.enabled as boolean,
  label: r.label as string,
  config: r.config as Record<string, unknown>,
  secret: (r.secret as string | null) ?? null,
  groupRoles: r.group_roles as GroupRole[],
  defaultRoleId: (r.default_role_id as string | null) ?? null,
  syncMinutes: r.sync_minutes as number,
  lastSyncAt: (r.last_sync_at as Date | null) ?? null,
  lastSync: r.last_sync as Record<string, unknown>,
});

/** The organization's provider of a kind, or undefined. */
export async function findProvider(
  trx: Knex.Transaction,
  kind: ProviderKind,
): Promise<ProviderRow | undefined> {
  const row = await trx("sso_providers").where({ kind }).first();
  return row ? present(row as Record<string, unknown>) : undefined;
}

/** The provider's stored secret in clear ("" when none); sealed to the row, so a copied value does not open. */
export function openProviderSecret(p: ProviderRow, masterKey: string): string {
  return p.secret ? openSecret(masterKey, SECRET_PURPOSE, p.secret, p.id) : "";
}

/** The directory client of an LDAP provider (opens the sealed service password). */
export function directoryOf(p: ProviderRow, masterKey: string): Directory {
  return new Directory(ldapConfigSchema.parse(p.config), openProviderSecret(p, masterKey));
}

/** What an admin sees of a provider (never the secret). */
export function presentProvider(p: ProviderRow | undefined) {
  if (!p) return null;
  return {
    id: p.id,
    kind: p.kind,
    enabled: p.enabled,
    label: p.label,
    config: p.config,
    hasSecret: p.secret !== null,
    groupRoles: p.groupRoles,
    defaultRoleId: p.defaultRoleId,
    syncMinutes: p.syncMinutes,
    lastSyncAt: p.lastSyncAt?.toISOString() ?? null,
    lastSync: p.lastSync,
  };
}

/** Input of saving a provider. */
export interface SaveProviderInput {
  enabled: boolean;
  label: string;
  config: unknown;
  /** LDAP service password: omitted keeps the stored one. */
  secret?: string;
  groupRoles: GroupRole[];
  defaultRoleId: string | null;
  syncMinutes?: number;
}

/** Creates or replaces the organization's provider of a kind; the config is validated for that kind. */
export async function saveProvider(
  { caller, trx }: Scope,
  masterKey: string,
  kind: ProviderKind,
  input: SaveProviderInput,
): Promise<ProviderRow> {
  if (input.enabled) await assertSsoAllowed(trx, caller.orgId);
  const parsed = (kind === "ldap" ? ldapConfigSchema : samlConfigSchema).safeParse(input.config);
  if (!parsed.success) {
    throw new AppError(400, "validation_failed", "The provider settings are not valid.", {
      fields: parsed.error.issues.map((i) => ({ path: ["config", ...i.path].join("."), message: i.message })),
    });
  }
  const roleIds = [
    ...new Set([
      ...input.groupRoles.map((g) => g.roleId),
      ...(input.defaultRoleId ? [input.defaultRoleId] : []),
    ]),
  ];
  if (roleIds.length) {
    const found = await trx("roles").whereIn("id", roleIds).select("id", "key");
    if (found.length !== roleIds.length)
      throw new AppError(400, "unknown_role", "A mapped role does not exist in this organization.");
    // Whoever maps a directory group to a role grants that role to the group's people: the same ceiling as
    // granting it by hand.
    await assertCanGrant(trx, caller, roleIds);
  }
  const existing = await findProvider(trx, kind);
  const base = {
    enabled: input.enabled,
    label: input.label,
    config: JSON.stringify(parsed.data),
    group_roles: JSON.stringify(input.groupRoles),
    default_role_id: input.defaultRoleId,
    sync_minutes: input.syncMinutes ?? existing?.syncMinutes ?? 60,
    updated_at: trx.fn.now(),
  };
  let id = existing?.id;
  if (!id) {
    const rows = await trx("sso_providers")
      // The first scheduled sync comes one interval after saving: people are synced at sign-in until then.
      .insert({
        org_id: caller.orgId,
        kind,
        ...base,
        next_sync_at: trx.raw("now() + make_interval(mins => ?)", [base.sync_minutes]),
      })
      .returning("id");
    id = (rows[0] as { id: string }).id;
  } else {
    await trx("sso_providers").where({ id }).update(base);
  }
  if (input.secret !== undefined) {
    await trx("sso_providers")
      .where({ id })
      .update({
        secret: input.secret === "" ? null : sealSecret(masterKey, SECRET_PURPOSE, input.secret, id),
      });
  }
  await audit(trx, {
    ...actorOf(caller),
    action: "sso.configure",
    targetType: "sso_provider",
    targetId: id,
    outcome: "success",
    details: {
      kind,
      enabled: input.enabled,
      secretChanged: input.secret !== undefined,
      groupRoles: input.groupRoles.length,
    },
  });
  return (await findProvider(trx, kind)) as ProviderRow;
}

/** Refuses to turn single sign-on on for an organization whose plan does not include it. */
async function assertSsoAllowed(trx: Knex.Transaction, orgId: string): Promise<void> {
  if (!(await limitsOf(trx, orgId)).limits.ssoAllowed)
    throw new AppError(
      403,
      "plan_limit",
      "The organization's plan does not include single sign-on. A system administrator can change the plan.",
      { limit: "ssoAllowed" },
    );
}

/** Deletes a provider; its users keep their accounts (and local roles) but lose the directory's roles. */
export async function deleteProvider({ caller, trx }: Scope, kind: ProviderKind): Promise<void> {
  const p = await findProvider(trx, kind);
  if (!p) throw AppError.notFound("No such provider.");
  // Roles that came from its groups go, and so do the sessions it opened: nothing vouches for them any more.
  const linked = (await trx("users").where({ external_source: kind }).pluck("id")) as string[];
  for (const userId of linked) {
    await setDirectoryRoles(trx, caller.orgId, userId, []);
    await endSessions(trx, userId);
  }
  await trx("sso_providers").where({ id: p.id }).delete();
  await audit(trx, {
    ...actorOf(caller),
    action: "sso.delete",
    targetType: "sso_provider",
    targetId: p.id,
    outcome: "success",
    details: { kind, usersAffected: linked.length },
  });
}

/** The roles a set of directory groups maps to (the default role when none match; empty: no access). */
export function rolesForGroups(p: ProviderRow, groups: string[]): string[] {
  const norm = (g: string) => (p.kind === "ldap" ? normalizeDn(g) : g.trim());
  const have = new Set(groups.map(norm));
  const ids = [...new Set(p.groupRoles.filter((m) => have.has(norm(m.group))).map((m) => m.roleId))];
  if (ids.length === 0 && p.defaultRoleId) return [p.defaultRoleId];
  return ids;
}

/** A person as an identity provider asserts them. */
export interface ExternalPerson {
  externalId: string;
  email: string;
  name: string;
  groups: string[];
}

/** Sets a user's directory roles to `roleIds` (local grants untouched); true when they changed. */
export async function setDirectoryRoles(
  trx: Knex.Transaction,
  orgId: string,
  userId: string,
  roleIds: string[],
): Promise<boolean> {
  const before = (await trx("user_roles")
    .where({ user_id: userId, source: "sso" })
    .pluck("role_id")) as string[];
  const same = before.length === roleIds.length && before.every((r) => roleIds.includes(r));
  if (same) return false;
  await trx("user_roles").where({ user_id: userId, source: "sso" }).delete();
  if (roleIds.length)
    await trx("user_roles")
      .insert(roleIds.map((role_id) => ({ org_id: orgId, user_id: userId, role_id, source: "sso" })))
      .onConflict(["user_id", "role_id"])
      .ignore();
  return true;
}

/** Ends every open session of a user. */
export async function endSessions(trx: Knex.Transaction, userId: string): Promise<number> {
  return trx("sessions")
    .where({ user_id: userId })
    .whereNull("revoked_at")
    .update({ revoked_at: trx.fn.now() });
}

/**
 * Finds or creates the account of an asserted person and sets their directory roles. A new account is linked
 * by provider and external id; an existing local account of the organization with the same email is linked
 * on first sign-in (so an organization can move to SSO without recreating people).
 */
export async function provision(
  trx: Knex.Transaction,
  p: ProviderRow,
  person: ExternalPerson,
): Promise<{ userId: string; created: boolean; rolesChanged: boolean }> {
  const roleIds = rolesForGroups(p, person.groups);
  if (roleIds.length === 0)
    throw new SsoError(
      "no_role",
      "Your directory groups give you no access to WorkSynapse. Ask your administrator.",
      403,
    );
  if (!person.email || !/^[^@\s]+@[^@\s]+$/.test(person.email) || person.email.length > 320)
    throw new SsoError("no_email", "The identity provider sent no usable email address for you.", 400);
  // An asserted address must be in normal form and must not imitate another account's (a look-alike would
  // show as that person in every list): refused and audited, never linked or created.
  try {
    await assertDistinctEmail(trx, person.email);
  } catch (err) {
    if (err instanceof AppError) throw new SsoError(err.code, err.message, err.status);
    throw err;
  }
  let user = (await trx("users")
    .where({ external_source: p.kind, external_id: person.externalId })
    .first("id", "status", "email", "display_name")) as Record<string, string> | undefined;
  let created = false;
  if (!user) {
    const local = (await trx("users")
      .whereRaw("lower(email) = lower(?)", [person.email])
      .whereNull("external_source")
      .first("id", "status", "email", "display_name")) as Record<string, string> | undefined;
    if (local) {
      await trx("users")
        .where({ id: local.id })
        .update({ external_source: p.kind, external_id: person.externalId });
      user = local;
    } else {
      try {
        const rows = await trx("users")
          .insert({
            org_id: p.orgId,
            ...emailColumns(person.email),
            display_name: (person.name || person.email).slice(0, 200),
            external_source: p.kind,
            external_id: person.externalId,
          })
          .returning(["id", "status", "email", "display_name"]);
        user = rows[0] as Record<string, string>;
        created = true;
      } catch (err) {
        if ((err as { code?: string }).code === "23505")
          throw new SsoError(
            "email_in_use",
            "An account with your email address already exists elsewhere in this installation.",
            409,
          );
        throw err;
      }
    }
  }
  const u = user as Record<string, string>;
  if (u.status !== "active")
    throw new SsoError("deactivated", "Your account is deactivated. Ask your administrator.", 403);
  const name = (person.name || person.email).slice(0, 200);
  if (!created && name !== u.display_name)
    await trx("users").where({ id: u.id }).update({ display_name: name });
  const rolesChanged = await setDirectoryRoles(trx, p.orgId, u.id as string, roleIds);
  return { userId: u.id as string, created, rolesChanged };
}

/** Provisions the person and opens a session, audited, in the organization's transaction. */
export async function signInExternal(
  trx: Knex.Transaction,
  config: Config,
  p: ProviderRow,
  person: ExternalPerson,
  meta: RequestMeta,
  saml?: { nameId: string; nameIdFormat: string; sessionIndex: string | null },
): Promise<{ userId: string; token: string; expires: Date }> {
  if (!(await limitsOf(trx, p.orgId)).limits.ssoAllowed)
    throw new SsoError("plan_limit", "The organization's plan does not include single sign-on.", 403);
  const { userId, created } = await provision(trx, p, person);
  await trx("users").where({ id: userId }).update({ last_login_at: trx.fn.now() });
  const session = await createSession(trx, config, p.orgId, userId, meta, {
    sso_provider_id: p.id,
    ...(saml
      ? {
          saml_name_id: saml.nameId,
          saml_name_id_format: saml.nameIdFormat,
          saml_session_index: saml.sessionIndex,
        }
      : {}),
  });
  await audit(trx, {
    orgId: p.orgId,
    actorType: "user",
    actorId: userId,
    action: "auth.sso_sign_in",
    targetType: "sso_provider",
    targetId: p.id,
    ip: meta.ip,
    userAgent: meta.userAgent,
    outcome: "success",
    details: { provider: p.kind, created, groups: person.groups.slice(0, 50) },
  });
  return { userId, ...session };
}

/** Records a refused SSO sign-in in the organization's audit chain (its own transaction: it must commit). */
export async function auditSsoFailure(
  knex: Knex,
  orgId: string,
  kind: ProviderKind,
  reason: string,
  message: string,
  meta: RequestMeta,
  extra: Record<string, unknown> = {},
): Promise<void> {
  await knex.transaction(async (trx) => {
    await trx.raw("select set_config('app.org_id', ?, true)", [orgId]);
    await audit(trx, {
      orgId,
      actorType: "anonymous",
      action: "auth.sso_sign_in",
      ip: meta.ip,
      userAgent: meta.userAgent,
      outcome: "failure",
      details: { provider: kind, reason, message: message.slice(0, 300), ...extra },
    });
  });
}

/** The organization's SSO policy. */
export async function getPolicy(trx: Knex.Transaction) {
  const row = await trx("sso_settings").first();
  return {
    ssoRequired: (row?.sso_required as boolean | undefined) ?? false,
    breakGlassUserId: (row?.break_glass_user_id as string | null | undefined) ?? null,
  };
}

/** Sets whether SSO is required and who the break-glass owner is (an owner, who keeps password sign-in). */
export async function setPolicy(
  { caller, trx }: Scope,
  input: { ssoRequired: boolean; breakGlassUserId: string | null },
) {
  // Row-level security hides other organizations' people: an id of theirs is "no such user" like a made-up one.
  if (input.breakGlassUserId && !(await trx("users").where({ id: input.breakGlassUserId }).first("id")))
    throw new AppError(404, "not_found", "The break-glass person is not a user of this organization.");
  if (input.ssoRequired) {
    await assertSsoAllowed(trx, caller.orgId);
    if (!input.breakGlassUserId)
      throw new AppError(400, "break_glass_required", "Name a break-glass owner who keeps password sign-in.");
    const owner = await trx.raw(
      `select 1 from users u where u.id = ? and u.status = 'active' and u.password_hash is not null
         and exists (select 1 from roles r where r.key = 'owner' and r.id in (select user_role_ids(u.id)))`,
      [input.breakGlassUserId],
    );
    if (owner.rows.length === 0)
      throw new AppError(
        400,
        "break_glass_invalid",
        "The break-glass person must be an active owner with a password.",
      );
    const enabled = await trx("sso_providers").where({ enabled: true }).first("id");
    if (!enabled)
      throw new AppError(400, "no_provider", "Enable a SAML or LDAP provider before requiring SSO.");
  }
  await trx.raw(
    `insert into sso_settings (org_id, sso_required, break_glass_user_id, updated_at) values (?, ?, ?, now())
     on conflict (org_id) do update set sso_required = excluded.sso_required,
       break_glass_user_id = excluded.break_glass_user_id, updated_at = now()`,
    [caller.orgId, input.ssoRequired, input.breakGlassUserId],
  );
  await audit(trx, {
    ...actorOf(caller),
    action: "sso.policy",
    targetType: "organization",
    targetId: caller.orgId,
    outcome: "success",
    details: input,
  });
  return getPolicy(trx);
}

/** What the sign-in page offers: every enabled provider of the installation. */
export async function signInOptions(knex: Knex) {
  const rows = (await knex.raw("select * from sso_sign_in_options()")).rows as {
    slug: string;
    org_name: string;
    kind: ProviderKind;
    label: string;
  }[];
  return rows.map((r) => ({
    organization: r.slug,
    organizationName: r.org_name,
    kind: r.kind,
    label: r.label,
  }));
}

/** The organization of a sign-in URL's slug (404 when there is none). */
export async function orgOfSlug(
  knex: Knex | Knex.Transaction,
  slug: string,
): Promise<{ orgId: string; orgName: string }> {
  const row = (await knex.raw("select * from sso_find_org(?)", [slug])).rows[0] as
    { org_id: string; org_name: string } | undefined;
  if (!row) throw new SsoError("unknown_organization", "There is no such organization.", 404);
  return { orgId: row.org_id, orgName: row.org_name };
}
