import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { getTestServer, type TestServer } from "../support/server.js";
import { createTestOrg, type TestOrg } from "../support/identity.js";

const run = promisify(execFile);
const BIN = new URL("../../installer/bin/worksynapse.mjs", import.meta.url).pathname;
let srv: TestServer;
let org: TestOrg;
let su: pg.Client;

/** Runs the worksynapse CLI against the test server's database and data directory. */
const cli = async (...args: string[]) => {
  const env = { ...process.env, DATABASE_URL: srv.pg.url, WORKSYNAPSE_DATA_DIR: srv.config.dataDir };
  try {
    const { stdout } = await run(process.execPath, [BIN, ...args], { env, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, out: stdout };
  } catch (err) {
    return { code: (err as { code: number }).code, out: (err as { stdout: string }).stdout };
  }
};
const verify = () => cli("audit", "verify");

beforeAll(async () => {
  srv = await getTestServer();
  org = await createTestOrg(srv, "tamper");
  for (let i = 0; i < 6; i++) await org.owner.json("POST", "/api/groups", { name: `g${i}` }, 201);
  su = new pg.Client({ connectionString: srv.pg.url });
  await su.connect();
});
afterAll(async () => {
  await su?.end();
  await srv?.close();
});

const rowsOf = async () =>
  (await su.query("select id, seq, details from audit_log where org_id = $1 order by seq", [org.orgId]))
    .rows as {
    id: string;
    seq: string;
    details: unknown;
  }[];

describe("worksynapse audit verify", () => {
  it("passes on an intact log", async () => {
    const r = await verify();
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/audit log intact: \d+ records checked/);
  });

  it("names the first changed record", async () => {
    const rows = await rowsOf();
    const victim = rows[3] as (typeof rows)[number];
    await su.query(`update audit_log set details = '{"name":"innocent"}' where id = $1`, [victim.id]);
    const r = await verify();
    expect(r.code).toBe(1);
    expect(r.out).toContain(`record id ${victim.id}`);
    expect(r.out).toContain("content was changed");
    await su.query("update audit_log set details = $2 where id = $1", [
      victim.id,
      JSON.stringify(victim.details),
    ]);
    expect((await verify()).code).toBe(0);
  });

  it("names the record after a deleted one", async () => {
    const rows = await rowsOf();
    const gone = rows[2] as (typeof rows)[number];
    const after = rows[3] as (typeof rows)[number];
    // A byte-exact copy (a round trip through JavaScript would lose the microseconds the hash covers).
    await su.query("create temp table saved as select * from audit_log where id = $1", [gone.id]);
    await su.query("delete from audit_log where id = $1", [gone.id]);
    const r = await verify();
    expect(r.code).toBe(1);
    expect(r.out).toContain(`record id ${after.id}`);
    expect(r.out).toContain("missing");
    await su.query("insert into audit_log select * from saved");
    expect((await verify()).code).toBe(0);
  });

  it("names the first record of a reordering", async () => {
    const rows = await rowsOf();
    const x = rows[1] as (typeof rows)[number];
    const y = rows[4] as (typeof rows)[number];
    await su.query("update audit_log set seq = -1 where id = $1", [x.id]);
    await su.query("update audit_log set seq = $2 where id = $1", [y.id, x.seq]);
    await su.query("update audit_log set seq = $2 where id = $1", [x.id, y.seq]);
    const r = await verify();
    expect(r.code).toBe(1);
    expect(r.out).toContain(`record id ${y.id}`);
    expect(r.out).toMatch(/reordered|changed/);
    await su.query("update audit_log set seq = -1 where id = $1", [y.id]);
    await su.query("update audit_log set seq = $2 where id = $1", [x.id, x.seq]);
    await su.query("update audit_log set seq = $2 where id = $1", [y.id, y.seq]);
    expect((await verify()).code).toBe(0);
  });

  it("the server's database role can read the log but not change or delete it", async () => {
    const { withOrg } = await import("../../core/src/platform/db/tenant.js");
    await expect(
      withOrg(srv.db.knex, org.orgId, (trx) => trx("audit_log").update({ outcome: "x" })),
    ).rejects.toThrow(/permission denied/);
    await expect(withOrg(srv.db.knex, org.orgId, (trx) => trx("audit_log").delete())).rejects.toThrow(
      /permission denied/,
    );
    await expect(
      withOrg(srv.db.knex, org.orgId, (trx) =>
        trx("audit_log").insert({
          org_id: org.orgId,
          seq: 999,
          at: new Date(),
          actor_type: "x",
          action: "x",
          outcome: "x",
          prev_hash: "x",
          hash: "x",
        }),
      ),
    ).rejects.toThrow(/permission denied/);
  });
});

// The attacks of someone with the database owner's access (AU-9), after the chain was keyed and anchored.
describe("worksynapse audit verify against the database owner", () => {
  /** Saves the organization's chain, runs `fn`, and puts the chain back byte for byte. */
  const tampered = async (fn: () => Promise<void>) => {
    await su.query("drop table if exists snap");
    await su.query("create temp table snap as select * from audit_log where org_id = $1", [org.orgId]);
    try {
      await fn();
    } finally {
      await su.query("delete from audit_log where org_id = $1", [org.orgId]);
      await su.query("insert into audit_log select * from snap");
    }
  };
  /** Recomputes the organization's chain from `fromSeq` on with the database's own (unkeyed) hash function. */
  const rehash = (fromSeq: number) =>
    su.query(
      `do $$ declare r record; p text; begin
        select hash into p from audit_log where org_id = '${org.orgId}' and seq = ${fromSeq - 1};
        for r in select * from audit_log where org_id = '${org.orgId}' and seq >= ${fromSeq} order by seq loop
          update audit_log set prev_hash = p,
            hash = audit_row_hash(p, r.seq, r.org_id, r.at, r.actor_type, r.actor_id, r.action, r.target_type,
              r.target_id, r.ip, r.user_agent, r.outcome, r.details)
            where id = r.id returning hash into p;
        end loop; end $$`,
    );

  beforeAll(async () => {
    for (let i = 0; i < 4; i++) await org.owner.json("POST", "/api/groups", { name: `anchor${i}` }, 201);
    const cp = await cli("audit", "checkpoint");
    expect(cp.code).toBe(0);
    expect(cp.out).toMatch(/[1-9]\d* checkpoints written/);
  });

  it("says intact on an untouched chain, every record sealed with its MAC", async () => {
    const { rows } = await su.query(
      "select count(*)::int as n from audit_log where org_id = $1 and mac is null",
      [org.orgId],
    );
    expect(rows[0]).toEqual({ n: 0 });
    const r = await verify();
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /audit log intact: \d+ records checked \(0 from before the chain was keyed\), [1-9]\d* signed checkpoints/,
    );
  });

  it("detects an edit followed by recomputing the chain with the database's hash function", async () => {
    const rows = await rowsOf();
    const victim = rows[3] as (typeof rows)[number];
    await tampered(async () => {
      await su.query(`update audit_log set details = '{"name":"innocent"}' where id = $1`, [victim.id]);
      await rehash(Number(victim.seq));
      const r = await verify();
      expect(r.code).toBe(1);
      expect(r.out).toContain(`record id ${victim.id}`);
      expect(r.out).toContain("MAC does not match");
    });
    expect((await verify()).code).toBe(0);
  });

  it("detects a deletion in the middle, renumbered and rehashed", async () => {
    const rows = await rowsOf();
    const gone = rows[2] as (typeof rows)[number];
    await tampered(async () => {
      await su.query("delete from audit_log where id = $1", [gone.id]);
      await su.query("update audit_log set seq = -seq where org_id = $1 and seq > $2", [org.orgId, gone.seq]);
      await su.query("update audit_log set seq = -seq - 1 where org_id = $1 and seq < 0", [org.orgId]);
      await rehash(Number(gone.seq));
      const r = await verify();
      expect(r.code).toBe(1);
      expect(r.out).toContain("MAC does not match");
    });
    expect((await verify()).code).toBe(0);
  });

  it("detects the deletion of the newest records, which no later record could reveal", async () => {
    const rows = await rowsOf();
    const last = Number((rows.at(-1) as (typeof rows)[number]).seq);
    await tampered(async () => {
      await su.query("delete from audit_log where org_id = $1 and seq > $2", [org.orgId, last - 3]);
      const r = await verify();
      expect(r.code).toBe(1);
      expect(r.out).toContain(`organization ${org.orgId}`);
      expect(r.out).toContain(`records ${last - 2}..${last} are missing`);
      expect(r.out).toContain("newest records were deleted");
    });
    expect((await verify()).code).toBe(0);
  });

  it("detects a record inserted without the key", async () => {
    const rows = await rowsOf();
    const last = rows.at(-1) as (typeof rows)[number];
    await tampered(async () => {
      await su.query(
        `insert into audit_log (org_id, seq, at, actor_type, action, outcome, details, prev_hash, hash)
         select org_id, seq + 1, now(), 'system', 'forged', 'success', '{}', hash,
           audit_row_hash(hash, seq + 1, org_id, now(), 'system', null, 'forged', null, null, null, null, 'success', '{}')
         from audit_log where id = $1`,
        [last.id],
      );
      const r = await verify();
      expect(r.code).toBe(1);
      expect(r.out).toContain("carries no MAC");
    });
  });

  it("compares with a checkpoint file given on the command line (a SIEM's copy)", async () => {
    const { checkpointFile } = await import("../../core/src/modules/identity/audit.anchor.js");
    const { copyFileSync, mkdtempSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const path = await import("node:path");
    const copy = path.join(mkdtempSync(path.join(tmpdir(), "ws-siem-")), "checkpoints.jsonl");
    copyFileSync(checkpointFile(srv.config.dataDir), copy);
    expect((await cli("audit", "verify", "--checkpoints", copy)).code).toBe(0);
    const rows = await rowsOf();
    const last = Number((rows.at(-1) as (typeof rows)[number]).seq);
    await su.query("drop table if exists snap2");
    await su.query("create temp table snap2 as select * from audit_log where org_id = $1", [org.orgId]);
    try {
      await su.query("delete from audit_log where org_id = $1 and seq = $2", [org.orgId, last]);
      const r = await cli("audit", "verify", "--checkpoints", copy);
      expect(r.code).toBe(1);
      expect(r.out).toContain("newest records were deleted");
    } finally {
      await su.query("delete from audit_log where org_id = $1", [org.orgId]);
      await su.query("insert into audit_log select * from snap2");
    }
    expect((await cli("audit", "verify", "--checkpoints", "/nonexistent/file")).code).toBe(2);
  });

  it("detects an edited checkpoint file", async () => {
    const { checkpointFile } = await import("../../core/src/modules/identity/audit.anchor.js");
    const { readFileSync, writeFileSync } = await import("node:fs");
    const file = checkpointFile(srv.config.dataDir);
    const before = readFileSync(file, "utf8");
    const lines = before.trim().split("\n");
    const cp = JSON.parse(lines.at(-1) as string) as { seq: number };
    cp.seq -= 1;
    writeFileSync(file, [...lines.slice(0, -1), JSON.stringify(cp)].join("\n") + "\n");
    try {
      const r = await verify();
      expect(r.code).toBe(1);
      expect(r.out).toContain("checkpoint lines do not carry a valid signature");
    } finally {
      writeFileSync(file, before);
    }
  });

  it("exports records as JSON lines with their chain proof, from a time on", async () => {
    const all = await cli("audit", "export", "--org", org.orgId);
    expect(all.code).toBe(0);
    const lines = all.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.length).toBe((await rowsOf()).length);
    const mid = lines[4] as {
      at: string;
      seq: number;
      proof: { prevHash: string; hash: string; mac: string };
    };
    expect(mid.proof.prevHash).toBe((lines[3] as { proof: { hash: string } }).proof.hash);
    expect(mid.proof.mac).toMatch(/^[0-9a-f]{64}$/);
    const since = await cli("audit", "export", "--org", org.orgId, "--since", mid.at);
    const seqs = since.out
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { seq: number }).seq);
    expect(Math.min(...seqs)).toBeGreaterThanOrEqual(mid.seq - 1);
    expect((await cli("audit", "export", "--since", "yesterday-ish")).code).toBe(2);
  });
});
