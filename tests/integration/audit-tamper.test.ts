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

const verify = async () => {
  const env = { ...process.env, DATABASE_URL: srv.pg.url, WORKSYNAPSE_DATA_DIR: srv.config.dataDir };
  try {
    const { stdout } = await run(process.execPath, [BIN, "audit", "verify"], { env });
    return { code: 0, out: stdout };
  } catch (err) {
    return { code: (err as { code: number }).code, out: (err as { stdout: string }).stdout };
  }
};

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
