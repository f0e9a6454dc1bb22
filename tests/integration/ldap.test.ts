// Directory sign-in against a real OpenLDAP (slapd) on loopback: plain, StartTLS and LDAPS with a generated CA;
// injection and blank-password attempts; group-to-role mapping; the sync job taking roles and access away.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Attribute, Change } from "ldapts";
import { getTestServer, type TestServer } from "../support/server.js";
import { Client, createTestOrg, type TestOrg } from "../support/identity.js";
import { groupLdif, OUS, personLdif, startSlapd, type Slapd } from "../support/slapd.js";
import { selfSigned } from "../support/certs.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";
import { scheduleDueSyncs } from "../../core/src/modules/sso/sso.sync.js";
import pg from "pg";

let srv: TestServer;
let org: TestOrg;
let slug: string;
let dir: Slapd;
let roles: { id: string; key: string; name: string }[];
const PASS = {
  alice: "alice-directory-pass",
  bob: "bob-directory-pass",
  carol: "carol-directory-pass",
  dave: "dave-pass-42",
};
const SVC = { dn: "cn=svc,dc=corp,dc=example", password: "service-account-secret" };
type Data<T> = { data: T };

const groupDn = (cn: string) => `cn=${cn},ou=groups,dc=corp,dc=example`;
const userDn = (uid: string) => `uid=${uid},ou=people,dc=corp,dc=example`;

function ldapConfig(over: Record<string, unknown> = {}) {
  return {
    url: dir.url,
    security: "none",
    bindDn: SVC.dn,
    userBase: "ou=people,dc=corp,dc=example",
    userFilter: "(&(objectClass=inetOrgPerson)(uid={login}))",
    groupMode: "member",
    groupBase: "ou=groups,dc=corp,dc=example",
    ...over,
  };
}

async function save(over: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return org.owner.json<Data<{ id: string; hasSecret: boolean; config: Record<string, unknown> }>>(
    "PUT",
    "/api/sso/ldap",
    {
      enabled: true,
      label: "Corp directory",
      config: ldapConfig(over),
      secret: SVC.password,
      groupRoles: [
        { group: groupDn("staff"), roleId: roles.find((r) => r.key === "member")?.id },
        { group: groupDn("IT-Admins").toUpperCase(), roleId: roles.find((r) => r.key === "admin")?.id },
      ],
      defaultRoleId: null,
      ...extra,
    },
  );
}

async function ldapSignIn(login: string, password: string): Promise<Response> {
  return srv.fetch("/api/auth/ldap", {
    method: "POST",
    headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: srv.url },
    body: JSON.stringify({ organization: slug, login, password }),
  });
}

async function signedIn(login: string, password: string): Promise<Client> {
  const r = await ldapSignIn(login, password);
  expect(r.status, await r.clone().text()).toBe(200);
  const cookie = (r.headers.getSetCookie().find((c) => c.startsWith("ws_session=")) as string).split(
    ";",
  )[0] as string;
  return new Client(srv, { cookie });
}

const failures = () =>
  withOrg(srv.db.knex, org.orgId, async (trx) =>
    (await trx("audit_log").where({ action: "auth.sso_sign_in", outcome: "failure" }).orderBy("seq")).map(
      (r) => (r.details as { reason: string }).reason,
    ),
  );

/** Asks for a sync through the API and waits until the worker has recorded its result. */
async function runSync(): Promise<Record<string, unknown>> {
  const lastSync = () =>
    withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("sso_providers").where({ kind: "ldap" }).first("last_sync_at", "last_sync"),
    );
  const before = (await lastSync()).last_sync_at as Date | null;
  await org.owner.json("POST", "/api/sso/ldap/sync", undefined, 202);
  for (let i = 0; i < 200; i++) {
    const now = await lastSync();
    if (now.last_sync_at && (!before || now.last_sync_at > before))
      return now.last_sync as Record<string, unknown>;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the sync did not run");
}

beforeAll(async () => {
  dir = await startSlapd(
    OUS +
      `dn: ${SVC.dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: svc\nuserPassword: ${SVC.password}\n\n` +
      personLdif("alice", "Alice Archer", "alice@corp.example", PASS.alice) +
      personLdif("bob", "Bob Baker", "bob@corp.example", PASS.bob) +
      personLdif("carol", "Carol Cook", "carol@corp.example", PASS.carol) +
      personLdif("dave", "Dave Dunn", "dave@corp.example", PASS.dave) +
      groupLdif("staff", ["alice", "bob", "dave"]) +
      groupLdif("it-admins", ["alice"]),
  );
  // Many sign-ins from one address in a few seconds: the per-address limit is tested in bruteforce.test.ts.
  srv = await getTestServer({ env: { WORKSYNAPSE_AUTH_SIGN_IN_PER_IP_PER_MINUTE: "100000" } });
  org = await createTestOrg(srv, "ldap", { plan: "professional" });
  slug = (await org.owner.json<Data<{ organization: { slug: string } }>>("GET", "/api/auth/me")).data
    .organization.slug;
  roles = (await org.owner.json<Data<{ id: string; key: string; name: string }[]>>("GET", "/api/roles")).data;
});
afterAll(async () => {
  await srv?.close();
  await dir?.stop();
});

describe("LDAP / Active Directory sign-in", () => {
  it("stores the service password sealed, never returns it, and tests the connection", async () => {
    const saved = await save();
    expect(saved.data.hasSecret).toBe(true);
    expect(JSON.stringify(saved)).not.toContain(SVC.password);
    const stored = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("sso_providers").where({ kind: "ldap" }).first("secret"),
    );
    expect(stored.secret).toMatch(/^v1\./);
    expect(stored.secret).not.toContain(SVC.password);
    const test = await org.owner.json<Data<{ ok: boolean; users: number; sample: string[] }>>(
      "POST",
      "/api/sso/ldap/test",
      {},
    );
    expect(test.data.users).toBe(4);
    expect(test.data.sample).toContain("alice");
    // A wrong service password is reported as such.
    const bad = await org.owner.request("POST", "/api/sso/ldap/test", {
      config: ldapConfig(),
      secret: "wrong",
    });
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe(
      "directory_service_bind_failed",
    );
  });

  it("signs a person in: account created on first sign-in, roles from groups (DNs compared case-insensitively)", async () => {
    const alice = await signedIn("alice", PASS.alice);
    const me = (
      await alice.json<Data<{ email: string; displayName: string; roles: string[] }>>("GET", "/api/auth/me")
    ).data;
    expect(me.email).toBe("alice@corp.example");
    expect(me.displayName).toBe("Alice Archer");
    expect(me.roles.sort()).toEqual(["admin", "member"]);
    // The second sign-in finds the same account.
    const again = await signedIn("alice", PASS.alice);
    expect((await again.json<Data<{ id: string }>>("GET", "/api/auth/me")).data).toMatchObject({
      email: "alice@corp.example",
    });
    const users = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("users").where({ external_source: "ldap" }).count<{ count: string }[]>(),
    );
    expect(Number(users[0]?.count)).toBe(1);
  });

  it("refuses wrong passwords, unknown people and people with no mapped group; blank passwords never reach the directory", async () => {
    const before = (await failures()).length;
    expect((await ldapSignIn("alice", "wrong-password")).status).toBe(401);
    expect((await ldapSignIn("nobody", "whatever")).status).toBe(401);
    const carol = await ldapSignIn("carol", PASS.carol);
    expect(carol.status).toBe(403);
    expect(((await carol.json()) as { error: { code: string } }).error.code).toBe("no_role");
    for (const blank of ["", "   ", "\t"]) {
      const r = await ldapSignIn("alice", blank);
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("blank_password");
    }
    expect((await failures()).slice(before)).toEqual([
      "wrong_password",
      "not_found",
      "no_role",
      "blank_password",
      "blank_password",
      "blank_password",
    ]);
  });

  it("malformed sign-in requests get 400 with a code; an unknown organization gets 404", async () => {
    const raw = (body: string) =>
      srv.fetch("/api/auth/ldap", {
        method: "POST",
        headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: srv.url },
        body,
      });
    const code = async (r: Response) => ((await r.json()) as { error: { code: string } }).error.code;
    let r = await raw("{not json");
    expect(r.status).toBe(400);
    expect(await code(r)).toBe("malformed_body");
    r = await raw(JSON.stringify({ organization: slug, login: "alice", password: PASS.alice, admin: true }));
    expect(r.status).toBe(400);
    expect(await code(r)).toBe("validation_failed");
    r = await raw(JSON.stringify({ login: "alice", password: PASS.alice }));
    expect(r.status).toBe(400);
    r = await raw(JSON.stringify({ organization: "no-such-org", login: "alice", password: PASS.alice }));
    expect(r.status).toBe(404);
    // A cross-site form post is refused before anything else.
    r = await srv.fetch("/api/auth/ldap", {
      method: "POST",
      headers: { "content-type": "application/json", origin: "https://evil.example" },
      body: JSON.stringify({ organization: slug, login: "alice", password: PASS.alice }),
    });
    expect(r.status).toBe(403);
  });

  it("injection strings in the login name change nothing", async () => {
    const before = (await failures()).length;
    const attempts = [
      "*",
      "*)(uid=*",
      "alice)(|(uid=*",
      "alice\u0000",
      "ali\\ce",
      "(alice)",
      "*)(objectClass=*))(&(uid=alice",
      "alice*",
    ];
    for (const login of attempts) {
      const r = await ldapSignIn(login, PASS.alice);
      expect(r.status, login).toBe(login.includes("\u0000") ? 400 : 401);
      expect(r.headers.getSetCookie().some((c) => c.startsWith("ws_session="))).toBe(false);
    }
    // Each was looked up literally and found nobody (never "several entries", never a bind as someone); the one
    // with a NUL character is refused by the request validation before any lookup.
    expect((await failures()).slice(before)).toEqual(
      attempts.filter((a) => !a.includes("\u0000")).map(() => "not_found"),
    );
  });

  it("StartTLS and LDAPS with the configured CA work; a certificate from another CA is refused, with no fallback to plain", async () => {
    await save({ security: "starttls", caCert: dir.ca.cert });
    await signedIn("bob", PASS.bob);
    await save({ url: dir.tlsUrl, security: "ldaps", caCert: dir.ca.cert });
    await signedIn("bob", PASS.bob);
    const rogue = selfSigned("rogue-ca");
    for (const over of [
      { url: dir.tlsUrl, security: "ldaps", caCert: rogue.cert },
      { security: "starttls", caCert: rogue.cert },
    ]) {
      const t = await org.owner.request("POST", "/api/sso/ldap/test", { config: ldapConfig(over) });
      expect(t.status).toBe(422);
      expect(((await t.json()) as { error: { code: string } }).error.code).toBe("directory_tls_failed");
      await save(over);
      const r = await ldapSignIn("bob", PASS.bob);
      expect(r.status).toBe(503);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("directory_unavailable");
    }
    // ldaps:// with security "none" is refused as a setting.
    const mismatch = await org.owner.request("PUT", "/api/sso/ldap", {
      enabled: true,
      label: "x",
      config: ldapConfig({ url: dir.tlsUrl, security: "none" }),
      groupRoles: [],
      defaultRoleId: null,
    });
    expect(mismatch.status).toBe(400);
    await save({ security: "starttls", caCert: dir.ca.cert });
  });

  it("test user and the mapping preview show who would get which role", async () => {
    const t = await org.owner.json<
      Data<{ person: { dn: string; groups: string[]; roles: string[] }; passwordChecked: boolean }>
    >("POST", "/api/sso/ldap/test-user", { login: "alice", password: PASS.alice });
    expect(t.data.passwordChecked).toBe(true);
    expect(t.data.person.dn).toBe(userDn("alice"));
    expect(t.data.person.roles.sort()).toEqual(["Administrator", "Member"]);
    const wrong = await org.owner.request("POST", "/api/sso/ldap/test-user", {
      login: "alice",
      password: "nope",
    });
    expect(wrong.status).toBe(422);
    const preview = await org.owner.json<
      Data<{ people: { login: string; roles: string[] }[]; total: number }>
    >("POST", "/api/sso/ldap/preview", {
      groupRoles: [{ group: groupDn("staff"), roleId: roles.find((r) => r.key === "guest")?.id }],
    });
    expect(preview.data.total).toBe(4);
    const by = Object.fromEntries(preview.data.people.map((p) => [p.login, p.roles]));
    expect(by).toEqual({ alice: ["Guest"], bob: ["Guest"], carol: [], dave: ["Guest"] });
  });

  it("sync: a group removed at the directory takes the role and ends the session; a person removed loses access", async () => {
    const bob = await signedIn("bob", PASS.bob);
    const dave = await signedIn("dave", PASS.dave);
    expect((await bob.json<Data<{ roles: string[] }>>("GET", "/api/auth/me")).data.roles).toEqual(["member"]);
    await dir.admin(async (c) => {
      await c.modify(groupDn("staff"), [
        new Change({
          operation: "delete",
          modification: new Attribute({ type: "member", values: [userDn("bob")] }),
        }),
      ]);
      await c.del(userDn("dave"));
    });
    expect(await runSync()).toMatchObject({ ok: true, deactivated: 1, rolesChanged: 1 });
    expect((await bob.request("GET", "/api/auth/me")).status).toBe(401);
    expect((await dave.request("GET", "/api/auth/me")).status).toBe(401);
    // Bob has no mapped group now, and Dave is deactivated.
    expect((await ldapSignIn("bob", PASS.bob)).status).toBe(403);
    const bobRoles = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("user_roles")
        .join("users", "users.id", "user_roles.user_id")
        .where("users.email", "bob@corp.example")
        .count<{ count: string }[]>(),
    );
    expect(Number(bobRoles[0]?.count)).toBe(0);
    const daveRow = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("users").where({ email: "dave@corp.example" }).first("status"),
    );
    expect(daveRow.status).toBe("deactivated");
    // Running the same sync again changes nothing (idempotent).
    expect(await runSync()).toMatchObject({ ok: true, deactivated: 0, rolesChanged: 0 });
    // Alice still works.
    await signedIn("alice", PASS.alice);
  });

  it("reads groups from memberOf (Active Directory style) as well as by group search", async () => {
    await dir.admin((c) =>
      c.add(groupDn("nurses"), { objectClass: "groupOfNames", cn: "nurses", member: [userDn("alice")] }),
    );
    await save({ groupMode: "memberOf" });
    const t = await org.owner.json<Data<{ person: { groups: string[] } }>>(
      "POST",
      "/api/sso/ldap/test-user",
      {
        login: "alice",
      },
    );
    expect(t.data.person.groups).toContain(groupDn("nurses"));
    await save({ security: "starttls", caCert: dir.ca.cert });
  });

  it("scheduled sync: a due directory is claimed once however many nodes ask at once, and the job runs", async () => {
    const owner = new pg.Client({ connectionString: srv.pg.url });
    await owner.connect();
    try {
      await owner.query(
        "update sso_providers set next_sync_at = now() - interval '1 minute' where org_id = $1",
        [org.orgId],
      );
      const before = (
        await owner.query("select last_sync_at from sso_providers where org_id = $1", [org.orgId])
      ).rows[0].last_sync_at as Date;
      // Five "nodes" at once (plus the test server's own scheduler, which may tick meanwhile).
      const claimed = (
        await Promise.all([1, 2, 3, 4, 5].map(() => scheduleDueSyncs(srv.db.knex, srv.outbox)))
      ).flat();
      expect(claimed.length).toBeLessThanOrEqual(1);
      const jobs = await owner.query(
        "select msg_id from outbox where subject like '%.jobs.sso-sync' and msg_id not like '%:manual:%'",
      );
      expect(jobs.rows).toHaveLength(1);
      // The slot moved on: asking again claims nothing.
      expect(await scheduleDueSyncs(srv.db.knex, srv.outbox)).toEqual([]);
      for (let i = 0; ; i++) {
        const now = (
          await owner.query("select last_sync_at from sso_providers where org_id = $1", [org.orgId])
        ).rows[0].last_sync_at as Date;
        if (now > before) break;
        if (i > 200) throw new Error("the scheduled sync did not run");
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await owner.end();
    }
  });

  it("SSO required: password sign-in only for the break-glass owner", async () => {
    const bad = await org.owner.request("PUT", "/api/sso-policy", {
      ssoRequired: true,
      breakGlassUserId: null,
    });
    expect(bad.status).toBe(400);
    await org.owner.json("PUT", "/api/sso-policy", { ssoRequired: true, breakGlassUserId: org.ownerId });
    // Another local user with a correct password is refused.
    const member = await org.owner.json<Data<{ id: string }>>(
      "POST",
      "/api/users",
      {
        email: `local-${org.marker.toLowerCase()}@example.org`,
        displayName: "Local",
        password: "violet-harbor-lantern-42",
        roleIds: [roles.find((r) => r.key === "member")?.id],
      },
      201,
    );
    expect(member.data.id).toBeTruthy();
    const r = await srv.fetch("/api/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: srv.url },
      body: JSON.stringify({
        email: `local-${org.marker.toLowerCase()}@example.org`,
        password: "violet-harbor-lantern-42",
      }),
    });
    expect(r.status).toBe(403);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe("sso_required");
    // The break-glass owner still signs in with a password; directory sign-in goes on.
    const owner = await srv.fetch("/api/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: srv.url },
      body: JSON.stringify({ email: org.ownerEmail, password: "violet-harbor-lantern-42" }),
    });
    expect(owner.status).toBe(200);
    await signedIn("alice", PASS.alice);
    await org.owner.json("PUT", "/api/sso-policy", { ssoRequired: false, breakGlassUserId: null });
  });

  it("the sign-in page lists the directory; non-admins cannot read or change SSO settings", async () => {
    const opts = (await (await srv.fetch("/api/auth/sso-options")).json()) as Data<
      { organization: string; kind: string; label: string }[]
    >;
    expect(opts.data).toContainEqual(
      expect.objectContaining({ organization: slug, kind: "ldap", label: "Corp directory" }),
    );
    const alice = await signedIn("alice", PASS.alice);
    // Alice is an admin through her group: she may read; a member may not.
    expect((await alice.request("GET", "/api/sso")).status).toBe(200);
    await dir.admin((c) =>
      c.modify(groupDn("it-admins"), [
        new Change({
          operation: "add",
          modification: new Attribute({ type: "member", values: [userDn("carol")] }),
        }),
      ]),
    );
    await dir.admin((c) =>
      c.modify(groupDn("staff"), [
        new Change({
          operation: "add",
          modification: new Attribute({ type: "member", values: [userDn("bob")] }),
        }),
      ]),
    );
    const bob = await signedIn("bob", PASS.bob);
    const r = await bob.request("GET", "/api/sso");
    expect(r.status).toBe(403);
    expect(
      (
        await bob.request("PUT", "/api/sso/ldap", {
          enabled: false,
          label: "x",
          config: {},
          groupRoles: [],
          defaultRoleId: null,
        })
      ).status,
    ).toBe(403);
  });

  it("a directory that suddenly returns nobody changes nothing (reported as a failed sync)", async () => {
    const alice = await signedIn("alice", PASS.alice);
    await save({
      security: "starttls",
      caCert: dir.ca.cert,
      userFilter: "(&(objectClass=inetOrgPerson)(uid={login})(cn=nobody-at-all))",
    });
    expect(await runSync()).toMatchObject({
      ok: false,
      deactivated: 0,
      rolesChanged: 0,
      error: expect.stringContaining("no users"),
    });
    expect((await alice.request("GET", "/api/auth/me")).status).toBe(200);
    await save({ security: "starttls", caCert: dir.ca.cert });
  });

  it("removing the directory takes the roles it gave and ends its sessions; local accounts are untouched", async () => {
    const alice = await signedIn("alice", PASS.alice);
    await org.owner.json("DELETE", "/api/sso/ldap", undefined, 204);
    expect((await alice.request("GET", "/api/auth/me")).status).toBe(401);
    const roles = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("user_roles").where({ source: "sso" }).count<{ count: string }[]>(),
    );
    expect(Number(roles[0]?.count)).toBe(0);
    expect((await org.owner.request("GET", "/api/auth/me")).status).toBe(200);
    expect((await ldapSignIn("alice", PASS.alice)).status).toBe(404);
  });
});
