// The integration gateway against real HTTP servers on loopback: what it refuses is refused before any
// connection (each server counts the connections it gets), redirects are checked hop by hop, 429 and 503 are
// retried as the remote side asks, sizes and times are bounded, and a failing target's circuit opens.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EgressError, Gateway, hostAllowed, retryAfterMs, type EgressTarget } from "./gateway.js";

interface Remote {
  url: string;
  port: number;
  connections: number;
  requests: string[];
  close(): Promise<void>;
}

/** A loopback server that answers with `handler`, counting connections and requests. */
async function remote(host: string, handler: http.RequestListener): Promise<Remote> {
  const server = http.createServer((req, res) => {
    r.requests.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  const r: Remote = { url: "", port: 0, connections: 0, requests: [], close: async () => undefined };
  server.on("connection", () => (r.connections += 1));
  await new Promise<void>((res) => server.listen(0, host, () => res()));
  r.port = (server.address() as AddressInfo).port;
  r.url = `http://${host}:${r.port}`;
  r.close = () =>
    new Promise<void>((res) => {
      server.closeAllConnections();
      server.close(() => res());
    });
  return r;
}

const lines: { obj: Record<string, unknown>; msg?: string }[] = [];
const log = {
  info: (obj: object, msg?: string) => void lines.push({ obj: obj as Record<string, unknown>, msg }),
  warn: (obj: object, msg?: string) => void lines.push({ obj: obj as Record<string, unknown>, msg }),
};
const gateway = (over: Partial<ConstructorParameters<typeof Gateway>[0]> = {}) =>
  new Gateway({ enabled: true, allowLoopback: true, log: log as never, backoffMs: 20, ...over });

let ok: Remote;
let other: Remote;
let flaky: Remote;
let flakyCalls = 0;
beforeAll(async () => {
  ok = await remote("127.0.0.1", (req, res) => {
    if (req.url?.startsWith("/redirect-out")) {
      res.writeHead(302, { location: `${other.url}/stolen` }).end();
    } else if (req.url?.startsWith("/redirect-in")) {
      res.writeHead(302, { location: "/landed" }).end();
    } else if (req.url === "/big") {
      res.writeHead(200).end("x".repeat(5000));
    } else if (req.url === "/slow") {
      setTimeout(() => res.writeHead(200).end("late"), 1500);
    } else res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ at: req.url }));
  });
  other = await remote("127.0.0.2", (_req, res) => res.writeHead(200).end("should never be reached"));
  flaky = await remote("127.0.0.1", (req, res) => {
    flakyCalls += 1;
    if (req.url === "/rate" && flakyCalls % 2 === 1) res.writeHead(429, { "retry-after": "1" }).end();
    else if (req.url === "/burst" && flakyCalls <= 2) res.writeHead(503).end();
    else if (req.url === "/down") res.writeHead(503).end();
    else res.writeHead(200).end("fine");
  });
});
afterAll(async () => {
  await Promise.all([ok, other, flaky].map((r) => r?.close()));
});

const target = (hosts: string[], extra: Partial<EgressTarget> = {}): EgressTarget => ({
  id: "conn-test",
  hosts,
  ...extra,
});
const refused = async (p: Promise<unknown>, code: string) => {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EgressError);
  expect((err as EgressError).code).toBe(code);
};

describe("the integration gateway", () => {
  it("reaches a configured host and logs the call without its query string", async () => {
    const g = gateway();
    const res = await g.request(target([`127.0.0.1:${ok.port}`]), {
      method: "GET",
      url: `${ok.url}/api/v4/projects?private_token=secret-in-query`,
      headers: { authorization: "Bearer secret-token" },
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toEqual({ at: "/api/v4/projects?private_token=secret-in-query" });
    const line = lines.find((l) => l.msg === "outbound call" && l.obj.path === "/api/v4/projects");
    expect(line?.obj).toMatchObject({ target: "conn-test", method: "GET", status: 200 });
    expect(JSON.stringify(lines)).not.toMatch(/secret-in-query|secret-token/);
    await g.close();
  });

  it("refuses a host that is not configured before any connection is made", async () => {
    const g = gateway();
    const before = other.connections;
    await refused(
      g.request(target([`127.0.0.1:${ok.port}`]), { method: "GET", url: `${other.url}/x` }),
      "host_not_allowed",
    );
    // The same host on another port is another host.
    await refused(
      g.request(target(["127.0.0.1:1"]), { method: "GET", url: `${ok.url}/x` }),
      "host_not_allowed",
    );
    expect(other.connections).toBe(before);
    // Each refusal is logged, with its reason.
    expect(lines.filter((l) => l.msg === "outbound call refused").map((l) => l.obj.code)).toContain(
      "host_not_allowed",
    );
  });

  it("refuses a redirect to a host that is not configured, and follows one to the same host", async () => {
    const g = gateway();
    const before = other.connections;
    await refused(
      g.request(target([`127.0.0.1:${ok.port}`]), { method: "GET", url: `${ok.url}/redirect-out` }),
      "host_not_allowed",
    );
    expect(other.connections).toBe(before);
    const res = await g.request(target([`127.0.0.1:${ok.port}`]), {
      method: "GET",
      url: `${ok.url}/redirect-in`,
    });
    expect(res.url).toBe(`${ok.url}/landed`);
    await g.close();
  });

  it("checks the resolved address: a configured name pointing at metadata, link-local or loopback is refused", async () => {
    const before = ok.connections;
    for (const address of ["169.254.169.254", "0.0.0.0", "127.0.0.1"]) {
      const g = gateway({ allowLoopback: false, resolve: async () => [{ address, family: 4 }] });
      await refused(
        g.request(target([`gitlab.corp.example:${ok.port}`]), {
          method: "GET",
          url: `http://gitlab.corp.example:${ok.port}/`,
        }),
        "address_not_allowed",
      );
    }
    expect(ok.connections).toBe(before);
    // Resolved by the gateway, the connection goes to the checked address (here loopback, allowed for tests).
    const g = gateway({ resolve: async () => [{ address: "127.0.0.1", family: 4 }] });
    const res = await g.request(target([`gitlab.corp.example:${ok.port}`]), {
      method: "GET",
      url: `http://gitlab.corp.example:${ok.port}/resolved`,
    });
    expect(res.status).toBe(200);
    await g.close();
  });

  it("refuses everything when the installation turns egress off, and anything but http(s)", async () => {
    await refused(
      gateway({ enabled: false }).request(target(["*"]), { method: "GET", url: ok.url }),
      "egress_off",
    );
    await refused(
      gateway().request(target(["127.0.0.1"]), { method: "GET", url: "file:///etc/passwd" }),
      "bad_url",
    );
    await refused(
      gateway().request(target([`127.0.0.1:${ok.port}`]), {
        method: "GET",
        url: `http://u:p@127.0.0.1:${ok.port}/`,
      }),
      "bad_url",
    );
  });

  it("waits as a 429's Retry-After asks, and retries 503 bursts with backoff", async () => {
    const g = gateway();
    const t = target([`127.0.0.1:${flaky.port}`]);
    flakyCalls = 0;
    const t0 = Date.now();
    const rate = await g.request(t, { method: "GET", url: `${flaky.url}/rate` });
    expect(rate.status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
    flakyCalls = 0;
    const burst = await g.request(t, { method: "GET", url: `${flaky.url}/burst` });
    expect(burst.status).toBe(200);
    expect(flakyCalls).toBe(3);
    // A call that changes data is not repeated unless it carries an idempotency key.
    flakyCalls = 0;
    expect((await g.request(t, { method: "POST", url: `${flaky.url}/burst`, body: "{}" })).status).toBe(503);
    expect(flakyCalls).toBe(1);
    flakyCalls = 0;
    const keyed = await g.request(t, {
      method: "POST",
      url: `${flaky.url}/burst`,
      body: "{}",
      idempotencyKey: "k-1",
    });
    expect(keyed.status).toBe(200);
    await g.close();
  });

  it("bounds the answer's size and the call's time", async () => {
    const g = gateway();
    const t = target([`127.0.0.1:${ok.port}`]);
    await refused(g.request(t, { method: "GET", url: `${ok.url}/big`, maxBytes: 1000 }), "too_large");
    await refused(g.request(t, { method: "GET", url: `${ok.url}/slow`, timeoutMs: 300 }), "timeout");
    await g.close();
  });

  it("opens a failing target's circuit, refusing calls until the cool-down ends", async () => {
    const g = gateway({ retries: 0, breakerFailures: 3, breakerCooldownMs: 500 });
    const t = target([`127.0.0.1:${flaky.port}`], { id: "conn-down" });
    for (let i = 0; i < 3; i++)
      expect((await g.request(t, { method: "GET", url: `${flaky.url}/down` })).status).toBe(503);
    expect(g.state("conn-down").openUntil).not.toBeNull();
    await refused(g.request(t, { method: "GET", url: `${flaky.url}/fine` }), "circuit_open");
    await new Promise((r) => setTimeout(r, 600));
    expect((await g.request(t, { method: "GET", url: `${flaky.url}/fine` })).status).toBe(200);
    expect(g.state("conn-down")).toEqual({ failures: 0, openUntil: null });
    await g.close();
  });

  it("paces each target to its rate", async () => {
    const g = gateway();
    const t = target([`127.0.0.1:${ok.port}`], { id: "conn-paced", ratePerSecond: 5 });
    const t0 = Date.now();
    for (let i = 0; i < 10; i++) await g.request(t, { method: "GET", url: `${ok.url}/p${i}` });
    // Five at once (the bucket), then five more at five a second.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    await g.close();
  });
});

describe("gateway rules", () => {
  it("matches hosts exactly, by wildcard subdomain and by port", () => {
    expect(hostAllowed(["gitlab.corp.example"], "GitLab.Corp.Example", "443")).toBe(true);
    expect(hostAllowed(["*.corp.example"], "jira.corp.example", "443")).toBe(true);
    expect(hostAllowed(["*.corp.example"], "corp.example", "443")).toBe(false);
    expect(hostAllowed(["*.corp.example"], "evilcorp.example", "443")).toBe(false);
    expect(hostAllowed(["gitlab.corp.example:8443"], "gitlab.corp.example", "443")).toBe(false);
    expect(hostAllowed(["[::1]:8080"], "[::1]", "8080")).toBe(true);
  });

  it("reads Retry-After in seconds or as a date, and the rate-limit reset headers", () => {
    const now = Date.parse("2026-12-07T10:00:00Z");
    expect(retryAfterMs({ "retry-after": "7" }, now)).toBe(7000);
    expect(retryAfterMs({ "retry-after": "Mon, 07 Dec 2026 10:00:30 GMT" }, now)).toBe(30_000);
    expect(retryAfterMs({ "x-ratelimit-reset": String(now / 1000 + 12) }, now)).toBe(12_000);
    expect(retryAfterMs({ "ratelimit-reset": "4" }, now)).toBe(4000);
    expect(retryAfterMs({}, now)).toBeNull();
  });
});
