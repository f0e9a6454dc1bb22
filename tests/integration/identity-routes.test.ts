import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { getTestServer, type TestServer } from "../support/server.js";
import { createMember, createTestOrg, type TestOrg } from "../support/identity.js";
import { fill, operations, type Operation } from "../support/openapi.js";

let srv: TestServer;
let org: TestOrg;
let ops: Operation[];

beforeAll(async () => {
  srv = await getTestServer();
  org = await createTestOrg(srv, "routes");
  ops = await operations(srv);
});
afterAll(() => srv?.close());

describe("every signed-in route", () => {
  it("answers 401 with the error envelope when no credentials are sent", async () => {
    const user = ops.filter((o) => o.auth === "user");
    expect(user.length).toBeGreaterThan(30);
    for (const op of user) {
      const r = await srv.fetch(fill(op.path, {}), {
        method: op.method,
        headers: op.hasBody ? { "content-type": "application/json" } : {},
        body: op.hasBody ? "{}" : undefined,
      });
      expect(r.status, `${op.method} ${op.path}`).toBe(401);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("unauthenticated");
    }
  });

  it("answers 401 for a forged session cookie, API key or token", async () => {
    for (const headers of <Record<string, string>[]>[
      { cookie: "ws_session=forged" },
      { "x-api-key": "wsk_0123456789ab_" + "x".repeat(32) },
      { authorization: "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0." },
      { authorization: "Basic YTpi" },
    ]) {
      expect((await srv.fetch("/api/auth/me", { headers })).status, JSON.stringify(headers)).toBe(401);
    }
  });

  it("answers 403 to a caller without the route's permission, before any input error", async () => {
    // A user with no role at all holds no permission.
    const nobody = await createMember(org, [], "nobody");
    const guarded = ops.filter((o) => o.permission);
    expect(guarded.length).toBeGreaterThan(20);
    for (const op of guarded) {
      const r = await nobody.client.request(op.method, fill(op.path, {}), op.hasBody ? {} : undefined);
      expect(r.status, `${op.method} ${op.path}`).toBe(403);
      const body = (await r.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe("forbidden");
      expect(body.error.message).toContain(op.permission);
    }
    // System routes need the system administrator flag, not a role.
    const sys = await org.owner.request("GET", "/api/system/organizations");
    expect(sys.status).toBe(403);
  });

  it("answers bad input on every route with a body with a 400 naming the field", async () => {
    const admin = org.owner;
    for (const op of ops.filter((o) => o.hasBody && o.auth === "user" && o.method !== "DELETE")) {
      const path = fill(op.path, { id: org.ownerId });
      const malformed = await admin.request(op.method, path, "{not json");
      expect(malformed.status, `malformed ${op.operationId}`).toBe(400);
      expect(((await malformed.json()) as { error: { code: string } }).error.code, op.operationId).toBe(
        "malformed_body",
      );
      const unknown = await admin.request(op.method, path, { surprise: 1 });
      expect(unknown.status, `unknown field ${op.operationId}`).toBe(400);
      const body = (await unknown.json()) as {
        error: { code: string; details?: { fields: { path: string; message: string }[] } };
      };
      expect(body.error.code, op.operationId).toBe("validation_failed");
      expect(body.error.details?.fields.length, op.operationId).toBeGreaterThan(0);
    }
    const wrongType = await admin.request("POST", "/api/groups", { name: 42 });
    expect(
      ((await wrongType.json()) as { error: { details: { fields: { path: string }[] } } }).error.details
        .fields[0]?.path,
    ).toBe("name");
    const oversized = await admin.request("POST", "/api/groups", { name: "g".repeat(121) });
    expect(oversized.status).toBe(400);
    const badId = await admin.request("GET", "/api/users/not-a-uuid");
    expect(badId.status).toBe(400);
  });
});

describe("row-level security catalog", () => {
  it("every table with org_id has RLS enabled and forced with USING and WITH CHECK; the app role owns nothing", async () => {
    const c = new pg.Client({ connectionString: srv.pg.url });
    await c.connect();
    try {
      const tables = (
        await c.query(`
        select c.relname, c.relrowsecurity, c.relforcerowsecurity
        from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped
        where c.relkind = 'r' and c.relnamespace = 'public'::regnamespace`)
      ).rows as {
        relname: string;
        relrowsecurity: boolean;
        relforcerowsecurity: boolean;
      }[];
      expect(tables.length).toBeGreaterThanOrEqual(12);
      for (const t of tables) {
        expect(t.relrowsecurity && t.relforcerowsecurity, t.relname).toBe(true);
        const pols = (
          await c.query("select qual, with_check from pg_policies where tablename = $1", [t.relname])
        ).rows as {
          qual: string | null;
          with_check: string | null;
        }[];
        expect(pols.length, t.relname).toBeGreaterThan(0);
        for (const p of pols) {
          expect(p.qual, t.relname).toContain("app.org_id");
          expect(p.with_check, t.relname).toContain("app.org_id");
        }
      }
      const role = (
        await c.query("select rolsuper, rolbypassrls from pg_roles where rolname = 'worksynapse_app'")
      ).rows[0];
      expect(role).toEqual({ rolsuper: false, rolbypassrls: false });
      const owned = (
        await c.query(
          "select count(*)::int as n from pg_class c join pg_roles r on r.oid = c.relowner where r.rolname = 'worksynapse_app'",
        )
      ).rows[0];
      expect(owned).toEqual({ n: 0 });
    } finally {
      await c.end();
    }
  });

  it("a query as the app role without the organization setting sees zero rows of every tenant table", async () => {
    const tables = (
      await srv.db.knex.raw(
        "select distinct table_name from information_schema.columns where column_name = 'org_id' and table_schema = 'public'",
      )
    ).rows as { table_name: string }[];
    for (const { table_name } of tables) {
      const [{ n }] = (await srv.db.knex(table_name).count("* as n")) as [{ n: string }];
      expect(Number(n), table_name).toBe(0);
    }
    // Rows exist: the organizations made above are visible in their own scope.
    const { withOrg } = await import("../../core/src/platform/db/tenant.js");
    const users = await withOrg(srv.db.knex, org.orgId, (trx) => trx("users").count("* as n").first());
    expect(Number(users?.n)).toBeGreaterThan(0);
  });
});
