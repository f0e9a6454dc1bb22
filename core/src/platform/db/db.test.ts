import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../log.js";
import { openDatabase, openOwnerDatabase } from "./database.js";
import { runMigrations } from "./migrate.js";
import { withOrg } from "./tenant.js";
import { createTestDatabase, type TestDatabase } from "../../../../tests/support/pg.js";
import { testConfig } from "../../../../tests/support/config.js";
import type { Config } from "../../config/schema.js";

const log = silentLogger();
const dbs: TestDatabase[] = [];
afterAll(async () => {
  for (const d of dbs) await d.drop();
});

async function engines(): Promise<[string, Config][]> {
  const pg = await createTestDatabase("mig");
  dbs.push(pg);
  return [
    ["postgres", testConfig({ DATABASE_URL: pg.url })],
    ["pglite", testConfig()],
  ];
}

const tables = async (cfg: Config) => {
  const owner = openOwnerDatabase(cfg);
  try {
    const r = await owner.knex.raw(
      "select tablename from pg_tables where schemaname = 'public' and tablename not like 'knex_%' order by 1",
    );
    return (r.rows as { tablename: string }[]).map((x) => x.tablename);
  } finally {
    await owner.close();
  }
};

describe("migrations", () => {
  it("run up, down to nothing, and up again on PostgreSQL and on PGlite", async () => {
    for (const [engine, cfg] of await engines()) {
      const run = async (action: "latest" | "rollback-all") => {
        const owner = openOwnerDatabase(cfg);
        try {
          return await runMigrations(owner.knex, cfg.database.appRole, action, log);
        } finally {
          await owner.close();
        }
      };
      const up = await run("latest");
      expect(
        up.every((m) => m.applied),
        engine,
      ).toBe(true);
      const all = await tables(cfg);
      expect(all, engine).toEqual(expect.arrayContaining(["outbox", "organizations", "users", "audit_log"]));
      const down = await run("rollback-all");
      expect(
        down.every((m) => !m.applied),
        engine,
      ).toBe(true);
      expect(await tables(cfg), engine).toEqual([]);
      await run("latest");
      expect(await tables(cfg), engine).toEqual(all);
    }
  });
});

describe("the server's database role", () => {
  it("is the app role, owns nothing and cannot bypass row-level security, on both engines", async () => {
    for (const [engine, cfg] of await engines()) {
      const db = await openDatabase(cfg, { migrate: true, log });
      try {
        const who = await db.knex.raw(
          "select current_user as u, rolsuper, rolbypassrls from pg_roles where rolname = current_user",
        );
        expect(who.rows[0], engine).toEqual({ u: "worksynapse_app", rolsuper: false, rolbypassrls: false });
        const owned = await db.knex.raw(
          "select count(*)::int as n from pg_class c join pg_roles r on r.oid = c.relowner where r.rolname = current_user",
        );
        expect(owned.rows[0].n, engine).toBe(0);
        // It may write the outbox but not change the schema.
        await expect(db.knex.raw("create table intruder (id int)"), engine).rejects.toThrow(
          /permission denied/,
        );
        await expect(db.knex.raw("drop table outbox"), engine).rejects.toThrow(
          /must be owner|permission denied/,
        );
        await expect(db.knex("dead_letters").delete(), engine).rejects.toThrow(/permission denied/);
      } finally {
        await db.close();
      }
    }
  });

  it("sees no rows of a row-level-secured table without the organization set", async () => {
    for (const [engine, cfg] of await engines()) {
      const owner = openOwnerDatabase(cfg);
      await runMigrations(owner.knex, cfg.database.appRole, "latest", log);
      for (const sql of [
        "create table rls_probe (org_id text not null, v text)",
        "alter table rls_probe enable row level security",
        "alter table rls_probe force row level security",
        "create policy org on rls_probe using (org_id = current_setting('app.org_id', true)) with check (org_id = current_setting('app.org_id', true))",
        "grant select, insert on rls_probe to worksynapse_app",
        "insert into rls_probe values ('a', 'A1'), ('b', 'B1')",
      ]) {
        await owner.knex.raw(sql);
      }
      await owner.close();
      const db = await openDatabase(cfg, { migrate: false, log });
      try {
        expect((await db.knex("rls_probe").select("v")).length, engine).toBe(0);
        const a = await withOrg(db.knex, "a", (trx) => trx("rls_probe").select("v"));
        expect(a, engine).toEqual([{ v: "A1" }]);
        await expect(
          withOrg(db.knex, "a", (trx) => trx("rls_probe").insert({ org_id: "b", v: "sneaky" })),
          engine,
        ).rejects.toThrow(/row-level security/);
        // The setting ends with the transaction: the next query on the connection sees nothing again.
        expect((await db.knex("rls_probe").select("v")).length, engine).toBe(0);
      } finally {
        await db.close();
      }
    }
  });

  it("refuses a second process on the same embedded database", async () => {
    const cfg = testConfig();
    const db = await openDatabase(cfg, { migrate: true, log });
    try {
      expect(() => openOwnerDatabase(cfg)).toThrow(/in use by process/);
    } finally {
      await db.close();
    }
  });
});
