import type { Knex } from "knex";
import type { Config } from "../../config/schema.js";
import { can, type Caller } from "../../platform/auth/caller.js";
import { AppError } from "../../platform/http/errors.js";
import { actorOf, audit } from "./audit.js";
import { permissionsOf, rolesOfUser } from "./auth.js";
import { catalogOf } from "../../platform/auth/permissions.js";
import { assertPassword, createSession, type RequestMeta } from "./identity.service.js";
import { hashPassword } from "./passwords.js";
import { newApiKey, newToken, tokenHash } from "./tokens.js";
import { withOrg } from "../../platform/db/tenant.js";
import { assertDistinctEmail, emailColumns } from "./emails.js";

/** Runs a write, turning a unique-constraint violation into 409 naming the field. */
async function conflictOnDuplicate<T>(write: PromiseLike<T>, message: string, field = "name"): Promise<T> {
  try {
    return await write;
  } catch (err) {
    if ((err as { code?: string }).code === "23505") throw AppError.conflict(message, { field });
    throw err;
  }
}

/** An authenticated service call: who asks, in which org-scoped transaction. */
export interface Svc {
  caller: Caller;
  trx: Knex.Transaction;
}

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

// ---------- users ----------

/** A user as the API shows it. */
export async function presentUser(trx: Knex.Transaction, row: Record<string, unknown>) {
  const roles = await trx("user_roles as ur")
    .join("roles as r", "r.id", "ur.role_id")
    .where("ur.user_id", row.id as string)
    .select("r.id", "r.key", "r.name");
  return {
    id: row.id as string,
    email: row.email as string,
    displayName: row.display_name as string,
    status: row.status as "active" | "deactivated",
    locked: row.locked_until ? (row.locked_until as Date) > new Date() : false,
    roles: roles as { id: string; key: string; name: string }[],
    lastLoginAt: iso(row.last_login_at as Date | null),
    createdAt: iso(row.created_at as Date) as string,
    signsInWith: ((row.external_source as string | null) ?? "password") as "password" | "saml" | "ldap",
  };
}

const USER_COLUMNS = [
  "id",
  "email",
  "display_name",
  "status",
  "locked_until",
  "last_login_at",
  "created_at",
  "external_source",
];

/** Lists users, newest first, optionally filtered by a search string. */
export async function listUsers({ trx }: Svc, q: { search?: string; limit: number; offset: number }) {
  const base = trx("users").modify((b) => {
    if (q.search)
      b.where((w) => w.whereILike("email", `%${q.search}%`).orWhereILike("display_name", `%${q.search}%`));
  });
  const [{ n }] = (await base.clone().count("* as n")) as [{ n: string }];
  const rows = await base
    .clone()
    .select(USER_COLUMNS)
    .orderBy("created_at", "desc")
    .limit(q.limit)
    .offset(q.offset);
  return {
    data: await Promise.all(rows.map((r: Record<string, unknown>) => presentUser(trx, r))),
    page: { total: Number(n), limit: q.limit, offset: q.offset },
  };
}

async function userRow(trx: Knex.Transaction, id: string) {
  const row = await trx("users").select(USER_COLUMNS).where({ id }).first();
  if (!row) throw AppError.notFound("No such user.");
  return row as Record<string, unknown>;
}

/** One user (404 for ids of other organizations: RLS hides them). */
export async function getUser({ trx }: Svc, id: string) {
  return presentUser(trx, await userRow(trx, id));
}

async function roleIdsOf(trx: Knex.Transaction, ids: string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const found = (await trx("roles").whereIn("id", ids).select("id")) as { id: string }[];
  if (found.length !== new Set(ids).size) throw AppError.notFound("A role in the list does not exist.");
  return found.map((r) => r.id);
}

/** Refuses to grant roles that hold permissions the caller lacks (no privilege escalation). */
export async function assertCanGrant(
  trx: Knex.Transaction,
  caller: Caller,
  roleIds: string[],
): Promise<void> {
  if (roleIds.length === 0) return;
  const roles = await trx("roles").whereIn("id", roleIds).select("key", "builtin", "permissions");
  const missing = [...permissionsOf(trx, roles)].filter((p) => !can(caller, p));
  if (missing.length > 0)
    throw AppError.forbidden(`You cannot grant permissions you do not hold: ${missing.join(", ")}.`);
}

/**
 * The privilege ceiling (NIST 800-53 AC-6): the caller may change, deactivate, reset or end the sessions of
 * these users only if the caller holds every permission each of them holds; only a system administrator may
 * act on a system administrator. Users the caller cannot see (other organizations) are 404.
 */
export async function assertOutranks(
  trx: Knex.Transaction,
  caller: Caller,
  userIds: string[],
): Promise<void> {
  const ids = [...new Set(userIds)];
  if (ids.length === 0) return;
  const rows = (await trx("users").whereIn("id", ids).select("id", "system_admin")) as {
    id: string;
    system_admin: boolean;
  }[];
  if (rows.length !== ids.length) throw AppError.notFound("No such user.");
  for (const row of rows) {
    if (row.system_admin && !caller.systemAdmin)
      throw AppError.forbidden("Only a system administrator can change a system administrator.");
    const missing = [...permissionsOf(trx, await rolesOfUser(trx, row.id))].filter((p) => !can(caller, p));
    if (missing.length > 0)
      throw new AppError(
        403,
        "forbidden",
        `You cannot change someone who holds permissions you do not: ${missing.sort().join(", ")}.`,
        { userId: row.id, missing },
      );
  }
}

/** Users who hold a role directly or through a group. */
async function holdersOf(trx: Knex.Transaction, roleId: string): Promise<string[]> {
  const direct = (await trx("user_roles").where({ role_id: roleId }).pluck("user_id")) as string[];
  const viaGroups = (await trx("group_members as gm")
    .join("group_roles as gr", "gr.group_id", "gm.group_id")
    .where("gr.role_id", roleId)
    .pluck("gm.user_id")) as string[];
  return [...new Set([...direct, ...viaGroups])];
}

/** Creates a user with a password an administrator chose (shared with them out of band). */
export async function createUser(
  { caller, trx }: Svc,
  input: { email: string; displayName: string; password: string; roleIds: string[] },
) {
  assertPassword(input.password, input.email);
  const roleIds = await roleIdsOf(trx, input.roleIds);
  await assertCanGrant(trx, caller, roleIds);
  await assertDistinctEmail(trx, input.email);
  let row: Record<string, unknown>;
  try {
    [row] = (await trx("users")
      .insert({
        org_id: caller.orgId,
        ...emailColumns(input.email),
        display_name: input.displayName,
        password_hash: await hashPassword(input.password),
      })
      .returning(USER_COLUMNS)) as Record<string, unknown>[] as [Record<string, unknown>];
  } catch (err) {
    if ((err as { code?: string }).code === "23505") {
      throw AppError.conflict("An account with this email address already exists.", { field: "email" });
    }
    throw err;
  }
  if (roleIds.length)
    await trx("user_roles").insert(
      roleIds.map((role_id) => ({ org_id: caller.orgId, user_id: row.id, role_id })),
    );
  await audit(trx, {
    ...actorOf(caller),
    action: "user.create",
    targetType: "user",
    targetId: row.id as string,
    outcome: "success",
    details: { email: input.email, roles: roleIds },
  });
  return presentUser(trx, row);
}

/** Renames, deactivates or reactivates a user; deactivation ends their sessions and keys. */
export async function updateUser(
  { caller, trx }: Svc,
  id: string,
  input: { displayName?: string; status?: "active" | "deactivated" },
) {
  await userRow(trx, id);
  if (input.status === "deactivated" && id === caller.userId)
    throw AppError.conflict("You cannot deactivate yourself.");
  await assertOutranks(trx, caller, [id]);
  const patch: Record<string, unknown> = {};
  if (input.displayName !== undefined) patch.display_name = input.displayName;
  if (input.status !== undefined) patch.status = input.status;
  if (Object.keys(patch).length) await trx("users").where({ id }).update(patch);
  if (input.status === "deactivated") {
    await trx("sessions").where({ user_id: id }).whereNull("revoked_at").update({ revoked_at: trx.fn.now() });
    await trx("api_keys").where({ user_id: id }).whereNull("revoked_at").update({ revoked_at: trx.fn.now() });
  }
  await audit(trx, {
    ...actorOf(caller),
    action: "user.update",
    targetType: "user",
    targetId: id,
    outcome: "success",
    details: patch,
  });
  return presentUser(trx, await userRow(trx, id));
}

/** Sets a user's roles (replacing them); the organization keeps at least one owner. */
export async function setUserRoles({ caller, trx }: Svc, id: string, roleIdsIn: string[]) {
  await userRow(trx, id);
  const roleIds = await roleIdsOf(trx, roleIdsIn);
  await assertOutranks(trx, caller, [id]);
  await assertCanGrant(trx, caller, roleIds);
  const before = (await rolesOfUser(trx, id)).map((r) => r.key);
  await trx("user_roles").where({ user_id: id }).delete();
  if (roleIds.length)
    await trx("user_roles").insert(
      roleIds.map((role_id) => ({ org_id: caller.orgId, user_id: id, role_id })),
    );
  const owners = await trx("user_roles as ur")
    .join("roles as r", "r.id", "ur.role_id")
    .where("r.key", "owner")
    .count("* as n")
    .first();
  if (Number(owners?.n) === 0) throw AppError.conflict("The organization must keep at least one owner.");
  await audit(trx, {
    ...actorOf(caller),
    action: "user.roles",
    targetType: "user",
    targetId: id,
    outcome: "success",
    details: { before, roles: roleIds },
  });
  return presentUser(trx, await userRow(trx, id));
}

/**
 * An administrator sets a new password: the account unlocks, its sessions end and its API keys are revoked
 * (whoever may have learned the old password may have made keys with it).
 */
export async function resetPassword({ caller, trx }: Svc, id: string, password: string) {
  const row = await userRow(trx, id);
  await assertOutranks(trx, caller, [id]);
  assertPassword(password, row.email as string);
  await trx("users")
    .where({ id })
    .update({
      password_hash: await hashPassword(password),
      password_changed_at: trx.fn.now(),
      failed_logins: 0,
      failed_window_start: null,
      locked_until: null,
    });
  const sessions = await trx("sessions")
    .where({ user_id: id })
    .whereNull("revoked_at")
    .update({ revoked_at: trx.fn.now() });
  const keys = await trx("api_keys")
    .where({ user_id: id })
    .whereNull("revoked_at")
    .update({ revoked_at: trx.fn.now() });
  await audit(trx, {
    ...actorOf(caller),
    action: "user.password_reset",
    targetType: "user",
    targetId: id,
    outcome: "success",
    details: { sessionsEnded: sessions, apiKeysRevoked: keys },
  });
}

// ---------- invitations ----------

/** Invites an address with a role: a one-time link (valid 7 days) the administrator copies. */
export async function createInvitation({ caller, trx }: Svc, input: { email: string; roleId: string }) {
  const [roleId] = await roleIdsOf(trx, [input.roleId]);
  await assertCanGrant(trx, caller, [roleId as string]);
  const token = newToken();
  const [row] = await trx("invitations")
    .insert({
      org_id: caller.orgId,
      email: input.email,
      role_id: roleId,
      token_hash: tokenHash(token),
      created_by: caller.userId,
      expires_at: new Date(Date.now() + 7 * 24 * 3600_000),
    })
    .returning(["id", "email", "role_id", "expires_at", "created_at"]);
  await audit(trx, {
    ...actorOf(caller),
    action: "invitation.create",
    targetType: "invitation",
    targetId: row.id,
    outcome: "success",
    details: { email: input.email },
  });
  return { ...presentInvitation(row), token, path: `/invite/${token}` };
}

function presentInvitation(r: Record<string, unknown>) {
  return {
    id: r.id as string,
    email: r.email as string,
    roleId: r.role_id as string,
    expiresAt: iso(r.expires_at as Date) as string,
    acceptedAt: iso(r.accepted_at as Date | null | undefined),
    createdAt: iso(r.created_at as Date) as string,
  };
}

/** Open and accepted invitations. */
export async function listInvitations({ trx }: Svc) {
  const rows = await trx("invitations")
    .select("id", "email", "role_id", "expires_at", "accepted_at", "created_at")
    .orderBy("created_at", "desc");
  return rows.map(presentInvitation);
}

/** Withdraws an invitation. */
export async function deleteInvitation({ caller, trx }: Svc, id: string) {
  const n = await trx("invitations").where({ id }).delete();
  if (n === 0) throw AppError.notFound("No such invitation.");
  await audit(trx, {
    ...actorOf(caller),
    action: "invitation.delete",
    targetType: "invitation",
    targetId: id,
    outcome: "success",
  });
}

/** Accepts an invitation: creates the account and signs it in. */
export async function acceptInvitation(
  knex: Knex,
  config: Config,
  input: { token: string; displayName: string; password: string },
  meta: RequestMeta,
) {
  const found = (await knex.raw("select * from auth_find_invitation(?)", [tokenHash(input.token)]))
    .rows[0] as { invitation_id: string; org_id: string } | undefined;
  if (!found) throw AppError.notFound("This invitation link is not valid any more.");
  return withOrg(knex, found.org_id, async (trx) => {
    const inv = await trx("invitations")
      .where({ id: found.invitation_id })
      .whereNull("accepted_at")
      .forUpdate()
      .first();
    if (!inv) throw AppError.notFound("This invitation link is not valid any more.");
    assertPassword(input.password, inv.email as string);
    await assertDistinctEmail(trx, inv.email as string);
    let user: { id: string };
    try {
      [user] = (await trx("users")
        .insert({
          org_id: found.org_id,
          ...emailColumns(inv.email as string),
          display_name: input.displayName,
          password_hash: await hashPassword(input.password),
        })
        .returning(["id"])) as [{ id: string }];
    } catch (err) {
      if ((err as { code?: string }).code === "23505")
        throw AppError.conflict("An account with this email address already exists.");
      throw err;
    }
    await trx("user_roles").insert({ org_id: found.org_id, user_id: user.id, role_id: inv.role_id });
    await trx("invitations").where({ id: inv.id }).update({ accepted_at: trx.fn.now() });
    await audit(trx, {
      orgId: found.org_id,
      actorType: "user",
      actorId: user.id,
      action: "invitation.accept",
      targetType: "invitation",
      targetId: inv.id as string,
      ip: meta.ip,
      userAgent: meta.userAgent,
      outcome: "success",
    });
    const session = await createSession(trx, config, found.org_id, user.id, meta);
    return { orgId: found.org_id, userId: user.id, ...session };
  });
}

// ---------- roles ----------

function presentRole(db: object, r: Record<string, unknown>) {
  const perms = [
    ...permissionsOf(db, [
      { key: r.key as string, builtin: r.builtin as boolean, permissions: r.permissions as string[] },
    ]),
  ].sort();
  return {
    id: r.id as string,
    key: r.key as string,
    name: r.name as string,
    description: r.description as string,
    builtin: r.builtin as boolean,
    permissions: perms,
  };
}

/** Built-in and custom roles with their effective permissions. */
export async function listRoles({ trx }: Svc) {
  const rows = await trx("roles")
    .select("*")
    .orderBy([{ column: "builtin", order: "desc" }, "name"]);
  return rows.map((r) => presentRole(trx, r));
}

function checkPermissionCodes(trx: Knex.Transaction, caller: Caller, codes: string[]) {
  const catalog = catalogOf(trx);
  const unknown = codes.filter((c) => !catalog.has(c));
  if (unknown.length)
    throw AppError.badRequest(`Unknown permissions: ${unknown.join(", ")}.`, {
      fields: [{ path: "permissions", message: "unknown permission" }],
    });
  const missing = codes.filter((c) => !can(caller, c));
  if (missing.length)
    throw AppError.forbidden(`You cannot grant permissions you do not hold: ${missing.join(", ")}.`);
}

/** Creates a custom role from a set of permissions. */
export async function createRole(
  { caller, trx }: Svc,
  input: { name: string; description: string; permissions: string[] },
) {
  checkPermissionCodes(trx, caller, input.permissions);
  const key = `custom-${input.name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .slice(0, 40)}`;
  try {
    const [row] = await trx("roles")
      .insert({
        org_id: caller.orgId,
        key,
        name: input.name,
        description: input.description,
        permissions: input.permissions,
      })
      .returning("*");
    await audit(trx, {
      ...actorOf(caller),
      action: "role.create",
      targetType: "role",
      targetId: row.id,
      outcome: "success",
      details: { name: input.name, permissions: input.permissions },
    });
    return presentRole(trx, row);
  } catch (err) {
    if ((err as { code?: string }).code === "23505")
      throw AppError.conflict("A role with this name exists.", { field: "name" });
    throw err;
  }
}

async function customRole(trx: Knex.Transaction, id: string) {
  const row = await trx("roles").where({ id }).first();
  if (!row) throw AppError.notFound("No such role.");
  if (row.builtin) throw AppError.conflict("Built-in roles cannot be changed.");
  return row as Record<string, unknown>;
}

/** Edits a custom role. */
export async function updateRole(
  { caller, trx }: Svc,
  id: string,
  input: { name?: string; description?: string; permissions?: string[] },
) {
  const current = await customRole(trx, id);
  checkPermissionCodes(trx, caller, current.permissions as string[]);
  if (input.permissions) checkPermissionCodes(trx, caller, input.permissions);
  await assertOutranks(trx, caller, await holdersOf(trx, id));
  if (
    input.name !== undefined &&
    (await trx("roles").whereNot({ id }).whereRaw("lower(name) = lower(?)", [input.name]).first("id"))
  )
    throw AppError.conflict("A role with this name exists.", { field: "name" });
  const patch: Record<string, unknown> = {};
  if (input.name !== undefined) patch.name = input.name;
  if (input.description !== undefined) patch.description = input.description;
  if (input.permissions !== undefined) patch.permissions = input.permissions;
  const [row] = Object.keys(patch).length
    ? await conflictOnDuplicate(
        trx("roles").where({ id }).update(patch).returning("*"),
        "A role with this name exists.",
      )
    : [current];
  await audit(trx, {
    ...actorOf(caller),
    action: "role.update",
    targetType: "role",
    targetId: id,
    outcome: "success",
    details: patch,
  });
  return presentRole(trx, row);
}

/** Deletes a custom role (its grants go with it). */
export async function deleteRole({ caller, trx }: Svc, id: string) {
  const current = await customRole(trx, id);
  checkPermissionCodes(trx, caller, current.permissions as string[]);
  await assertOutranks(trx, caller, await holdersOf(trx, id));
  await trx("roles").where({ id }).delete();
  await audit(trx, {
    ...actorOf(caller),
    action: "role.delete",
    targetType: "role",
    targetId: id,
    outcome: "success",
  });
}

/** The permission catalog (from code). */
export function listPermissions(db: object) {
  return catalogOf(db)
    .all()
    .map((p) => ({
      code: p.code,
      module: p.module,
      description: p.description,
      roles: p.roles,
    }));
}

// ---------- groups ----------

async function presentGroup(trx: Knex.Transaction, g: Record<string, unknown>) {
  const members = await trx("group_members as gm")
    .join("users as u", "u.id", "gm.user_id")
    .where("gm.group_id", g.id as string)
    .select("u.id", "u.email", "u.display_name as displayName");
  const roles = await trx("group_roles as gr")
    .join("roles as r", "r.id", "gr.role_id")
    .where("gr.group_id", g.id as string)
    .select("r.id", "r.key", "r.name");
  return { id: g.id as string, name: g.name as string, description: g.description as string, members, roles };
}

async function groupRow(trx: Knex.Transaction, id: string) {
  const g = await trx("groups").where({ id }).first();
  if (!g) throw AppError.notFound("No such group.");
  return g as Record<string, unknown>;
}

/** Groups with their members and roles. */
export async function listGroups({ trx }: Svc) {
  const rows = await trx("groups").select("*").orderBy("name");
  return Promise.all(rows.map((g) => presentGroup(trx, g)));
}

/** One group. */
export async function getGroup({ trx }: Svc, id: string) {
  return presentGroup(trx, await groupRow(trx, id));
}

/** Creates a group. */
export async function createGroup({ caller, trx }: Svc, input: { name: string; description: string }) {
  try {
    const [g] = await trx("groups")
      .insert({ org_id: caller.orgId, name: input.name, description: input.description })
      .returning("*");
    await audit(trx, {
      ...actorOf(caller),
      action: "group.create",
      targetType: "group",
      targetId: g.id,
      outcome: "success",
      details: input,
    });
    return presentGroup(trx, g);
  } catch (err) {
    if ((err as { code?: string }).code === "23505")
      throw AppError.conflict("A group with this name exists.", { field: "name" });
    throw err;
  }
}

/** Renames or describes a group. */
export async function updateGroup(
  { caller, trx }: Svc,
  id: string,
  input: { name?: string; description?: string },
) {
  await groupRow(trx, id);
  if (Object.keys(input).length)
    await conflictOnDuplicate(trx("groups").where({ id }).update(input), "A group with this name exists.");
  await audit(trx, {
    ...actorOf(caller),
    action: "group.update",
    targetType: "group",
    targetId: id,
    outcome: "success",
    details: input,
  });
  return presentGroup(trx, await groupRow(trx, id));
}

/** The ids of a group's members and of the roles it grants. */
async function groupGrants(trx: Knex.Transaction, id: string) {
  const members = (await trx("group_members").where({ group_id: id }).pluck("user_id")) as string[];
  const roles = (await trx("group_roles").where({ group_id: id }).pluck("role_id")) as string[];
  return { members, roles };
}

/** Deletes a group (its members lose the roles it granted). */
export async function deleteGroup({ caller, trx }: Svc, id: string) {
  await groupRow(trx, id);
  const { members, roles } = await groupGrants(trx, id);
  if (roles.length) await assertOutranks(trx, caller, members);
  await trx("groups").where({ id }).delete();
  await audit(trx, {
    ...actorOf(caller),
    action: "group.delete",
    targetType: "group",
    targetId: id,
    outcome: "success",
  });
}

/** Replaces a group's members. */
export async function setGroupMembers({ caller, trx }: Svc, id: string, userIds: string[]) {
  await groupRow(trx, id);
  const unique = [...new Set(userIds)];
  const found = unique.length
    ? ((await trx("users").whereIn("id", unique).select("id")) as { id: string }[])
    : [];
  if (found.length !== unique.length) throw AppError.notFound("A user in the list does not exist.");
  // Joining or leaving a group that grants roles changes those people's roles.
  const { members, roles } = await groupGrants(trx, id);
  if (roles.length) {
    const changed = [
      ...unique.filter((u) => !members.includes(u)),
      ...members.filter((u) => !unique.includes(u)),
    ];
    if (changed.length) {
      await assertCanGrant(trx, caller, roles);
      await assertOutranks(trx, caller, changed);
    }
  }
  await trx("group_members").where({ group_id: id }).delete();
  if (unique.length)
    await trx("group_members").insert(
      unique.map((user_id) => ({ org_id: caller.orgId, group_id: id, user_id })),
    );
  await audit(trx, {
    ...actorOf(caller),
    action: "group.members",
    targetType: "group",
    targetId: id,
    outcome: "success",
    details: { members: unique },
  });
  return presentGroup(trx, await groupRow(trx, id));
}

/** Replaces the roles a group grants its members. */
export async function setGroupRoles({ caller, trx }: Svc, id: string, roleIdsIn: string[]) {
  await groupRow(trx, id);
  const roleIds = await roleIdsOf(trx, roleIdsIn);
  const { members, roles } = await groupGrants(trx, id);
  // The roles taken away must be ones the caller could grant, and every member's roles change.
  await assertCanGrant(trx, caller, [...new Set([...roleIds, ...roles])]);
  await assertOutranks(trx, caller, members);
  await trx("group_roles").where({ group_id: id }).delete();
  if (roleIds.length)
    await trx("group_roles").insert(
      roleIds.map((role_id) => ({ org_id: caller.orgId, group_id: id, role_id })),
    );
  await audit(trx, {
    ...actorOf(caller),
    action: "group.roles",
    targetType: "group",
    targetId: id,
    outcome: "success",
    details: { roles: roleIds },
  });
  return presentGroup(trx, await groupRow(trx, id));
}

// ---------- API keys ----------

function presentKey(k: Record<string, unknown>) {
  return {
    id: k.id as string,
    name: k.name as string,
    prefix: `wsk_${k.prefix as string}`,
    permissions: k.permissions as string[],
    expiresAt: iso(k.expires_at as Date | null),
    lastUsedAt: iso(k.last_used_at as Date | null),
    revokedAt: iso(k.revoked_at as Date | null),
    createdAt: iso(k.created_at as Date) as string,
  };
}

/** The caller's API keys. */
export async function listApiKeys({ caller, trx }: Svc) {
  const rows = await trx("api_keys").where({ user_id: caller.userId }).orderBy("created_at", "desc");
  return rows.map(presentKey);
}

/** Creates an API key scoped to a subset of the caller's permissions; the key is shown once. */
export async function createApiKey(
  { caller, trx }: Svc,
  input: { name: string; permissions: string[]; expiresAt?: string },
) {
  if (caller.via !== "session")
    throw AppError.forbidden("API keys are created from a signed-in browser session.");
  checkPermissionCodes(trx, caller, input.permissions);
  if (input.expiresAt && new Date(input.expiresAt) <= new Date()) {
    throw AppError.badRequest("The expiry must be in the future.", {
      fields: [{ path: "expiresAt", message: "in the past" }],
    });
  }
  const { key, prefix, hash } = newApiKey();
  const [row] = await trx("api_keys")
    .insert({
      org_id: caller.orgId,
      user_id: caller.userId,
      name: input.name,
      prefix,
      key_hash: hash,
      permissions: input.permissions,
      expires_at: input.expiresAt ?? null,
    })
    .returning("*");
  await audit(trx, {
    ...actorOf(caller),
    action: "apikey.create",
    targetType: "api_key",
    targetId: row.id,
    outcome: "success",
    details: { name: input.name, permissions: input.permissions },
  });
  return { ...presentKey(row), key };
}

/** Revokes one of the caller's keys. */
export async function revokeApiKey({ caller, trx }: Svc, id: string) {
  const n = await trx("api_keys")
    .where({ id, user_id: caller.userId })
    .whereNull("revoked_at")
    .update({ revoked_at: trx.fn.now() });
  if (n === 0) throw AppError.notFound("No such API key.");
  await audit(trx, {
    ...actorOf(caller),
    action: "apikey.revoke",
    targetType: "api_key",
    targetId: id,
    outcome: "success",
  });
}

// ---------- audit ----------

/** Filters of the audit log. */
export interface AuditQuery {
  action?: string;
  actorId?: string;
  targetId?: string;
  outcome?: "success" | "failure" | "denied";
  from?: string;
  to?: string;
  limit: number;
  offset: number;
}

function presentAudit(r: Record<string, unknown>) {
  return {
    id: String(r.id),
    seq: Number(r.seq),
    at: iso(r.at as Date) as string,
    actorType: r.actor_type as string,
    actorId: r.actor_id as string | null,
    action: r.action as string,
    targetType: r.target_type as string | null,
    targetId: r.target_id as string | null,
    ip: r.ip as string | null,
    userAgent: r.user_agent as string | null,
    outcome: r.outcome as string,
    details: r.details as Record<string, unknown>,
    hash: r.hash as string,
  };
}

function auditBase(trx: Knex.Transaction, q: Omit<AuditQuery, "limit" | "offset">) {
  return trx("audit_log").modify((b) => {
    if (q.action)
      b.whereRaw("action like ? escape '\\'", [`${q.action.replace(/[\\%_]/g, (c) => `\\${c}`)}%`]);
    if (q.actorId) b.where("actor_id", q.actorId);
    if (q.targetId) b.where("target_id", q.targetId);
    if (q.outcome) b.where("outcome", q.outcome);
    if (q.from) b.where("at", ">=", q.from);
    if (q.to) b.where("at", "<", q.to);
  });
}

/** The organization's audit records, newest first. */
export async function listAudit({ trx }: Svc, q: AuditQuery) {
  const [{ n }] = (await auditBase(trx, q).clone().count("* as n")) as [{ n: string }];
  const rows = await auditBase(trx, q).select("*").orderBy("seq", "desc").limit(q.limit).offset(q.offset);
  return {
    data: (rows as Record<string, unknown>[]).map(presentAudit),
    page: { total: Number(n), limit: q.limit, offset: q.offset },
  };
}

const csvCell = (v: unknown) => {
  const s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
  // Cells starting with = + - @ are prefixed so spreadsheets do not run them as formulas.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
};

/** Exports matching records (oldest first) as JSON lines or CSV; the export itself is audited. */
export async function exportAudit(
  { caller, trx }: Svc,
  q: Omit<AuditQuery, "limit" | "offset">,
  format: "jsonl" | "csv",
) {
  const rows = (
    (await auditBase(trx, q).select("*").orderBy("seq", "asc").limit(100_000)) as Record<string, unknown>[]
  ).map(presentAudit);
  await audit(trx, {
    ...actorOf(caller),
    action: "audit.export",
    outcome: "success",
    details: { format, filters: q, rows: rows.length },
  });
  if (format === "jsonl") return rows.map((r) => JSON.stringify(r)).join("\n") + (rows.length ? "\n" : "");
  const cols = [
    "id",
    "seq",
    "at",
    "actorType",
    "actorId",
    "action",
    "targetType",
    "targetId",
    "ip",
    "userAgent",
    "outcome",
    "details",
    "hash",
  ] as const;
  return [cols.join(","), ...rows.map((r) => cols.map((c) => csvCell(r[c])).join(","))].join("\n") + "\n";
}
