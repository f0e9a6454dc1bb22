import type { Knex } from "knex";
import type { Caller } from "../../platform/auth/caller.js";

/** One audit record as written. */
export interface AuditEntry {
  orgId: string | null;
  actorType: "user" | "api_key" | "system" | "anonymous";
  actorId?: string | null;
  action: string;
  targetType?: string | null;
  targetId?: string | null;
  ip?: string | null;
  userAgent?: string | null;
  outcome: "success" | "failure" | "denied";
  details?: Record<string, unknown>;
}

/** Appends to the organization's hash chain (in the caller's transaction, so it commits with the change). */
export async function audit(db: Knex | Knex.Transaction, e: AuditEntry): Promise<void> {
  await db.raw("select audit_append(?, ?, ?, ?, ?, ?, ?, ?, ?, ?::jsonb)", [
    e.orgId,
    e.actorType,
    e.actorId ?? null,
    e.action,
    e.targetType ?? null,
    e.targetId ?? null,
    e.ip ?? null,
    e.userAgent ?? null,
    e.outcome,
    JSON.stringify(e.details ?? {}),
  ]);
}

/** The actor fields of an entry made by a caller. */
export function actorOf(
  caller: Caller,
): Pick<AuditEntry, "orgId" | "actorType" | "actorId" | "ip" | "userAgent"> {
  return {
    orgId: caller.orgId,
    actorType: caller.via === "api_key" || caller.via === "token" ? "api_key" : "user",
    actorId: caller.via === "session" ? caller.userId : (caller.apiKeyId ?? caller.userId),
    ip: caller.ip ?? null,
    userAgent: caller.userAgent ?? null,
  };
}

/** The first record whose chain is broken, or none. */
export interface AuditVerification {
  ok: boolean;
  checked: number;
  firstBroken?: { id: string; orgId: string | null; seq: number; reason: string };
}

/** Recomputes every chain (as the owner, who sees every organization) and names the first broken record. */
export async function verifyAuditChains(owner: Knex): Promise<AuditVerification> {
  const rows = (
    await owner.raw(`
    select id, org_id, seq, prev_hash, hash,
      audit_row_hash(prev_hash, seq, org_id, at, actor_type, actor_id, action, target_type, target_id, ip,
        user_agent, outcome, details) as expected
    from audit_log order by coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid), seq, id`)
  ).rows as {
    id: string;
    org_id: string | null;
    seq: string;
    prev_hash: string;
    hash: string;
    expected: string;
  }[];
  let checked = 0;
  let chain: string | null | undefined;
  let prev = "";
  let expectedSeq = 0;
  for (const r of rows) {
    if (r.org_id !== chain) {
      chain = r.org_id;
      prev = "0".repeat(64);
      expectedSeq = 1;
    }
    const seq = Number(r.seq);
    const broken = (reason: string): AuditVerification => ({
      ok: false,
      checked,
      firstBroken: { id: String(r.id), orgId: r.org_id, seq, reason },
    });
    if (seq !== expectedSeq)
      return broken(
        seq > expectedSeq ? `records ${expectedSeq}..${seq - 1} are missing` : "sequence repeats",
      );
    if (r.prev_hash !== prev)
      return broken("does not follow the previous record (reordered or a record removed)");
    if (r.hash !== r.expected) return broken("content was changed after it was written");
    prev = r.hash;
    expectedSeq += 1;
    checked += 1;
  }
  return { ok: true, checked };
}
