import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { spawnCore, waitForOk } from "../support/process.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";
import { NATS_URL } from "../support/env.js";
import { deleteStreams } from "../support/nats.js";

beforeAll(() => {
  if (!existsSync(new URL("../../core/dist/src/main.js", import.meta.url))) {
    throw new Error("core is not built: run `npm run build` first (npm test does)");
  }
});

describe("graceful shutdown", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await getTestServer({
      routes: [
        (api) =>
          api.get("/api/test/slow", async (ctx) => {
            await new Promise((r) => setTimeout(r, 1500));
            ctx.body = { data: "finished" };
          }),
      ],
    });
  });
  afterAll(() => srv.pg.drop());

  it("finishes in-flight requests, turns readiness off and stops accepting", async () => {
    const inFlight = srv.fetch("/api/test/slow");
    await new Promise((r) => setTimeout(r, 200));
    const stopping = srv.stop();
    expect(srv.readiness.draining).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    await expect(fetch(srv.url + "/livez")).rejects.toThrow();
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ data: "finished" });
    await stopping;
    await deleteStreams(srv.config.nats.prefix);
  });
});

describe("the core process", () => {
  let pg: TestDatabase;
  beforeAll(async () => {
    pg = await createTestDatabase("proc");
  });
  afterAll(() => pg.drop());

  it("uses external PostgreSQL and NATS when given, and exits 0 on SIGTERM after an ordered shutdown", async () => {
    const p = spawnCore({ DATABASE_URL: pg.url, NATS_URL, WORKSYNAPSE_NATS_PREFIX: "proctest" });
    const url = await p.url;
    await waitForOk(`${url}/readyz`);
    const info = (await (await fetch(`${url}/api/system/info`)).json()) as { data: { database: string } };
    expect(info.data.database).toBe("postgres");
    expect(p.lines.join("\n")).not.toContain("started local nats-server");
    p.child.kill("SIGTERM");
    expect(await p.exit).toEqual({ code: 0, signal: null });
    const msgs = p.lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    const order = ["shutting down: readiness off", "shutdown complete"].map((m) => msgs.indexOf(m));
    expect(order[0]).toBeGreaterThanOrEqual(0);
    expect(order[1]).toBeGreaterThan(order[0] as number);
    await deleteStreams("proctest");
  });

  it("a SIGTERM while it is still starting: it finishes starting, then shuts down in order and exits 0", async () => {
    const p = spawnCore({ DATABASE_URL: pg.url, NATS_URL, WORKSYNAPSE_NATS_PREFIX: "proctest2" });
    // "serving" is logged as soon as the port listens, before start-up has finished.
    await p.url;
    p.child.kill("SIGTERM");
    expect(await p.exit).toEqual({ code: 0, signal: null });
    const msgs = p.lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(msgs).toContain("signal received");
    expect(msgs.indexOf("shutdown complete")).toBeGreaterThan(msgs.indexOf("signal received"));
    await deleteStreams("proctest2");
  });

  it("runs with embedded PGlite and a supervised nats-server when nothing is configured", async () => {
    const p = spawnCore();
    const url = await p.url;
    const ms = await waitForOk(`${url}/readyz`);
    expect(ms).toBeLessThan(60000);
    const info = (await (await fetch(`${url}/api/system/info`)).json()) as { data: { database: string } };
    expect(info.data.database).toBe("pglite");
    const log = p.lines.join("\n");
    expect(log).toContain("using the embedded PGlite database: single node only");
    expect(log).toMatch(/"url":"nats:\/\/127\.0\.0\.1:\d+".*"msg":"started local nats-server"/);
    const pid = Number(/"pid":(\d+),"msg":"started local nats-server"/.exec(log)?.[1]);
    p.child.kill("SIGTERM");
    expect((await p.exit).code).toBe(0);
    // The supervised nats-server is stopped with us.
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it("exits 2 with a readable list when the configuration is invalid", async () => {
    const p = spawnCore({ WORKSYNAPSE_HTTP_PORT: "eighty", WORKSYNAPSE_ROLES: "web,cook" });
    expect((await p.exit).code).toBe(2);
    expect(p.stderr()).toContain("Invalid configuration:");
    expect(p.stderr()).toContain("http.port (WORKSYNAPSE_HTTP_PORT)");
    expect(p.stderr()).toContain("roles.1 (WORKSYNAPSE_ROLES)");
  });

  it("says how to get a bus when no nats-server binary is found", async () => {
    const p = spawnCore({ NATS_SERVER_BIN: "/nonexistent/nats-server" });
    expect((await p.exit).code).toBe(1);
    expect(p.lines.join("\n")).toMatch(/apt-get install nats-server.*NATS_URL/);
  });

  it("runs the worker role alone without an HTTP server", async () => {
    const p = spawnCore({ DATABASE_URL: pg.url, NATS_URL, WORKSYNAPSE_NATS_PREFIX: "proctest2" }, [
      "--roles",
      "worker",
    ]);
    const deadline = Date.now() + 30000;
    while (!p.lines.some((l) => l.includes('"msg":"started"')) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(p.lines.join("\n")).toContain('"roles":["worker"]');
    expect(p.lines.join("\n")).not.toContain("WorkSynapse is serving");
    p.child.kill("SIGTERM");
    expect((await p.exit).code).toBe(0);
    await deleteStreams("proctest2");
  });
});
