// The SAML service provider against responses signed here: one valid response accepted once, and every
// known way of altering it refused with its reason in the audit log. Real PostgreSQL, NATS and HTTP.
import { inflateRawSync } from "node:zlib";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createTestOrg, type TestOrg } from "../support/identity.js";
import { selfSigned, type CertFiles } from "../support/certs.js";
import {
  b64,
  requestIdOf,
  responseXml,
  sign,
  stripSignatures,
  wrap,
  type ResponseSpec,
} from "../support/saml-forge.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";
import { startServer } from "../../core/src/server.js";
import { silentLogger } from "../../core/src/platform/log.js";
import { testConfig } from "../support/config.js";
import { SAML } from "@node-saml/node-saml";

let srv: TestServer;
let org: TestOrg;
let other: TestOrg;
let slug: string;
let idpKey: CertFiles;
let rogueKey: CertFiles;
let sp: { entityId: string; acsUrl: string; sloUrl: string; metadataUrl: string };
let roles: { id: string; key: string }[];
const IDP = "https://idp.corp.example/saml/metadata";

type Data<T> = { data: T };

beforeAll(async () => {
  // Many sign-ins from one address in a few seconds: the per-address limit is tested in bruteforce.test.ts.
  srv = await getTestServer({ env: { WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "100000" } });
  org = await createTestOrg(srv, "saml", { plan: "professional" });
  other = await createTestOrg(srv, "other", { plan: "professional" });
  idpKey = selfSigned("corp-idp");
  rogueKey = selfSigned("rogue-idp");
  slug = (await org.owner.json<Data<{ organization: { slug: string } }>>("GET", "/api/auth/me")).data
    .organization.slug;
  roles = (await org.owner.json<Data<{ id: string; key: string }[]>>("GET", "/api/roles")).data;
  const overview = await org.owner.json<Data<{ serviceProvider: typeof sp }>>("GET", "/api/sso");
  sp = overview.data.serviceProvider;
  await org.owner.json("PUT", "/api/sso/saml", {
    enabled: true,
    label: "Corp IdP",
    config: {
      idpEntityId: IDP,
      idpSsoUrl: "https://idp.corp.example/sso",
      idpCerts: [idpKey.cert],
      clockSkewSeconds: 30,
    },
    groupRoles: [
      { group: "staff", roleId: roles.find((r) => r.key === "member")?.id },
      { group: "it-admins", roleId: roles.find((r) => r.key === "admin")?.id },
    ],
    defaultRoleId: null,
  });
});
afterAll(() => srv?.close());

/** Starts a sign-in as a browser would: the AuthnRequest id and the binding cookie. */
async function start(returnTo?: string): Promise<{ id: string; cookie: string }> {
  const r = await srv.fetch(
    `/api/sso/saml/${slug}/login${returnTo ? `?returnTo=${encodeURIComponent(returnTo)}` : ""}`,
    {
      redirect: "manual",
    },
  );
  expect(r.status).toBe(302);
  const location = r.headers.get("location") as string;
  expect(location.startsWith("https://idp.corp.example/sso?SAMLRequest=")).toBe(true);
  const cookie = (r.headers.getSetCookie().find((c) => c.startsWith("ws_saml_binding=")) as string).split(
    ";",
  )[0] as string;
  return { id: requestIdOf(location), cookie };
}

const spec = (inResponseTo: string, over: Partial<ResponseSpec> = {}): ResponseSpec => ({
  issuer: IDP,
  acsUrl: sp.acsUrl,
  audience: sp.entityId,
  inResponseTo,
  nameId: "alice@corp.example",
  attributes: { mail: ["alice@corp.example"], displayName: ["Alice Archer"], groups: ["staff", "it-admins"] },
  ...over,
});

async function post(
  xml: string,
  cookie: string,
  raw = false,
  extra: Record<string, string> = {},
): Promise<Response> {
  return srv.fetch(`/api/sso/saml/${slug}/acs`, {
    method: "POST",
    redirect: "manual",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      cookie,
      origin: "https://idp.corp.example",
    },
    body: new URLSearchParams({ SAMLResponse: raw ? xml : b64(xml), RelayState: "", ...extra }).toString(),
  });
}

async function lastFailure(): Promise<Record<string, unknown> | undefined> {
  return withOrg(srv.db.knex, org.orgId, async (trx) => {
    const row = await trx("audit_log")
      .where({ action: "auth.sso_sign_in", outcome: "failure" })
      .orderBy("seq", "desc")
      .first();
    return row?.details as Record<string, unknown> | undefined;
  });
}

async function expectRejected(xml: string, cookie: string, reason: string, raw = false) {
  const r = await post(xml, cookie, raw);
  const html = await r.text();
  expect(r.status, html).toBeGreaterThanOrEqual(400);
  expect(r.status).toBeLessThan(500);
  expect(r.headers.getSetCookie().some((c) => c.startsWith("ws_session="))).toBe(false);
  expect(html).toContain("Sign-in failed");
  expect(html).toContain(`<code>${reason}</code>`);
  expect(html).not.toMatch(/\n\s+at |node_modules|Error:/);
  expect((await lastFailure())?.reason).toBe(reason);
}

describe("SAML service provider", () => {
  it("serves SP metadata with the ACS URL (POST binding)", async () => {
    const r = await srv.fetch(`/api/sso/saml/${slug}/metadata`);
    expect(r.status).toBe(200);
    const xml = await r.text();
    expect(xml).toContain(`entityID="${sp.entityId}"`);
    expect(xml).toContain(`Location="${sp.acsUrl}"`);
    expect(xml).toContain("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST");
    expect((await srv.fetch("/api/sso/saml/no-such-org/metadata")).status).toBe(404);
  });

  it("accepts the valid signed response once, with the mapped roles, then refuses its replay", async () => {
    const { id, cookie } = await start("/notes");
    const xml = sign(responseXml(spec(id)), idpKey.key);
    const r = await post(xml, cookie);
    expect(r.status, await r.clone().text()).toBe(303);
    expect(r.headers.get("location")).toBe("/notes");
    const session = (r.headers.getSetCookie().find((c) => c.startsWith("ws_session=")) as string).split(
      ";",
    )[0] as string;
    const me = await srv.fetch("/api/auth/me", { headers: { cookie: session } });
    const body = (await me.json()) as Data<{ email: string; roles: string[]; displayName: string }>;
    expect(body.data.email).toBe("alice@corp.example");
    expect(body.data.displayName).toBe("Alice Archer");
    expect(body.data.roles.sort()).toEqual(["admin", "member"]);
    // The same bytes again: the request is used and the assertion id remembered.
    await expectRejected(xml, cookie, "replayed");
  });

  it("accepts a response whose only signature covers the whole Response", async () => {
    const { id, cookie } = await start();
    const xml = sign(responseXml(spec(id)), idpKey.key, { assertion: false, response: true });
    const r = await post(xml, cookie);
    expect(r.status, await r.clone().text()).toBe(303);
  });

  const cases: [string, string, (id: string) => string][] = [
    ["unsigned assertion", "unsigned", (id) => stripSignatures(sign(responseXml(spec(id)), idpKey.key))],
    ["assertion signed by another key", "bad_signature", (id) => sign(responseXml(spec(id)), rogueKey.key)],
    [
      "wrong audience",
      "wrong_audience",
      (id) => sign(responseXml(spec(id, { audience: "https://other.example/sp" })), idpKey.key),
    ],
    [
      "wrong recipient",
      "wrong_recipient",
      (id) => sign(responseXml(spec(id, { recipient: "https://evil.example/acs" })), idpKey.key),
    ],
    [
      "wrong destination",
      "wrong_destination",
      (id) => sign(responseXml(spec(id, { destination: "https://evil.example/acs" })), idpKey.key),
    ],
    [
      "wrong issuer",
      "wrong_issuer",
      (id) => sign(responseXml(spec(id, { issuer: "https://evil.example/idp" })), idpKey.key),
    ],
    [
      "expired",
      "expired",
      (id) =>
        sign(
          responseXml(
            spec(id, {
              notBefore: new Date(Date.now() - 3_600_000),
              notOnOrAfter: new Date(Date.now() - 600_000),
            }),
          ),
          idpKey.key,
        ),
    ],
    [
      "unknown InResponseTo",
      "unknown_in_response_to",
      () => sign(responseXml(spec("_not-a-request-of-ours")), idpKey.key),
    ],
    [
      "failure status next to a signed assertion",
      "status_not_success",
      (id) =>
        sign(responseXml(spec(id, { status: "urn:oasis:names:tc:SAML:2.0:status:Requester" })), idpKey.key),
    ],
    [
      "no subject confirmation",
      "no_bearer_confirmation",
      (id) => sign(responseXml(spec(id, { confirmationMethod: null })), idpKey.key),
    ],
    [
      "holder-of-key instead of bearer",
      "no_bearer_confirmation",
      (id) =>
        sign(
          responseXml(spec(id, { confirmationMethod: "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key" })),
          idpKey.key,
        ),
    ],
    [
      "comment inside NameID",
      "xml_comment",
      (id) =>
        sign(responseXml(spec(id, { nameId: "evil@attacker.example.corp.example" })), idpKey.key).replace(
          "evil@attacker.example",
          "evil@attacker.example<!---->",
        ),
    ],
    [
      "DOCTYPE with an external entity (XXE)",
      "doctype",
      (id) =>
        `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>` +
        sign(responseXml(spec(id, { nameId: "&x;" })), idpKey.key),
    ],
  ];
  for (const [name, reason, make] of cases) {
    it(`refuses: ${name} (${reason}), audited`, async () => {
      const { id, cookie } = await start();
      await expectRejected(make(id), cookie, reason);
    });
  }

  for (let v = 1; v <= 8; v++) {
    it(`refuses signature wrapping XSW${v}`, async () => {
      const { id, cookie } = await start();
      const signed = sign(responseXml(spec(id)), idpKey.key, { assertion: true, response: v <= 2 });
      const r = await post(wrap(signed, v, "mallory@corp.example"), cookie);
      const html = await r.text();
      expect(r.status, html).toBe(401);
      expect(html).toMatch(/<code>(signature_wrapping|bad_signature|unsigned)<\/code>/);
      expect((await lastFailure())?.reason).toMatch(/signature_wrapping|bad_signature|unsigned/);
    });
  }

  it("refuses a response to a request another browser started", async () => {
    const mine = await start();
    const theirs = await start();
    const xml = sign(responseXml(spec(theirs.id)), idpKey.key);
    // A fresh browser (another binding cookie) presents the victim's response.
    expect(mine.cookie).not.toBe(theirs.cookie);
    await expectRejected(xml, mine.cookie, "other_browser");
    // With no binding cookie at all (a cross-site POST over plain HTTP leaves out the SameSite=Lax cookie) the
    // response is posted back once from a page of ours; posted back without the cookie, it is refused.
    const page = await post(xml, "");
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('name="ws_resubmitted"');
    expect(html).toContain(`value="${b64(xml)}"`);
    expect(html).toContain('<script src="/api/sso/saml/resubmit.js"></script>');
    expect((await srv.fetch("/api/sso/saml/resubmit.js")).headers.get("content-type")).toMatch(/javascript/);
    const again = await post(xml, "", false, { ws_resubmitted: "1" });
    expect(again.status).toBe(401);
    expect(await again.text()).toContain("other_browser");
    // The browser that started it can still use it (the refused attempts consumed nothing).
    expect((await post(xml, theirs.cookie)).status).toBe(303);
  });

  it("a sign-in started on one node finishes on another (requests and replay cache live in PostgreSQL)", async () => {
    // Behind a load balancer both nodes know the public address; node 2 shares only the database.
    const node2 = await startServer(
      testConfig({
        DATABASE_URL: srv.pg.url,
        WORKSYNAPSE_AUTH_PUBLIC_URL: srv.url,
        WORKSYNAPSE_ROLES: "web",
        WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "100000",
      }),
      silentLogger(),
    );
    try {
      const { id, cookie } = await start();
      const xml = sign(responseXml(spec(id)), idpKey.key);
      const acs = (base: string) =>
        fetch(`${base}/api/sso/saml/${slug}/acs`, {
          method: "POST",
          redirect: "manual",
          headers: { "content-type": "application/x-www-form-urlencoded", cookie },
          body: new URLSearchParams({ SAMLResponse: b64(xml) }).toString(),
        });
      expect((await acs(node2.url as string)).status).toBe(303);
      // The replay goes back to node 1, which knows it was used.
      const again = await acs(srv.url);
      expect(again.status).toBe(401);
      expect(await again.text()).toContain("<code>replayed</code>");
    } finally {
      await node2.stop();
    }
  });

  it("single logout: signing out ends the session and sends the browser to the IdP; the IdP's signed requests end sessions", async () => {
    const current = (
      await org.owner.json<Data<{ saml: { config: Record<string, unknown>; groupRoles: unknown[] } }>>(
        "GET",
        "/api/sso",
      )
    ).data.saml;
    await org.owner.json("PUT", "/api/sso/saml", {
      enabled: true,
      label: "Corp IdP",
      config: { ...current.config, idpSloUrl: "https://idp.corp.example/slo" },
      groupRoles: current.groupRoles,
      defaultRoleId: null,
    });
    const signInOnce = async () => {
      const { id, cookie } = await start();
      const r = await post(sign(responseXml(spec(id)), idpKey.key), cookie);
      expect(r.status).toBe(303);
      const session = (r.headers.getSetCookie().find((c) => c.startsWith("ws_session=")) as string).split(
        ";",
      )[0] as string;
      const me = (await (await srv.fetch("/api/auth/me", { headers: { cookie: session } })).json()) as Data<{
        singleLogoutUrl: string | null;
      }>;
      return { session, logout: me.data.singleLogoutUrl as string };
    };
    const alive = async (session: string) =>
      (await srv.fetch("/api/auth/me", { headers: { cookie: session } })).status === 200;

    // SP-initiated: a link without this session's id (another site's) signs nobody out.
    const a = await signInOnce();
    expect(a.logout).toMatch(new RegExp(`^/api/sso/saml/${slug}/logout\\?session=`));
    const forged = await srv.fetch(
      `/api/sso/saml/${slug}/logout?session=00000000-0000-4000-8000-000000000000`,
      {
        headers: { cookie: a.session },
        redirect: "manual",
      },
    );
    expect(forged.headers.get("location")).toBe("/login");
    expect(await alive(a.session)).toBe(true);
    const out = await srv.fetch(a.logout, { headers: { cookie: a.session }, redirect: "manual" });
    expect(out.status).toBe(302);
    const location = new URL(out.headers.get("location") as string);
    expect(location.origin + location.pathname).toBe("https://idp.corp.example/slo");
    const logoutRequest = inflateRawSync(
      Buffer.from(location.searchParams.get("SAMLRequest") as string, "base64"),
    ).toString();
    expect(logoutRequest).toContain("LogoutRequest");
    expect(logoutRequest).toContain("alice@corp.example");
    expect(await alive(a.session)).toBe(false);
    // The IdP's answer (a LogoutResponse) lands on the sign-in page.
    const idpSide = new SAML({
      callbackUrl: sp.acsUrl,
      entryPoint: sp.acsUrl,
      logoutUrl: sp.sloUrl,
      issuer: IDP,
      idpCert: idpKey.cert,
      privateKey: idpKey.key,
      signatureAlgorithm: "sha256",
    });
    const inflated = inflateRawSync(
      Buffer.from(location.searchParams.get("SAMLRequest") as string, "base64"),
    ).toString();
    const requestId = /ID="([^"]+)"/.exec(inflated)?.[1] as string;
    const answer = await idpSide.getLogoutResponseUrlAsync(
      { ID: requestId, issuer: sp.entityId, nameID: "alice@corp.example", nameIDFormat: "" } as never,
      "",
      {},
      true,
    );
    const back = await srv.fetch(new URL(answer).pathname + new URL(answer).search, { redirect: "manual" });
    expect(back.status).toBe(302);
    expect(back.headers.get("location")).toBe("/login");

    // IdP-initiated: a signed LogoutRequest ends this person's sessions and is answered.
    const b = await signInOnce();
    const c = await signInOnce();
    const unsignedSide = new SAML({
      callbackUrl: sp.acsUrl,
      entryPoint: sp.acsUrl,
      logoutUrl: sp.sloUrl,
      issuer: IDP,
      idpCert: idpKey.cert,
    });
    const rogueSide = new SAML({
      callbackUrl: sp.acsUrl,
      entryPoint: sp.acsUrl,
      logoutUrl: sp.sloUrl,
      issuer: IDP,
      idpCert: idpKey.cert,
      privateKey: rogueKey.key,
      signatureAlgorithm: "sha256",
    });
    const who = {
      issuer: IDP,
      nameID: "alice@corp.example",
      nameIDFormat: "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    };
    const relative = (u: string) => new URL(u).pathname + new URL(u).search;
    for (const [side, reason] of [
      [unsignedSide, "unsigned"],
      [rogueSide, "bad_signature"],
    ] as const) {
      const r = await srv.fetch(relative(await side.getLogoutUrlAsync(who, "", {})), { redirect: "manual" });
      expect(r.status).toBe(400);
      expect(await r.text()).toContain(`<code>${reason}</code>`);
      expect(await alive(b.session)).toBe(true);
    }
    const signed = await srv.fetch(relative(await idpSide.getLogoutUrlAsync(who, "", {})), {
      redirect: "manual",
    });
    expect(signed.status).toBe(302);
    expect(signed.headers.get("location")).toContain("SAMLResponse=");
    expect(await alive(b.session)).toBe(false);
    expect(await alive(c.session)).toBe(false);
  });

  it("refuses unsolicited (IdP-initiated) responses while that is off", async () => {
    const { cookie } = await start();
    await expectRejected(
      sign(responseXml(spec("", { inResponseTo: undefined })), idpKey.key),
      cookie,
      "unsolicited",
    );
  });

  it("with IdP-initiated sign-in on, accepts an unsolicited response once; its replay is caught by the assertion id", async () => {
    const cfg = (
      await org.owner.json<Data<{ saml: { config: Record<string, unknown>; groupRoles: unknown[] } }>>(
        "GET",
        "/api/sso",
      )
    ).data.saml;
    const put = (allow: boolean) =>
      org.owner.json("PUT", "/api/sso/saml", {
        enabled: true,
        label: "Corp IdP",
        config: { ...cfg.config, allowIdpInitiated: allow },
        groupRoles: cfg.groupRoles,
        defaultRoleId: null,
      });
    await put(true);
    try {
      const xml = sign(responseXml(spec("", { inResponseTo: undefined })), idpKey.key);
      const r = await post(xml, "");
      expect(r.status, await r.clone().text()).toBe(303);
      expect(r.headers.get("location")).toBe("/");
      await expectRejected(xml, "", "replayed");
    } finally {
      await put(false);
    }
  });

  it("refuses a person whose groups map to no role, and malformed posts, with clear pages", async () => {
    const { id, cookie } = await start();
    await expectRejected(
      sign(
        responseXml(
          spec(id, {
            nameId: "nobody@corp.example",
            attributes: { mail: ["nobody@corp.example"], groups: ["visitors"] },
          }),
        ),
        idpKey.key,
      ),
      cookie,
      "no_role",
    );
    await expectRejected("not base64 at all!", cookie, "malformed", true);
    await expectRejected("<notxml", cookie, "malformed");
    const empty = await srv.fetch(`/api/sso/saml/${slug}/acs`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "RelayState=x",
    });
    expect(empty.status).toBe(400);
    expect(await empty.text()).toContain("no SAMLResponse");
    expect((await srv.fetch("/livez")).status).toBe(200);
  });

  it("answers a non-form post, a logout message that is not one, and too many attempts with pages", async () => {
    const json = await srv.fetch(`/api/sso/saml/${slug}/acs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ SAMLResponse: "x" }),
    });
    expect(json.status).toBe(415);
    expect(await json.text()).toContain("<code>malformed</code>");
    const slo = await srv.fetch(`/api/sso/saml/${slug}/slo?SAMLRequest=not-deflated`);
    expect(slo.status).toBe(400);
    expect(await slo.text()).toContain("<code>malformed</code>");
    // A node with a small per-address limit; counts are kept in PostgreSQL, so this file's earlier sign-ins
    // from the same address already count: the start is refused with a page and Retry-After.
    const strict = await startServer(
      testConfig({
        DATABASE_URL: srv.pg.url,
        WORKSYNAPSE_ROLES: "web",
        WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "2",
      }),
      silentLogger(),
    );
    try {
      const starts = [];
      for (let i = 0; i < 3; i++)
        starts.push(await fetch(`${strict.url}/api/sso/saml/${slug}/login`, { redirect: "manual" }));
      expect(starts[2]?.status).toBe(429);
      expect(starts[2]?.headers.get("retry-after")).toMatch(/^\d+$/);
      expect(starts[2]?.headers.get("content-type")).toContain("text/html");
      expect(await starts[2]?.text()).toContain("<code>rate_limited</code>");
    } finally {
      await strict.stop();
    }
    expect((await srv.fetch("/livez")).status).toBe(200);
  });

  it("another organization's endpoints do not accept this organization's responses", async () => {
    const otherSlug = (
      await other.owner.json<Data<{ organization: { slug: string } }>>("GET", "/api/auth/me")
    ).data.organization.slug;
    const { id, cookie } = await start();
    const xml = sign(responseXml(spec(id)), idpKey.key);
    const r = await srv.fetch(`/api/sso/saml/${otherSlug}/acs`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", cookie },
      body: new URLSearchParams({ SAMLResponse: b64(xml) }).toString(),
    });
    expect(r.status).toBe(404);
    expect(await r.text()).toContain("not_configured");
  });

  it("reads IdP metadata and refuses metadata with a DOCTYPE", async () => {
    const md = `<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="${IDP}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>${idpKey.cert.replace(/-----[A-Z ]+-----|\s/g, "")}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.corp.example/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>`;
    const read = await org.owner.json<Data<{ idpEntityId: string; idpSsoUrl: string; idpCerts: string[] }>>(
      "POST",
      "/api/sso/saml/metadata",
      { xml: md },
    );
    expect(read.data.idpEntityId).toBe(IDP);
    expect(read.data.idpSsoUrl).toBe("https://idp.corp.example/sso");
    expect(read.data.idpCerts).toHaveLength(1);
    const bad = await org.owner.request("POST", "/api/sso/saml/metadata", {
      xml: `<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>${md}`,
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe("doctype");
  });

  it("validates settings: bad certificates and URLs get 400 with field paths", async () => {
    const r = await org.owner.request("PUT", "/api/sso/saml", {
      enabled: true,
      label: "x",
      config: { idpEntityId: IDP, idpSsoUrl: "ftp://nope", idpCerts: ["not a cert"] },
      groupRoles: [],
      defaultRoleId: null,
    });
    expect(r.status).toBe(400);
    const body = (await r.json()) as { error: { details: { fields: { path: string }[] } } };
    expect(body.error.details.fields.map((f) => f.path).sort()).toEqual([
      "config.idpCerts.0",
      "config.idpSsoUrl",
    ]);
  });
});

describe("what an identity provider may assert", () => {
  const signInAs = async (email: string, nameId = email) => {
    const { id, cookie } = await start();
    const xml = sign(
      responseXml(spec(id, { nameId, attributes: { mail: [email], displayName: ["X"], groups: ["staff"] } })),
      idpKey.key,
    );
    return { xml, cookie };
  };

  it("refuses an address that looks like an existing account's (Cyrillic, fullwidth, zero-width)", async () => {
    const real = await signInAs("paypal.ops@corp.example");
    expect((await post(real.xml, real.cookie)).status).toBe(303);
    // "а" below is CYRILLIC SMALL LETTER A: the same on screen, another address.
    const cyrillic = await signInAs("pаypal.ops@corp.example", "attacker-1");
    await expectRejected(cyrillic.xml, cyrillic.cookie, "email_confusable");
    const fullwidth = await signInAs("ｐaypal.ops@corp.example", "attacker-2");
    await expectRejected(fullwidth.xml, fullwidth.cookie, "email_not_normal");
    const zeroWidth = await signInAs("pay\u200bpal.ops@corp.example", "attacker-3");
    await expectRejected(zeroWidth.xml, zeroWidth.cookie, "email_not_normal");
    const people = await org.owner.json<Data<{ email: string }[]>>("GET", "/api/users?search=ops@corp");
    expect(people.data.map((p) => p.email)).toEqual(["paypal.ops@corp.example"]);
  });

  it("refuses single sign-on once the organization's plan no longer includes it", async () => {
    const su = new pg.Client({ connectionString: srv.pg.url });
    await su.connect();
    try {
      await su.query("update organizations set plan = 'starter' where id = $1", [org.orgId]);
      const bob = await signInAs("bob.plan@corp.example");
      await expectRejected(bob.xml, bob.cookie, "plan_limit");
    } finally {
      await su.query("update organizations set plan = 'professional' where id = $1", [org.orgId]);
      await su.end();
    }
  });
});
