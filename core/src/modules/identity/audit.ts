import { createHmac, hkdfSync } from "node:crypto";
import type { Knex } from "knex";
import { auditKeyOf } from "../../platform/db/keys.js";
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

/** The key of the audit chain's MACs, derived from the master key (HKDF-SHA256, its own purpose). */
export function auditChainKey(masterKey: string): Buffer {
  return Buffer.from(hkdfSync("sha256", masterKey, "worksynapse", "audit:chain-mac", 32));
}

/** A record's MAC: HMAC-SHA256 of its chain hash (which covers its content and the hash before it). */
export const auditMac = (key: Buffer, hash: string) => createHmac("sha256", key).update(hash).digest("hex");

/**
 * Appends to the organization's hash chain (in the caller's transaction, so it commits with the change) and
 * seals the record with its MAC, computed here: the key never reaches the database.
 */
export async function audit(db: Knex | Knex.Transaction, e: AuditEntry): Promise<void> {
  const key = auditChainKey(auditKeyOf(db));
  const write = async (trx: Knex | Knex.Transaction) => {
    const row = (
      await trx.raw("select * from audit_append(?, ?, ?, ?, ?, ?, ?, ?, ?, ?::jsonb)", [
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
      ])
    ).rows[0] as { id: string; hash: string };
    await trx.raw("select audit_seal(?, ?)", [row.id, auditMac(key, row.hash)]);
  };
  // Append and seal commit together or not at all.
  if ((db as Knex.Transaction).isTransaction) await write(db);
  else await db.transaction(write);
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

/** The first record whose chain is broken, or none; and what the checkpoints say. */
export interface AuditVerification {
  ok: boolean;
  checked: number;
  /** Records written before the chain was keyed (no MAC): covered by the hash chain and later MACs only. */
  legacy: number;
  firstBroken?: { id: string | null; orgId: string | null; seq: number; reason: string };
  checkpoints: { valid: number; invalid: number; chains: number };
}

/** Each chain's latest signed checkpoint (see audit.anchor.ts). */
export interface CheckpointHeads {
  latest: Map<string | null, { seq: number; hash: string; at: string }>;
  count: number;
  invalid: number;
}

/**
 * Recomputes every chain (as the owner, who sees every organization) and names the first broken record:
 * sequence gaps, broken links and changed content (the unkeyed hash), a MAC that does not match (content
 * changed and the hashes recomputed by someone without the key), a record without a MAC after keyed ones, and
 * records the newest checkpoint saw that the database no longer has (the newest records deleted).
 */
export async function verifyAuditChains(
  owner: Knex,
  opts: { masterKey: string; checkpoints: CheckpointHeads },
): Promise<AuditVerification> {
  const key = auditChainKey(opts.masterKey);
  const rows = (
    await owner.raw(`
    select id, org_id, seq, prev_hash, hash, mac,
      audit_row_hash(prev_hash, seq, org_id, at, actor_type, actor_id, action, target_type, target_id, ip,
        user_agent, outcome, details) as expected
    from audit_log order by coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid), seq, id`)
  ).rows as {
    id: string;
    org_id: string | null;
    seq: string;
    prev_hash: string;
    hash: string;
    mac: string | null;
    expected: string;
  }[];
  const cps = {
    valid: opts.checkpoints.count,
    invalid: opts.checkpoints.invalid,
    chains: opts.checkpoints.latest.size,
  };
  let checked = 0;
  let legacy = 0;
  const broken = (
    r: { id: string | null; org_id: string | null; seq: number },
    reason: string,
  ): AuditVerification => ({
    ok: false,
    checked,
    legacy,
    firstBroken: { id: r.id === null ? null : String(r.id), orgId: r.org_id, seq: r.seq, reason },
    checkpoints: cps,
  });
  if (opts.checkpoints.invalid > 0)
    return broken(
      { id: null, org_id: null, seq: 0 },
      `${opts.checkpoints.invalid} checkpoint lines do not carry a valid signature (the checkpoint file was edited)`,
    );
  // Each chain's last record, to compare with its checkpoint.
  const heads = new Map<string | null, { seq: number; hash: string }>();
  const atCheckpoint = new Map<string | null, (typeof rows)[number]>();
  let chain: string | null | undefined;
  let prev = "";
  let expectedSeq = 0;
  let keyed = false;
  for (const r of rows) {
    if (r.org_id !== chain) {
      chain = r.org_id;
      prev = "0".repeat(64);
      expectedSeq = 1;
      keyed = false;
    }
    const seq = Number(r.seq);
    const at = { id: r.id, org_id: r.org_id, seq };
    if (seq !== expectedSeq)
      return broken(
        at,
        seq > expectedSeq ? `records ${expectedSeq}..${seq - 1} are missing` : "sequence repeats",
      );
    if (r.prev_hash !== prev)
      return broken(at, "does not follow the previous record (reordered or a record removed)");
    if (r.hash !== r.expected) return broken(at, "content was changed after it was written");
    if (r.mac === null) {
      if (keyed)
        return broken(at, "carries no MAC although records before it do (written outside the server)");
      legacy += 1;
    } else {
      keyed = true;
      if (r.mac !== auditMac(key, r.hash))
        return broken(
          at,
          "its MAC does not match: the record was changed and the chain recomputed without the key",
        );
    }
    heads.set(r.org_id, { seq, hash: r.hash });
    if (opts.checkpoints.latest.get(r.org_id)?.seq === seq) atCheckpoint.set(r.org_id, r);
    prev = r.hash;
    expectedSeq += 1;
    checked += 1;
  }
  for (const [org, cp] of opts.checkpoints.latest) {
    const head = heads.get(org);
    const at = { id: null, org_id: org, seq: cp.seq };
    if (!head || head.seq < cp.seq)
      return broken(
        at,
        `records ${(head?.seq ?? 0) + 1}..${cp.seq} are missing: the checkpoint of ${cp.at} saw the chain up to ${cp.seq}, the database ends at ${head?.seq ?? 0} (the newest records were deleted)`,
      );
    const row = atCheckpoint.get(org);
    if (row && row.hash !== cp.hash)
      return broken(
        { id: row.id, org_id: org, seq: cp.seq },
        `differs from the checkpoint of ${cp.at} (the chain was rewritten)`,
      );
  }
  return { ok: true, checked, legacy, checkpoints: cps };
}
