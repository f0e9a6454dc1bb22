// Schema-driven fuzzing of every operation in the OpenAPI document: starting from a valid-looking request, one
// part at a time is made wrong (a body field's type, size, NUL characters, deep nesting, huge and fractional
// numbers; the whole body; each path segment; each query parameter). No answer may be a 5xx, and the server must
// still answer afterwards. Signed-in operations are called as a system administrator, so every route is reached.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { PASSWORD, signIn, type Client } from "../support/identity.js";
import { createOrganization } from "../../core/src/modules/identity/identity.service.js";
import { BAD_QUERY, BAD_SEGMENTS, badValues, deep, resolver, sample, type Schema } from "../support/fuzz.js";

interface Op {
  method: string;
  path: string;
  operationId: string;
  auth: boolean;
  body?: Schema;
  params: { name: string; in: string; schema?: Schema }[];
}

let srv: TestServer;
let admin: Client;
let ops: Op[];
let resolve: (s: Schema) => Schema;

// Logging out ends the session the rest of the run uses; it takes no input to fuzz anyway.
const SKIP = new Set(["signOut"]);

beforeAll(async () => {
  srv = await getTestServer({
    env: {
      WORKSYNAPSE_AUTH_API_PER_MINUTE: "1000000",
      WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "1000000",
    },
  });
  const email = `fuzz-admin-${Date.now()}@fuzz.example`;
  await createOrganization(
    srv.db.knex,
    { name: "Fuzz", ownerEmail: email, ownerName: "Fuzz Admin", ownerPassword: PASSWORD, systemAdmin: true },
    { actorType: "system", actorId: "test" },
  );
  admin = await signIn(srv, email);
  const doc = (await (await srv.fetch("/api/openapi.json")).json()) as {
    paths: Record<string, Record<string, Record<string, unknown>>>;
    components?: { schemas?: Record<string, Schema> };
  };
  resolve = resolver(doc);
  ops = [];
  for (const [path, methods] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(methods)) {
      const body = (op.requestBody as { content?: Record<string, { schema: Schema }> } | undefined)
        ?.content?.["application/json"]?.schema;
      ops.push({
        method: method.toUpperCase(),
        path,
        operationId: op.operationId as string,
        auth: op["x-auth"] === "user",
        body,
        params: (op.parameters as Op["params"] | undefined) ?? [],
      });
    }
}, 120_000);
afterAll(() => srv?.close());

/** Sends one request; returns a line naming it when the answer is a 5xx or not the error envelope. */
async function probe(
  op: Op,
  path: string,
  query: string,
  body: unknown,
  raw?: string,
): Promise<string | null> {
  const text = raw ?? (body === undefined ? undefined : JSON.stringify(body));
  const r = await admin.request(op.method, `${path}${query}`, text === undefined ? undefined : text);
  const out = await r.text();
  const what = `${op.method} ${op.path} ${query.slice(0, 60)} ${(text ?? "").slice(0, 80)}`;
  if (r.status >= 500) return `${r.status} ${what}: ${out.slice(0, 200)}`;
  if (r.status >= 400 && (r.headers.get("content-type") ?? "").includes("json")) {
    const parsed = JSON.parse(out) as { error?: { code?: string; message?: string } };
    if (!parsed.error?.code || !parsed.error.message)
      return `${r.status} without the error envelope: ${what}`;
  }
  return null;
}

const fillPath = (path: string, params: Record<string, string> = {}) =>
  path.replace(/\{(\w+)\}/g, (_, k: string) =>
    encodeURIComponent(params[k] ?? "00000000-0000-4000-8000-000000000000"),
  );

describe("fuzzing every operation", () => {
  it("answers malformed bodies, path segments and query values with 4xx, never 5xx", async () => {
    const failures: string[] = [];
    let sent = 0;
    const note = (f: string | null) => {
      sent += 1;
      if (f && failures.length < 50) failures.push(f);
    };
    const fuzzed = ops.filter((o) => !SKIP.has(o.operationId));
    expect(fuzzed.length).toBeGreaterThan(100);
    for (const op of fuzzed) {
      const path = fillPath(op.path);
      // The body: each top-level field made wrong in turn, then wrong bodies as a whole.
      if (op.body) {
        const schema = resolve(op.body);
        const base = (sample(schema, resolve) ?? {}) as Record<string, unknown>;
        for (const [name, prop] of Object.entries(schema.properties ?? {}))
          for (const v of badValues(resolve(prop))) note(await probe(op, path, "", { ...base, [name]: v }));
        for (const whole of [
          [],
          "text",
          null,
          7,
          deep(500),
          { ...base, extra: "x" },
          { ["__proto__"]: { x: 1 } },
        ])
          note(await probe(op, path, "", whole));
        note(await probe(op, path, "", undefined, "{not json"));
        note(await probe(op, path, "", undefined, `{"a":${"[".repeat(5000)}${"]".repeat(5000)}}`));
      } else if (op.method !== "GET" && op.method !== "DELETE") {
        note(await probe(op, path, "", { unexpected: "\u0000" }));
      }
      // Each path parameter, then each query parameter.
      for (const p of op.params.filter((x) => x.in === "path"))
        for (const seg of BAD_SEGMENTS)
          note(await probe(op, fillPath(op.path, { [p.name]: seg }), "", op.body ? {} : undefined));
      for (const p of op.params.filter((x) => x.in === "query"))
        for (const v of BAD_QUERY)
          note(
            await probe(
              op,
              path,
              `?${encodeURIComponent(p.name)}=${encodeURIComponent(v)}`,
              op.body ? {} : undefined,
            ),
          );
    }
    console.log(`fuzz: ${fuzzed.length} operations, ${sent} requests, ${failures.length} 5xx`);
    expect(failures).toEqual([]);
    expect(sent).toBeGreaterThan(1000);
    // The server is still up and still answers correctly.
    expect((await srv.fetch("/livez")).status).toBe(200);
    expect((await admin.request("GET", "/api/auth/me")).status).toBe(200);
  }, 600_000);
});
