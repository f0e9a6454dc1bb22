import type { Knex } from "knex";
import type { Caller } from "../../platform/auth/caller.js";
import { AppError } from "../../platform/http/errors.js";
import { actorOf, audit } from "./audit.js";

/** A grant of something (a note, a collection) to a user, a group or a role, at an access level. */
export interface Grant<A extends string = string> {
  granteeType: "user" | "group" | "role";
  granteeId: string;
  access: A;
}

/** Where a module keeps its grants: the table and the column naming the shared thing. */
export interface GrantTable {
  table: string;
  key: string;
}

const GRANTEE_TABLE = { user: "users", group: "groups", role: "roles" } as const;

/** The grants of one shared thing, with the grantee's display name. */
export async function listGrants<A extends string>(
  trx: Knex.Transaction,
  where: GrantTable,
  id: string,
): Promise<(Grant<A> & { name: string })[]> {
  const rows = await trx({ s: where.table })
    .leftJoin({ u: "users" }, (j) => j.on("u.id", "s.grantee_id").andOnVal("s.grantee_type", "user"))
    .leftJoin({ g: "groups" }, (j) => j.on("g.id", "s.grantee_id").andOnVal("s.grantee_type", "group"))
    .leftJoin({ r: "roles" }, (j) => j.on("r.id", "s.grantee_id").andOnVal("s.grantee_type", "role"))
    .where(`s.${where.key}`, id)
    .select(
      "s.grantee_type",
      "s.grantee_id",
      "s.access",
      trx.raw("coalesce(u.display_name, g.name, r.name) as name"),
    );
  return rows.map((s) => ({
    granteeType: s.grantee_type as Grant["granteeType"],
    granteeId: s.grantee_id as string,
    access: s.access as A,
    name: (s.name as string | null) ?? "",
  }));
}

/**
 * Replaces the grants of one shared thing, after checking each: no grantee twice, not the owner, and every
 * grantee exists in the caller's organization (RLS limits the lookup, so one elsewhere is not found).
 * Audited with `action`.
 */
export async function replaceGrants<A extends string>(
  trx: Knex.Transaction,
  caller: Caller,
  where: GrantTable,
  target: { id: string; ownerId: string; type: string; action: string },
  grants: Grant<A>[],
): Promise<(Grant<A> & { name: string })[]> {
  const seen = new Set<string>();
  for (const [i, g] of grants.entries()) {
    const key = `${g.granteeType}:${g.granteeId}`;
    if (seen.has(key))
      throw AppError.badRequest("The same person, group or role is listed twice.", { index: i });
    seen.add(key);
    if (g.granteeType === "user" && g.granteeId === target.ownerId)
      throw AppError.badRequest("The owner has full access already.", { index: i });
    if (!(await trx(GRANTEE_TABLE[g.granteeType]).where({ id: g.granteeId }).first("id")))
      throw AppError.badRequest(`No such ${g.granteeType} in this organization.`, { index: i });
  }
  await trx(where.table)
    .where({ [where.key]: target.id })
    .delete();
  if (grants.length)
    await trx(where.table).insert(
      grants.map((g) => ({
        org_id: caller.orgId,
        [where.key]: target.id,
        grantee_type: g.granteeType,
        grantee_id: g.granteeId,
        access: g.access,
      })),
    );
  await audit(trx, {
    ...actorOf(caller),
    action: target.action,
    targetType: target.type,
    targetId: target.id,
    outcome: "success",
    details: { shares: grants.map((g) => ({ ...g })) },
  });
  return listGrants<A>(trx, where, target.id);
}
