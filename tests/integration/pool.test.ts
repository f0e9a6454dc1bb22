import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createTestOrg, type TestOrg } from "../support/identity.js";

const ORGS = 50;
const REQUESTS = 10_000;
const CONCURRENCY = 32;
let srv: TestServer;
const orgs: (TestOrg & { key: string })[] = [];

beforeAll(async () => {
  srv = await getTestServer({
    env: {
      WORKSYNAPSE_DATABASE_POOL_MAX: "2",
      WORKSYNAPSE_AUTH_API_PER_MINUTE: "100000",
      WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "100000",
    },
  });
  for (let i = 0; i < ORGS; i++) {
    const org = await createTestOrg(srv, `pool${i}`);
    const key = await org.owner.json<{ data: { key: string } }>(
      "POST",
      "/api/api-keys",
      { name: "pool", permissions: ["users.read", "org.read"] },
      201,
    );
    orgs.push({ ...org, key: key.data.key });
  }
}, 180_000);
afterAll(() => srv?.close());

describe("a pool of 2 connections shared by 50 organizations", () => {
  it(`serves ${REQUESTS} interleaved requests with random aborts and never returns a foreign row`, async () => {
    const paths = ["/api/users", "/api/org", "/api/auth/me", "/api/roles"];
    let next = 0;
    let completed = 0;
    let aborted = 0;
    const foreign: string[] = [];
    const worker = async () => {
      while (next < REQUESTS) {
        const n = next++;
        const org = orgs[(n * 7919) % ORGS] as (typeof orgs)[number];
        const path = paths[n % paths.length] as string;
        const ac = new AbortController();
        // One request in ten is cut off at a random moment, often mid-transaction on the server.
        if (n % 10 === 3) setTimeout(() => ac.abort(), Math.random() * 8);
        try {
          const r = await srv.fetch(path, { headers: { "x-api-key": org.key }, signal: ac.signal });
          const text = await r.text();
          if (r.status !== 200) throw new Error(`${path} -> ${r.status} ${text}`);
          for (const m of text.match(/MARK[0-9A-F]{8}/g) ?? [])
            if (m !== org.marker) foreign.push(`${org.marker} got ${m} on ${path}`);
          completed += 1;
        } catch (err) {
          if ((err as Error).name === "AbortError") aborted += 1;
          else throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    expect(foreign).toEqual([]);
    expect(completed + aborted).toBe(REQUESTS);
    expect(aborted).toBeGreaterThan(0);
    expect(completed).toBeGreaterThan(REQUESTS * 0.85);
    // The pool survived the aborts: a fresh request for every organization still answers with its own data only.
    for (const org of orgs) {
      const me = (await (await srv.fetch("/api/org", { headers: { "x-api-key": org.key } })).json()) as {
        data: { name: string };
      };
      expect(me.data.name).toContain(org.marker);
    }
  }, 300_000);
});
