// Bad input that used to give 500, and the smaller findings of the hardening review: each now gets a clear 4xx
// JSON error, and nothing is changed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createTestOrg, type TestOrg } from "../support/identity.js";

let srv: TestServer;
let org: TestOrg;
let other: TestOrg;

beforeAll(async () => {
  srv = await getTestServer();
  org = await createTestOrg(srv, "harden");
  other = await createTestOrg(srv, "elsewhere");
});
afterAll(() => srv?.close());

type ErrorBody = { error: { code: string; message: string; details?: { fields?: { path: string }[] } } };

describe("bad input", () => {
  it("refuses a NUL character in a text field, a nested key, a query or a path segment with 400", async () => {
    const cases: [string, string, unknown][] = [
      ["POST", "/api/groups", { name: "bad\u0000name" }],
      ["POST", "/api/notes", { title: "t", body: "x\u0000y" }],
      ["POST", "/api/roles", { name: "r", description: "", permissions: ["notes.read\u0000"] }],
      ["GET", "/api/users?search=a%00b", undefined],
      ["GET", "/api/groups/abc%00def", undefined],
    ];
    for (const [method, path, body] of cases) {
      const r = await org.owner.request(method, path, body);
      const json = (await r.json()) as ErrorBody;
      expect(r.status, `${method} ${path}: ${JSON.stringify(json)}`).toBe(400);
      expect(json.error.code).toBe("validation_failed");
    }
    const nested = await org.owner.request("PATCH", "/api/org", { ["set\u0000tings"]: 1 });
    expect(nested.status).toBe(400);
  });

  it("renaming a group or a role to a name in use is 409, naming the field", async () => {
    await org.owner.json("POST", "/api/groups", { name: "Nurses" }, 201);
    const g = await org.owner.json<{ data: { id: string } }>("POST", "/api/groups", { name: "Doctors" }, 201);
    const r = await org.owner.request("PATCH", `/api/groups/${g.data.id}`, { name: "Nurses" });
    expect(r.status).toBe(409);
    expect(((await r.json()) as ErrorBody).error.details).toEqual({ field: "name" });
    await org.owner.json(
      "POST",
      "/api/roles",
      { name: "Readers", description: "", permissions: ["notes.read"] },
      201,
    );
    const role = await org.owner.json<{ data: { id: string } }>(
      "POST",
      "/api/roles",
      { name: "Writers", description: "", permissions: ["notes.read"] },
      201,
    );
    expect((await org.owner.request("PATCH", `/api/roles/${role.data.id}`, { name: "Readers" })).status).toBe(
      409,
    );
  });

  it("an empty PATCH body is 400 on every PATCH route", async () => {
    const g = await org.owner.json<{ data: { id: string } }>("POST", "/api/groups", { name: "Empty" }, 201);
    const role = await org.owner.json<{ data: { id: string } }>(
      "POST",
      "/api/roles",
      { name: "Emptiness", description: "", permissions: ["notes.read"] },
      201,
    );
    for (const path of [
      `/api/groups/${g.data.id}`,
      `/api/roles/${role.data.id}`,
      `/api/users/${org.ownerId}`,
      "/api/org",
    ]) {
      const r = await org.owner.request("PATCH", path, {});
      expect(r.status, path).toBe(400);
      expect(((await r.json()) as ErrorBody).error.code).toBe("empty_patch");
    }
  });

  it("an unknown or another organization's break-glass user is 404, whether or not SSO is required", async () => {
    for (const id of ["00000000-0000-4000-8000-000000000000", other.ownerId]) {
      for (const ssoRequired of [false, true]) {
        const r = await org.owner.request("PUT", "/api/sso-policy", { ssoRequired, breakGlassUserId: id });
        expect(r.status, `${id} ${ssoRequired}`).toBe(404);
      }
    }
    const policy = await org.owner.json<{ data: { breakGlassUserId: string | null } }>("GET", "/api/sso");
    expect(JSON.stringify(policy)).not.toContain(other.ownerId);
  });
});

describe("smaller findings", () => {
  it("SAML metadata that is not XML gets a plain message, not the parser's text", async () => {
    const codes: string[] = [];
    for (const xml of [
      "<EntityDescriptor><unclosed></EntityDescriptor>",
      "not xml at all <<<",
      "<a>&bogus;</a>",
      "<a><b></a>",
    ]) {
      const r = await org.owner.request("POST", "/api/sso/saml/metadata", { xml });
      const body = (await r.json()) as ErrorBody;
      expect(r.status).toBe(400);
      codes.push(body.error.code);
      if (body.error.code === "malformed")
        expect(body.error.message).toMatch(
          /^This is not well-formed XML( \(the first error is at line \d+, column \d+\))?\.$/,
        );
      expect(body.error.message).not.toMatch(/xmldom|\bentity\b|unclosed|bogus|\[/i);
    }
    expect(codes).toContain("malformed");
  });

  it("a plan without single sign-on cannot turn it on", async () => {
    const r = await org.owner.request("PUT", "/api/sso/ldap", {
      enabled: true,
      label: "Directory",
      config: {},
      groupRoles: [],
      defaultRoleId: null,
    });
    expect(r.status).toBe(403);
    expect(((await r.json()) as ErrorBody).error.code).toBe("plan_limit");
  });
});

describe("refused sign-in attempts", () => {
  it("are audited in the organization whose sign-in page was used, once per address and window", async () => {
    const limited = await getTestServer({ env: { WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "2" } });
    try {
      const o = await createTestOrg(limited, "limited");
      const slug = (await o.owner.json<{ data: { organization: { slug: string } } }>("GET", "/api/auth/me"))
        .data.organization.slug;
      // The owner's own sign-in used one attempt; the next page view uses the second.
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++)
        statuses.push((await limited.fetch(`/api/sso/saml/${slug}/login`, { redirect: "manual" })).status);
      expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(2);
      const page = await limited.fetch(`/api/sso/saml/${slug}/login`, { redirect: "manual" });
      expect(await page.text()).toContain("audit log");
      const records = await o.owner.json<{ data: { action: string; outcome: string; ip: string }[] }>(
        "GET",
        "/api/audit?action=auth.rate_limited",
      );
      expect(records.data).toEqual([expect.objectContaining({ outcome: "denied", ip: "127.0.0.1" })]);
    } finally {
      await limited.close();
    }
  });
});
