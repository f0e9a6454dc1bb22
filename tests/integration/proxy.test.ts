// Client addresses behind reverse proxies: X-Forwarded-For is read from the right, through the configured number
// of trusted hops or list of trusted proxy networks, so a client cannot choose the address that per-address
// sign-in limits and audit records use; the scheme (cookies, HSTS, the WebSocket origin check) likewise.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import pg from "pg";
import { getTestServer, type TestServer } from "../support/server.js";
import { createTestOrg, PASSWORD, type TestOrg } from "../support/identity.js";

const servers: TestServer[] = [];
afterAll(() => Promise.all(servers.map((s) => s.close())));

const start = async (env: Record<string, string>) => {
  const srv = await getTestServer({ env });
  servers.push(srv);
  return srv;
};

/** Signs in with headers a proxy chain would have set; returns the session's recorded address. */
async function sessionIp(srv: TestServer, org: TestOrg, headers: Record<string, string>): Promise<string> {
  const r = await srv.fetch("/api/auth/login", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-requested-with": "worksynapse",
      origin: srv.url,
      ...headers,
    },
    body: JSON.stringify({ email: org.ownerEmail, password: PASSWORD }),
  });
  expect(r.status, await r.clone().text()).toBe(200);
  const cookie = (r.headers.getSetCookie()[0] as string).split(";")[0] as string;
  const sessions = (await (
    await srv.fetch("/api/auth/sessions", { headers: { cookie, ...headers } })
  ).json()) as { data: { ip: string; current: boolean }[] };
  return (sessions.data.find((s) => s.current) ?? sessions.data[0])?.ip as string;
}

/** Attempts wrong passwords, each with another forged left-most X-Forwarded-For entry. */
async function attempts(srv: TestServer, n: number, viaProxy: string): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await srv.fetch("/api/auth/login", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-requested-with": "worksynapse",
        origin: srv.url,
        "x-forwarded-for": `203.0.113.${i + 1}, ${viaProxy}`,
      },
      body: JSON.stringify({ email: "nobody@proxy.example", password: "wrong-password-123" }),
    });
    statuses.push(r.status);
  }
  return statuses;
}

describe("behind one trusted proxy (trustProxy, proxyHops 1)", () => {
  let srv: TestServer;
  let org: TestOrg;
  beforeAll(async () => {
    srv = await start({
      WORKSYNAPSE_HTTP_TRUST_PROXY: "true",
      WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "4",
    });
    org = await createTestOrg(srv, "proxy");
  });

  it("takes the address the proxy appended (right-most), not the one the client wrote (left-most)", async () => {
    expect(await sessionIp(srv, org, { "x-forwarded-for": "6.6.6.6, 198.51.100.20" })).toBe("198.51.100.20");
  });

  it("keeps counting sign-in attempts per real address whatever the client puts on the left", async () => {
    // One attempt was the sign-in above, from another address; these all come through 198.51.100.99.
    const statuses = await attempts(srv, 6, "198.51.100.99");
    expect(statuses.slice(0, 4).every((s) => s === 401)).toBe(true);
    expect(statuses.slice(4)).toEqual([429, 429]);
    // The refusal is audited once for the address (aggregated), with the real address.
    // The installation's own chain (no organization: the address named none) is read as the owner.
    const su = new pg.Client({ connectionString: srv.pg.url });
    await su.connect();
    const { rows } = await su
      .query("select ip, details from audit_log where action = 'auth.rate_limited' and org_id is null")
      .finally(() => su.end());
    expect(rows).toEqual([
      {
        ip: "198.51.100.99",
        details: expect.objectContaining({ limitPerMinute: 4, email: "nobody@proxy.example" }),
      },
    ]);
  });

  it("believes the proxy's X-Forwarded-Proto: HSTS, and WebSocket origins of https pages", async () => {
    const r = await srv.fetch("/livez", { headers: { "x-forwarded-proto": "https" } });
    expect(r.headers.get("strict-transport-security")).toContain("max-age=");
    expect((await srv.fetch("/livez")).headers.get("strict-transport-security")).toBeNull();
    const host = new URL(srv.url).host;
    expect(await upgrade(srv, { "x-forwarded-proto": "https", origin: `https://${host}` })).toBe(401);
    expect(await upgrade(srv, { "x-forwarded-proto": "https", origin: `http://${host}` })).toBe(403);
  });
});

describe("behind trusted proxy networks (trustedProxies)", () => {
  it("follows X-Forwarded-For from the right only through trusted addresses", async () => {
    const srv = await start({
      WORKSYNAPSE_HTTP_TRUST_PROXY: "true",
      WORKSYNAPSE_HTTP_TRUSTED_PROXIES: "loopback, 10.0.0.0/8",
    });
    const org = await createTestOrg(srv, "proxynet");
    expect(await sessionIp(srv, org, { "x-forwarded-for": "6.6.6.6, 192.0.2.7, 10.1.2.3" })).toBe(
      "192.0.2.7",
    );
  });
});

describe("without a trusted proxy", () => {
  it("ignores X-Forwarded-For and X-Forwarded-Proto", async () => {
    const srv = await start({});
    const org = await createTestOrg(srv, "direct");
    expect(await sessionIp(srv, org, { "x-forwarded-for": "6.6.6.6" })).toBe("127.0.0.1");
    const host = new URL(srv.url).host;
    expect(await upgrade(srv, { "x-forwarded-proto": "https", origin: `https://${host}` })).toBe(403);
    expect(
      (await srv.fetch("/livez", { headers: { "x-forwarded-proto": "https" } })).headers.get(
        "strict-transport-security",
      ),
    ).toBeNull();
  });
});

/** The HTTP status a WebSocket handshake to /ws is refused with (401: past the origin check, no session). */
function upgrade(srv: TestServer, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${srv.url.replace("http", "ws")}/ws`, { headers });
    ws.on("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on("open", () => reject(new Error("the handshake was accepted")));
    ws.on("error", () => undefined);
  });
}
