import { createPrivateKey, createPublicKey, hkdfSync, sign, verify, type KeyObject } from "node:crypto";
import { createSocket } from "node:dgram";
import { appendFileSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync } from "node:fs";
import net from "node:net";
import { hostname } from "node:os";
import path from "node:path";
import type { Knex } from "knex";
import type { Config } from "../../config/schema.js";
import type { Logger } from "../../platform/log.js";
import { auditChainKey, auditMac } from "./audit.js";

/**
 * Anchoring of the audit chains outside the database. A keyed chain (audit.ts) stops an edit being hidden by
 * recomputing hashes, but not the deletion of a chain's newest records: nothing after them is left to break.
 * So the worker writes signed checkpoints of each chain's head (sequence, hash, time) to the data directory and,
 * when configured, to a file or syslog sink a SIEM collects; `audit verify` compares the database with them.
 */

/** One signed checkpoint: the head of one chain at one time. */
export interface Checkpoint {
  v: 1;
  /** The organization, or null for the installation's own chain. */
  org: string | null;
  seq: number;
  hash: string;
  at: string;
  /** Ed25519 signature (base64) of checkpointMessage(). */
  sig: string;
}

// A PKCS#8 DER header for a raw 32-byte Ed25519 seed (RFC 8410), so the key can be derived, not stored.
const ED25519_PKCS8 = Buffer.from("302e020100300506032b657004220420", "hex");

/** The checkpoint signing key pair, derived from the master key (its public half can be given to a SIEM). */
export function checkpointKeys(masterKey: string): { privateKey: KeyObject; publicKey: KeyObject } {
  const seed = Buffer.from(hkdfSync("sha256", masterKey, "worksynapse", "audit:checkpoint-ed25519", 32));
  const privateKey = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8, seed]),
    format: "der",
    type: "pkcs8",
  });
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/** The exact text a checkpoint's signature covers (documented in docs/identity.md for SIEM-side checks). */
export const checkpointMessage = (c: Omit<Checkpoint, "sig" | "v">) =>
  `worksynapse-audit-checkpoint:v1:${c.org ?? "-"}:${c.seq}:${c.hash}:${c.at}`;

/** True when a checkpoint's signature holds. */
export function checkpointValid(publicKey: KeyObject, c: Checkpoint): boolean {
  try {
    return verify(null, Buffer.from(checkpointMessage(c)), publicKey, Buffer.from(c.sig, "base64"));
  } catch {
    return false;
  }
}

/** Where the data directory keeps the checkpoints (JSON lines, appended). */
export const checkpointFile = (dataDir: string) => path.join(dataDir, "audit", "checkpoints.jsonl");

/** The checkpoints of a file: the latest valid one per chain, and how many lines did not verify. */
export function readCheckpoints(
  file: string,
  publicKey: KeyObject,
): { latest: Map<string | null, Checkpoint>; count: number; invalid: number } {
  const latest = new Map<string | null, Checkpoint>();
  let count = 0;
  let invalid = 0;
  if (!existsSync(file)) return { latest, count, invalid };
  const lines = readFileSync(file, "utf8").split("\n");
  // A last line without its newline is a write cut off by a crash (lines are appended whole, then fsynced):
  // it was never a checkpoint, so it is neither counted nor taken for tampering.
  lines.pop();
  for (const line of lines) {
    if (!line.trim()) continue;
    let c: Checkpoint;
    try {
      c = JSON.parse(line) as Checkpoint;
    } catch {
      invalid += 1;
      continue;
    }
    if (typeof c.seq !== "number" || typeof c.hash !== "string" || !checkpointValid(publicKey, c)) {
      invalid += 1;
      continue;
    }
    count += 1;
    const prev = latest.get(c.org);
    if (!prev || c.seq > prev.seq) latest.set(c.org, c);
  }
  return { latest, count, invalid };
}

/** Sends a checkpoint line somewhere a SIEM collects: a file (appended) or syslog (RFC 5424, UDP or TCP). */
export type Sink = (c: Checkpoint) => Promise<void>;

/** The sink an admin configured (audit.sink), or null. */
export function sinkOf(spec: string | undefined): Sink | null {
  if (!spec) return null;
  const m = /^syslog(\+tcp)?:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(spec);
  if (!m) {
    return async (c) => appendFileSync(spec, JSON.stringify(c) + "\n", { mode: 0o600 });
  }
  const [, tcp, rawHost, port] = m as unknown as [string, string | undefined, string, string];
  const host = rawHost.replace(/^\[|\]$/g, "");
  // facility 13 (log audit), severity 6 (informational): PRI 110; MSGID names the record type.
  const message = (c: Checkpoint) =>
    `<110>1 ${c.at} ${hostname()} worksynapse ${process.pid} audit-checkpoint - ${JSON.stringify(c)}`;
  if (!tcp) {
    return (c) =>
      new Promise<void>((resolve, reject) => {
        const socket = createSocket(net.isIPv6(host) ? "udp6" : "udp4");
        socket.send(message(c), Number(port), host, (err) => {
          socket.close();
          if (err) reject(err);
          else resolve();
        });
      });
  }
  return (c) =>
    new Promise<void>((resolve, reject) => {
      const msg = Buffer.from(message(c));
      // RFC 6587 octet counting: "<length> <message>".
      const socket = net.connect({ host, port: Number(port) }, () =>
        socket.end(Buffer.concat([Buffer.from(`${msg.length} `), msg]), () => resolve()),
      );
      socket.setTimeout(5000, () => socket.destroy(new Error("syslog sink timed out")));
      socket.once("error", reject);
    });
}

/** Each chain's head as the database has it. */
export async function chainHeads(
  db: Knex,
): Promise<{ org: string | null; seq: number; hash: string; mac: string | null }[]> {
  const rows = (await db.raw("select * from audit_heads()")).rows as {
    org_id: string | null;
    seq: string;
    hash: string;
    mac: string | null;
  }[];
  return rows.map((r) => ({ org: r.org_id, seq: Number(r.seq), hash: r.hash, mac: r.mac }));
}

/** Writes checkpoints of the chains whose heads moved since the last ones; returns how many it wrote. */
export async function writeCheckpoints(
  db: Knex,
  opts: { dataDir: string; masterKey: string; sink: Sink | null; log: Logger },
): Promise<number> {
  const keys = checkpointKeys(opts.masterKey);
  const chainKey = auditChainKey(opts.masterKey);
  const file = checkpointFile(opts.dataDir);
  const { latest } = readCheckpoints(file, keys.publicKey);
  const fresh: Checkpoint[] = [];
  for (const head of await chainHeads(db)) {
    const last = latest.get(head.org);
    if (last && last.seq === head.seq && last.hash === head.hash) continue;
    // A head whose MAC does not hold was not written by this installation's server: never vouched for.
    if (head.mac !== null && head.mac !== auditMac(chainKey, head.hash)) {
      opts.log.error(
        { org: head.org, seq: head.seq },
        "the audit chain's newest record does not carry a valid MAC; no checkpoint written (run worksynapse audit verify)",
      );
      continue;
    }
    const body = { org: head.org, seq: head.seq, hash: head.hash, at: new Date().toISOString() };
    const sig = sign(null, Buffer.from(checkpointMessage(body)), keys.privateKey).toString("base64");
    fresh.push({ v: 1, ...body, sig });
  }
  if (fresh.length === 0) return 0;
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const fd = openSync(file, "a", 0o600);
  try {
    appendFileSync(fd, fresh.map((c) => JSON.stringify(c) + "\n").join(""));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  for (const c of fresh) {
    try {
      await opts.sink?.(c);
    } catch (err) {
      // The local checkpoint stands; the sink gets the next one.
      opts.log.warn({ err, org: c.org, seq: c.seq }, "could not send an audit checkpoint to the sink");
    }
  }
  return fresh.length;
}

/** Runs the checkpoint writer every audit.checkpointIntervalMs (and once more when stopped). */
export function startCheckpointer(deps: {
  knex: Knex;
  config: Config;
  masterKey: string;
  log: Logger;
}): () => Promise<void> {
  const opts = {
    dataDir: deps.config.dataDir,
    masterKey: deps.masterKey,
    sink: sinkOf(deps.config.audit.sink),
    log: deps.log,
  };
  let running: Promise<unknown> = Promise.resolve();
  const tick = () => {
    running = running
      .then(() => writeCheckpoints(deps.knex, opts))
      .catch((err: unknown) => deps.log.error({ err }, "audit checkpoint failed"));
  };
  tick();
  const timer = setInterval(tick, deps.config.audit.checkpointIntervalMs);
  timer.unref();
  return async () => {
    clearInterval(timer);
    tick();
    await running;
  };
}
