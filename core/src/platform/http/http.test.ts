import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Validator } from "@seriousme/openapi-schema-validator";
import { z } from "zod";
import { getTestServer, type TestServer } from "../../../../tests/support/server.js";
import { AppError } from "./errors.js";

let srv: TestServer;

const METRICS_TOKEN = "metrics-token-for-tests-0123456789";

beforeAll(async () => {
  srv = await getTestServer({
    env: { WORKSYNAPSE_METRICS_TOKEN: METRICS_TOKEN },
    routes: [
      (api) =>
        api.publicRoute({
          method: "post",
          path: "/api/test/echo/:id",
          operationId: "testEcho",
          summary: "echo",
          tags: ["test"],
          params: z.object({ id: z.uuid() }),
          body: z.strictObject({ name: z.string().max(20), count: z.number().int() }),
          response: z.object({ data: z.object({ id: z.string(), name: z.string() }) }),
          handler: async (_ctx, { body, params }) => ({ data: { id: params.id, name: body.name } }),
        }),
      (api) =>
        api.publicRoute({
          method: "get",
          path: "/api/test/boom",
          operationId: "testBoom",
          summary: "fails",
          tags: ["test"],
          handler: async () => {
            throw new Error('relation "secret_table" does not exist: select * from secret_table');
          },
        }),
      (api) =>
        api.publicRoute({
          method: "get",
          path: "/api/test/conflict",
          operationId: "testConflict",
          summary: "conflicts",
          tags: ["test"],
          handler: async () => {
            throw AppError.conflict("Already there.", { field: "name" });
          },
        }),
    ],
  });
});
afterAll(() => srv?.close());

const ID = "6f1c3a36-0d6f-4d8c-9f5b-1a3e2b7c9d10";
const post = (path: string, body: string, type = "application/json") =>
  srv.fetch(path, { method: "POST", headers: { "content-type": type }, body });

describe("HTTP platform", () => {
  it("livez answers without dependencies and readyz checks database and bus", async () => {
    expect(await (await srv.fetch("/livez")).json()).toEqual({ status: "ok" });
    const ready = await srv.fetch("/readyz");
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      status: "ready",
      checks: { database: { ok: true }, bus: { ok: true } },
    });
  });

  it("readyz answers 503 while a dependency fails, with the failing check named", async () => {
    srv.readiness.checks.extra = async () => {
      throw new Error("disk gone");
    };
    const r = await srv.fetch("/readyz");
    delete srv.readiness.checks.extra;
    expect(r.status).toBe(503);
    const body = (await r.json()) as {
      status: string;
      checks: Record<string, { ok: boolean; error?: string }>;
    };
    expect(body.status).toBe("not_ready");
    expect(body.checks.extra).toEqual({ ok: false, error: "disk gone" });
  });

  it("sets security headers and a request id on every response", async () => {
    const r = await srv.fetch("/livez", { headers: { "x-request-id": "abc-123" } });
    // JSON: nothing may load from it and nothing may frame it.
    expect(r.headers.get("content-security-policy")).toBe("default-src 'none'; frame-ancestors 'none'");
    expect(r.headers.get("x-content-type-options")).toBe("nosniff");
    expect(r.headers.get("cross-origin-resource-policy")).toBe("same-origin");
    expect(r.headers.get("x-request-id")).toBe("abc-123");
    const bad = await srv.fetch("/livez", { headers: { "x-request-id": "<script>" } });
    expect(bad.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    // Error responses get them too.
    const nf = await srv.fetch("/api/nope");
    expect(nf.headers.get("content-security-policy")).toBe("default-src 'none'; frame-ancestors 'none'");
    // HTML documents: the full policy, with no inline scripts.
    const page = await srv.fetch("/api/docs/index.html");
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toMatch(/script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'/);
    expect(csp.match(/unsafe-inline/g)).toHaveLength(1);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(page.headers.get("x-frame-options")).toBe("DENY");
    expect(page.headers.get("referrer-policy")).toBe("no-referrer");
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
  });

  it("validates input with field-level messages", async () => {
    const ok = await post(`/api/test/echo/${ID}`, JSON.stringify({ name: "a", count: 1 }));
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ data: { id: ID, name: "a" } });

    const cases: [string, string, string][] = [
      [ID, JSON.stringify({ name: 5, count: 1 }), "name"],
      [ID, JSON.stringify({ name: "x".repeat(21), count: 1 }), "name"],
      [ID, JSON.stringify({ name: "a", count: 1, extra: true }), ""],
      [ID, JSON.stringify([1, 2]), ""],
      ["not-a-uuid", JSON.stringify({ name: "a", count: 1 }), "id"],
    ];
    for (const [id, body, field] of cases) {
      const r = await post(`/api/test/echo/${id}`, body);
      expect(r.status, body).toBe(400);
      const err = (await r.json()) as { error: { code: string; details: { fields: { path: string }[] } } };
      expect(err.error.code).toBe("validation_failed");
      expect(err.error.details.fields.map((f) => f.path)).toContain(field);
    }
  });

  it("maps malformed, oversized and non-JSON bodies to clear 4xx errors", async () => {
    const malformed = await post(`/api/test/echo/${ID}`, "{bad json");
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: { code: string } }).error.code).toBe("malformed_body");

    const big = await post(`/api/test/echo/${ID}`, JSON.stringify({ name: "x".repeat(2_000_000), count: 1 }));
    expect(big.status).toBe(413);
    expect(((await big.json()) as { error: { code: string } }).error.code).toBe("payload_too_large");

    const text = await post(`/api/test/echo/${ID}`, "name=a", "text/plain");
    expect(text.status).toBe(415);
  });

  it("answers unknown routes and wrong methods with the error envelope", async () => {
    const nf = await srv.fetch("/api/does-not-exist");
    expect(nf.status).toBe(404);
    expect(await nf.json()).toEqual({
      error: { code: "not_found", message: "No route for GET /api/does-not-exist." },
    });
    const m = await srv.fetch("/api/system/info", { method: "DELETE" });
    expect(m.status).toBe(405);
    expect(((await m.json()) as { error: { code: string } }).error.code).toBe("method_not_allowed");
  });

  it("never leaks a stack trace or SQL on an internal error, and keeps serving", async () => {
    const r = await srv.fetch("/api/test/boom");
    expect(r.status).toBe(500);
    const text = await r.text();
    expect(text).not.toMatch(/secret_table|at |\.ts:/);
    expect(JSON.parse(text)).toEqual({
      error: { code: "internal", message: expect.stringContaining("request id") as string },
    });
    expect((await srv.fetch("/livez")).status).toBe(200);
    const c = await srv.fetch("/api/test/conflict");
    expect(c.status).toBe(409);
    expect(await c.json()).toEqual({
      error: { code: "conflict", message: "Already there.", details: { field: "name" } },
    });
  });

  it("exposes Prometheus metrics labelled by route template, not raw path", async () => {
    await post(`/api/test/echo/${ID}`, JSON.stringify({ name: "a", count: 1 }));
    const text = await (
      await srv.fetch("/metrics", { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
    ).text();
    expect(text).toContain('route="/api/test/echo/:id"');
    expect(text).not.toContain(ID);
    expect(text).toContain("process_cpu_user_seconds_total");
  });

  it("refuses /metrics without the bearer token (and with a wrong one), naming the setting", async () => {
    for (const headers of <Record<string, string>[]>[
      {},
      { authorization: "Bearer wrong-token-0123456789" },
      { authorization: "Basic eDp5" },
    ]) {
      const r = await srv.fetch("/metrics", { headers });
      expect(r.status).toBe(401);
      expect(r.headers.get("www-authenticate")).toContain("Bearer");
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("unauthenticated");
    }
  });

  it("publishes a valid OpenAPI 3.1 document with every route and a bundled docs page", async () => {
    const doc = (await (await srv.fetch("/api/openapi.json")).json()) as { paths: Record<string, unknown> };
    const result = await new Validator().validate(doc as Parameters<Validator["validate"]>[0]);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(["/livez", "/readyz", "/metrics", "/api/system/info", "/api/test/echo/{id}"]),
    );
    const page = await srv.fetch("/api/docs/index.html");
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).not.toMatch(/https?:\/\//);
    expect((await srv.fetch("/api/docs/swagger-ui-bundle.js")).status).toBe(200);
    const init = await (await srv.fetch("/api/docs/init.js")).text();
    expect(init).toContain("validatorUrl: null");
  });
});
