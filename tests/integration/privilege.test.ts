// The privilege ceiling (NIST 800-53 AC-6): nobody acts on an account or a role that holds more than they do.
// Every route that changes a user or a role assignment is tried by an administrator against an owner (and by
// an owner against a system administrator); each must answer 403 and change nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { Client, createMember, PASSWORD, signIn, type TestOrg } from "../support/identity.js";
import { selfSigned } from "../support/certs.js";
import { createOrganization } from "../../core/src/modules/identity/identity.service.js";

let srv: TestServer;
let org: TestOrg;
let roles: Record<string, string>;
let admin: { id: string; email: string; client: Client };
let member: { id: string; email: string; client: Client };

const NEW_PASSWORD = "copper-meadow-signal-88";

beforeAll(async () => {
  srv = await getTestServer();
  // The installation's first owner is its system administrator, as after the setup page.
  const ownerEmail = `sysadmin-${Date.now()}@ceiling.example`;
  const { orgId, ownerId } = await createOrganization(
    srv.db.knex,
    { name: "Ceiling", ownerEmail, ownerName: "Sys Admin", ownerPassword: PASSWORD, systemAdmin: true },
    { actorType: "system", actorId: "test" },
  );
  org = { orgId, ownerId, ownerEmail, marker: "CEIL", owner: await signIn(srv, ownerEmail) };
  roles = Object.fromEntries(
    (await org.owner.json<{ data: { id: string; key: string }[] }>("GET", "/api/roles")).data.map((r) => [
      r.key,
      r.id,
    ]),
  );
  admin = await createMember(org, ["admin"], "admin");
  member = await createMember(org, ["member"], "member");
});
afterAll(() => srv?.close());

const forbidden = async (r: Response, text: RegExp) => {
  const body = (await r.json()) as { error: { code: string; message: string } };
  expect(r.status, body.error.message).toBe(403);
  expect(body.error.code).toBe("forbidden");
  expect(body.error.message).toMatch(text);
};

describe("an administrator against the owner (who is also the system administrator)", () => {
  it("cannot reset the owner's password, and the owner's password still works", async () => {
    await forbidden(
      await admin.client.request("POST", `/api/users/${org.ownerId}/reset-password`, {
        password: NEW_PASSWORD,
      }),
      /system administrator/,
    );
    await signIn(srv, org.ownerEmail);
  });

  it("cannot deactivate, rename or change the roles of the owner", async () => {
    await forbidden(
      await admin.client.request("PATCH", `/api/users/${org.ownerId}`, { status: "deactivated" }),
      /system administrator/,
    );
    await forbidden(
      await admin.client.request("PATCH", `/api/users/${org.ownerId}`, { displayName: "Pwned" }),
      /system administrator/,
    );
    await forbidden(
      await admin.client.request("PUT", `/api/users/${org.ownerId}/roles`, { roleIds: [roles.member] }),
      /system administrator/,
    );
    const owner = await org.owner.json<{ data: { status: string; roles: { key: string }[] } }>(
      "GET",
      `/api/users/${org.ownerId}`,
    );
    expect(owner.data.status).toBe("active");
    expect(owner.data.roles.map((r) => r.key)).toEqual(["owner"]);
  });

  it("cannot grant itself or anyone the Owner role, directly, by invitation or by a new account", async () => {
    await forbidden(
      await admin.client.request("PUT", `/api/users/${admin.id}/roles`, {
        roleIds: [roles.owner, roles.admin],
      }),
      /admin\.owners/,
    );
    await forbidden(
      await admin.client.request("PUT", `/api/users/${member.id}/roles`, { roleIds: [roles.owner] }),
      /admin\.owners/,
    );
    await forbidden(
      await admin.client.request("POST", "/api/invitations", {
        email: "new@ceiling.example",
        roleId: roles.owner,
      }),
      /admin\.owners/,
    );
    await forbidden(
      await admin.client.request("POST", "/api/users", {
        email: "other@ceiling.example",
        displayName: "Other",
        password: PASSWORD,
        roleIds: [roles.owner],
      }),
      /admin\.owners/,
    );
  });

  it("cannot reach the Owner role through a group: joining it, adding roles to it, or changing its owners", async () => {
    const g = await org.owner.json<{ data: { id: string } }>("POST", "/api/groups", { name: "Owners" }, 201);
    await org.owner.json("PUT", `/api/groups/${g.data.id}/roles`, { roleIds: [roles.owner] });
    await org.owner.json("PUT", `/api/groups/${g.data.id}/members`, { userIds: [org.ownerId] });
    await forbidden(
      await admin.client.request("PUT", `/api/groups/${g.data.id}/members`, {
        userIds: [org.ownerId, admin.id],
      }),
      /admin\.owners/,
    );
    await forbidden(
      await admin.client.request("PUT", `/api/groups/${g.data.id}/members`, { userIds: [] }),
      /admin\.owners|system administrator/,
    );
    await forbidden(
      await admin.client.request("PUT", `/api/groups/${g.data.id}/roles`, { roleIds: [] }),
      /admin\.owners/,
    );
    await forbidden(await admin.client.request("DELETE", `/api/groups/${g.data.id}`), /system administrator/);
    // A group of the admin's own: giving it the Owner role is refused too.
    const mine = await admin.client.json<{ data: { id: string } }>(
      "POST",
      "/api/groups",
      { name: "Mine" },
      201,
    );
    await admin.client.json("PUT", `/api/groups/${mine.data.id}/members`, { userIds: [admin.id] });
    await forbidden(
      await admin.client.request("PUT", `/api/groups/${mine.data.id}/roles`, { roleIds: [roles.owner] }),
      /admin\.owners/,
    );
  });

  it("cannot create a custom role holding a permission it lacks", async () => {
    await forbidden(
      await admin.client.request("POST", "/api/roles", {
        name: "Shadow owner",
        description: "",
        permissions: ["admin.owners"],
      }),
      /admin\.owners/,
    );
  });

  it("cannot edit or delete a custom role that holds more than it does, nor one an owner holds", async () => {
    const high = await org.owner.json<{ data: { id: string } }>(
      "POST",
      "/api/roles",
      { name: "Owner deputy", description: "", permissions: ["admin.owners", "notes.read"] },
      201,
    );
    await forbidden(
      await admin.client.request("PATCH", `/api/roles/${high.data.id}`, { permissions: ["notes.read"] }),
      /admin\.owners/,
    );
    await forbidden(await admin.client.request("DELETE", `/api/roles/${high.data.id}`), /admin\.owners/);
    const plain = await org.owner.json<{ data: { id: string } }>(
      "POST",
      "/api/roles",
      { name: "Readers", description: "", permissions: ["notes.read"] },
      201,
    );
    await org.owner.json("PUT", `/api/users/${org.ownerId}/roles`, { roleIds: [roles.owner, plain.data.id] });
    await forbidden(
      await admin.client.request("PATCH", `/api/roles/${plain.data.id}`, { description: "changed" }),
      /system administrator/,
    );
    await forbidden(
      await admin.client.request("DELETE", `/api/roles/${plain.data.id}`),
      /system administrator/,
    );
    await org.owner.json("PUT", `/api/users/${org.ownerId}/roles`, { roleIds: [roles.owner] });
  });

  it("cannot map a directory group to the Owner role", async () => {
    await forbidden(
      await admin.client.request("PUT", "/api/sso/saml", {
        enabled: false,
        label: "IdP",
        config: {
          idpEntityId: "https://idp.example/",
          idpSsoUrl: "https://idp.example/sso",
          idpCerts: [selfSigned("ceiling-idp").cert],
        },
        groupRoles: [{ group: "everyone", roleId: roles.owner }],
        defaultRoleId: null,
      }),
      /admin\.owners/,
    );
  });
});

describe("within the ceiling", () => {
  it("an administrator resets a member's password: their sessions end and their API keys stop working", async () => {
    const key = await member.client.json<{ data: { key: string } }>(
      "POST",
      "/api/api-keys",
      { name: "script", permissions: ["notes.read"] },
      201,
    );
    const viaKey = new Client(srv, { apiKey: key.data.key });
    expect((await viaKey.request("GET", "/api/auth/me")).status).toBe(200);
    const r = await admin.client.request("POST", `/api/users/${member.id}/reset-password`, {
      password: NEW_PASSWORD,
    });
    expect(r.status).toBe(204);
    expect((await member.client.request("GET", "/api/auth/me")).status).toBe(401);
    expect((await viaKey.request("GET", "/api/auth/me")).status).toBe(401);
    member.client = await signIn(srv, member.email, NEW_PASSWORD);
    const rec = await org.owner.json<{ data: { details: Record<string, number> }[] }>(
      "GET",
      `/api/audit?action=user.password_reset&targetId=${member.id}`,
    );
    expect(rec.data[0]?.details).toEqual({ sessionsEnded: 1, apiKeysRevoked: 1 });
  });

  it("an administrator acts on another administrator (equal permissions) and the owner on anyone", async () => {
    const other = await createMember(org, ["admin"], "admin2");
    expect(
      (await admin.client.request("PATCH", `/api/users/${other.id}`, { displayName: "Second admin" })).status,
    ).toBe(200);
    expect(
      (await org.owner.request("PUT", `/api/users/${other.id}/roles`, { roleIds: [roles.owner] })).status,
    ).toBe(200);
    // Now an owner: the administrator can no longer touch them.
    await forbidden(
      await admin.client.request("PATCH", `/api/users/${other.id}`, { displayName: "x" }),
      /admin\.owners/,
    );
  });

  it("an owner who is not a system administrator cannot change the system administrator", async () => {
    const coOwner = await createMember(org, ["owner"], "coowner");
    await forbidden(
      await coOwner.client.request("POST", `/api/users/${org.ownerId}/reset-password`, {
        password: NEW_PASSWORD,
      }),
      /Only a system administrator/,
    );
    await forbidden(
      await coOwner.client.request("PATCH", `/api/users/${org.ownerId}`, { status: "deactivated" }),
      /Only a system administrator/,
    );
    // ...but the system administrator can change them.
    expect(
      (await org.owner.request("PATCH", `/api/users/${coOwner.id}`, { displayName: "Co-owner" })).status,
    ).toBe(200);
  });

  it("an API key acts only within its own permissions", async () => {
    const key = await admin.client.json<{ data: { key: string } }>(
      "POST",
      "/api/api-keys",
      { name: "people", permissions: ["admin.users", "users.read"] },
      201,
    );
    const viaKey = new Client(srv, { apiKey: key.data.key });
    // The member holds notes and chat permissions the key does not.
    await forbidden(
      await viaKey.request("PATCH", `/api/users/${member.id}`, { displayName: "x" }),
      /permissions you do not/,
    );
  });
});
