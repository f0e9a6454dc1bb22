import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createMember, createTestOrg, PASSWORD, signIn, type TestOrg } from "../support/identity.js";
import { testConfig } from "../support/config.js";
import { startServer } from "../../core/src/server.js";
import { silentLogger } from "../../core/src/platform/log.js";

let srv: TestServer;
let org: TestOrg;

const attempt = (server: TestServer, email: string, password: string) =>
  server.fetch("/api/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: server.url },
    body: JSON.stringify({ email, password }),
  });

beforeAll(async () => {
  // The per-address limit is lifted so the per-account lockout is what stops the attack here.
  srv = await getTestServer({ env: { WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "100000" } });
  org = await createTestOrg(srv, "brute");
});
afterAll(() => srv?.close());

/** A new API key of the organization's owner that may read the organization. */
const newKey = async (o: TestOrg, name: string) =>
  (
    await o.owner.json<{ data: { key: string } }>(
      "POST",
      "/api/api-keys",
      { name, permissions: ["org.read"] },
      201,
    )
  ).data.key;

describe("password guessing", () => {
  it("1,000 wrong passwords against one account: at most 5 are evaluated, the lock is audited, an admin restores access", async () => {
    const victim = await createMember(org, ["member"], "victim");
    let next = 0;
    const statuses: number[] = [];
    await Promise.all(
      Array.from({ length: 25 }, async () => {
        while (next < 1000) {
          const n = next++;
          statuses.push((await attempt(srv, victim.email, `wrong-guess-${n}-xxxxx`)).status);
        }
      }),
    );
    expect(statuses).toHaveLength(1000);
    expect(statuses.every((s) => s === 401)).toBe(true);
    const log = async (q: string) =>
      (
        await org.owner.json<{
          data: { action: string; outcome: string; details: Record<string, unknown> }[];
        }>("GET", `/api/audit?limit=200&${q}`)
      ).data;
    const evaluated = (await log(`action=auth.sign_in&outcome=failure&actorId=${victim.id}`)).filter(
      (e) => e.details.reason === "wrong_password",
    );
    expect(evaluated.length).toBe(5);
    expect((await log(`action=auth.lockout&actorId=${victim.id}`)).length).toBe(1);
    const denied = (
      await org.owner.json<{ page: { total: number } }>(
        "GET",
        `/api/audit?action=auth.sign_in&outcome=denied&actorId=${victim.id}`,
      )
    ).page.total;
    expect(denied).toBe(995);

    // The real user, with the right password, is locked out too...
    const real = await attempt(srv, victim.email, PASSWORD);
    expect(real.status).toBe(401);
    expect(((await real.json()) as { error: { code: string } }).error.code).toBe("account_locked");
    // ...until an administrator resets the password, which unlocks the account.
    const users = await org.owner.json<{ data: { id: string; locked: boolean }[] }>(
      "GET",
      "/api/users?limit=200",
    );
    expect(users.data.find((u) => u.id === victim.id)?.locked).toBe(true);
    await org.owner.json(
      "POST",
      `/api/users/${victim.id}/reset-password`,
      { password: "restored-secret-phrase" },
      204,
    );
    await signIn(srv, victim.email, "restored-secret-phrase");
  }, 120_000);

  it("limits sign-in attempts per client address across accounts (429 with Retry-After)", async () => {
    const limited = await getTestServer({ env: { WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "10" } });
    try {
      const codes: number[] = [];
      for (let i = 0; i < 12; i++)
        codes.push((await attempt(limited, `nobody${i}@example.org`, "whatever-password")).status);
      expect(codes.slice(0, 10).every((c) => c === 401)).toBe(true);
      const r = await attempt(limited, "nobody@example.org", "whatever-password");
      expect(r.status).toBe(429);
      expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(0);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("rate_limited");
    } finally {
      await limited.close();
    }
  });

  it("limits API requests per key per minute (429 with Retry-After), exactly on one node, counted in PostgreSQL", async () => {
    const limited = await getTestServer({ env: { WORKSYNAPSE_AUTH_API_PER_MINUTE: "5" } });
    try {
      const o = await createTestOrg(limited, "apilimit");
      const key = await newKey(o, "k");
      const key2 = await newKey(o, "k2");
      const codes: number[] = [];
      let last: Response | undefined;
      for (let i = 0; i < 10; i++) {
        last = await limited.fetch("/api/org", { headers: { "x-api-key": key } });
        codes.push(last.status);
        await new Promise((r) => setTimeout(r, 30));
      }
      // Counted in memory and added to the shared counter every 100 ms: this node refuses the sixth at once.
      expect(codes).toEqual([200, 200, 200, 200, 200, 429, 429, 429, 429, 429]);
      expect(Number(last?.headers.get("retry-after"))).toBeGreaterThan(0);
      expect(((await last?.json()) as { error: { code: string } }).error.code).toBe("rate_limited");
      // A burst of a second key: exactly the limit passes, however many arrive at once.
      const burst = await Promise.all(
        Array.from({ length: 20 }, () => limited.fetch("/api/org", { headers: { "x-api-key": key2 } })),
      );
      expect(burst.filter((r) => r.status === 200)).toHaveLength(5);
      expect(burst.filter((r) => r.status === 429)).toHaveLength(15);
      await new Promise((r) => setTimeout(r, 300));
      const rows = await limited.db.knex("rate_limits").where("key", "like", "api:key:%");
      expect(rows.map((r: { points: number }) => Number(r.points)).sort()).toEqual([5, 5]);
    } finally {
      await limited.close();
    }
  });

  it("shares one API limit between two nodes: each hears the other's count within a flush", async () => {
    const a = await getTestServer({ env: { WORKSYNAPSE_AUTH_API_PER_MINUTE: "10" } });
    const b = await startServer(
      testConfig({
        DATABASE_URL: a.pg.url,
        WORKSYNAPSE_NATS_PREFIX: a.config.nats.prefix,
        WORKSYNAPSE_ROLES: "web",
        WORKSYNAPSE_AUTH_API_PER_MINUTE: "10",
      }),
      silentLogger(),
    );
    try {
      const o = await createTestOrg(a, "apishared");
      const key = await newKey(o, "k");
      const codes: number[] = [];
      for (let i = 0; i < 30; i++) {
        const base = i % 2 ? (b.url as string) : a.url;
        codes.push((await fetch(`${base}/api/org`, { headers: { "x-api-key": key } })).status);
        await new Promise((r) => setTimeout(r, 250)); // longer than a flush: the other node has counted
      }
      const passed = codes.filter((c) => c === 200).length;
      // Separate counters would let 20 through (10 per node); shared, at most one request per other node
      // may pass before its count arrives.
      expect(passed).toBeGreaterThanOrEqual(10);
      expect(passed).toBeLessThanOrEqual(11);
      expect(codes.slice(0, 10).every((c) => c === 200)).toBe(true);
      expect(codes.slice(12).every((c) => c === 429)).toBe(true);
      const row = await a.db.knex("rate_limits").where("key", "like", "api:key:%").first();
      expect(Number(row?.points)).toBeGreaterThanOrEqual(passed);
    } finally {
      await b.stop();
      await a.close();
    }
  });
});
