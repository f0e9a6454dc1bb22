// Enterprise sign-in end to end in Chromium: an admin configures SAML (against a real SimpleSAMLphp IdP) and
// LDAP (against a real slapd) on the Single sign-on page with its test buttons; people then sign in through
// both from the login page; a group removed at the directory ends the person's session after a sync.
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { Attribute, Change } from "ldapts";
import { apiAs, setUpInstallation, spawnCore, waitForOk, type CoreProcess } from "../support/process.js";
import { axeViolations, launchBrowser, signInInBrowser, watchPage } from "../support/browser.js";
import { NATS_URL } from "../support/env.js";
import { groupLdif, OUS, personLdif, startSlapd, type Slapd } from "../support/slapd.js";
import { startSamlIdp, type SamlIdp } from "../support/saml-idp.js";

const SHOTS = new URL("../../test-results/", import.meta.url).pathname;
const ADMIN = {
  organizationName: "Northwind Clinic",
  name: "Ada Admin",
  email: "ada@northwind.example",
  password: "lantern-harbor-violet-7",
};
const SAM = { username: "sam", password: "saml-user-secret-9", email: "sam@northwind.example" };
const BOB = { login: "bob", password: "bob-directory-pass" };
const SVC = { dn: "cn=svc,dc=corp,dc=example", password: "service-account-secret" };
const STAFF = "cn=staff,ou=groups,dc=corp,dc=example";

let core: CoreProcess;
let url: string;
let browser: Browser;
let dir: Slapd;
let idp: SamlIdp;
let admin: { ctx: BrowserContext; page: Page };

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  dir = await startSlapd(
    OUS +
      `dn: ${SVC.dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: svc\nuserPassword: ${SVC.password}\n\n` +
      personLdif("alice", "Alice Archer", "alice@northwind.example", "alice-directory-pass") +
      personLdif("bob", "Bob Baker", "bob@northwind.example", BOB.password) +
      groupLdif("staff", ["alice", "bob"]),
  );
  // The IdP on another loopback address is another site to the browser (a different port alone is not): its
  // POST to our assertion consumer is cross-site, as a real IdP's is.
  idp = await startSamlIdp(
    [
      {
        username: SAM.username,
        password: SAM.password,
        attributes: { mail: [SAM.email], displayName: ["Sam Saml"], groups: ["it-admins", "everyone"] },
      },
    ],
    "127.0.0.2",
  );
  core = spawnCore({
    WORKSYNAPSE_DATA_DIR: mkdtempSync(path.join(tmpdir(), "ws-e2e-sso-")),
    NATS_URL,
    WORKSYNAPSE_NATS_PREFIX: `e2esso${process.pid}`,
  });
  url = await core.url;
  await waitForOk(`${url}/readyz`);
  const cookie = await setUpInstallation(url, ADMIN);
  // Single sign-on comes with the professional plan: the system administrator (the first owner) sets it.
  const api = apiAs(url, cookie);
  const orgs = await api<{ data: { id: string }[] }>("GET", "/api/system/organizations");
  await api("PATCH", `/api/system/organizations/${orgs.data[0]?.id}`, { plan: "professional" });
  const sp = (
    (await (await fetch(`${url}/api/sso`, { headers: { cookie } })).json()) as {
      data: { serviceProvider: { entityId: string; acsUrl: string; sloUrl: string } };
    }
  ).data.serviceProvider;
  // The IdP admin's side: register our SP (entity id and ACS URL from our metadata).
  idp.addSp(sp.entityId, sp.acsUrl, sp.sloUrl);
  browser = await launchBrowser();
  const ctx = await browser.newContext();
  admin = { ctx, page: await ctx.newPage() };
}, 120_000);
afterAll(async () => {
  await browser?.close();
  core?.child.kill("SIGTERM");
  await core?.exit;
  await idp?.stop();
  await dir?.stop();
});

/** Fills the IdP's own login form (SimpleSAMLphp's username/password page). */
async function idpLogin(page: Page, username: string, password: string) {
  await page.waitForURL((u) => u.origin === idp.url);
  await page.locator('input[name="username"]').fill(username);
  await page.locator('input[name="password"]').fill(password);
  await page.locator("#submit_button").click();
}

const me = async (page: Page) => {
  const r = await page.request.get(`${url}/api/auth/me`);
  return {
    status: r.status(),
    body: r.ok() ? ((await r.json()) as { data: { email: string; roles: string[] } }).data : null,
  };
};

describe("single sign-on in the browser", () => {
  it("the admin configures SAML from the IdP's metadata and runs a test sign-in through the real IdP", async () => {
    const { page } = admin;
    const watch = watchPage(page);
    await signInInBrowser(page, url, ADMIN.email, ADMIN.password);
    await page.goto(`${url}/admin/sso`, { waitUntil: "networkidle" });
    await page.getByRole("heading", { name: "Single sign-on", level: 1 }).waitFor();
    const saml = page.getByRole("form", { name: "SAML 2.0 identity provider" });
    await expect(saml.getByText(`${url}/api/sso/saml/`).first().isVisible()).resolves.toBe(true);
    // Import the IdP metadata as a file, as an admin would after downloading it from the IdP.
    const metadata = await (await fetch(idp.metadataUrl)).text();
    await saml.getByLabel("IdP metadata file").setInputFiles({
      name: "idp-metadata.xml",
      mimeType: "application/xml",
      buffer: Buffer.from(metadata),
    });
    await saml.getByText("Metadata read").waitFor();
    expect(await saml.getByLabel("IdP entity ID (issuer)").inputValue()).toBe(idp.entityId);
    await saml.getByLabel("Button label").fill("Northwind IdP");
    await saml.getByRole("button", { name: "Add a mapping" }).click();
    await saml.getByLabel("Group 1").fill("it-admins");
    await saml.getByLabel("Role 1").selectOption({ label: "Administrator" });
    await saml.getByLabel("Enabled").check();
    await saml.getByRole("button", { name: "Save" }).click();
    await saml.getByText("Saved.").waitFor();
    expect(await axeViolations(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}sso-admin.png`, fullPage: true });

    await saml.getByRole("button", { name: "Test sign-in" }).click();
    await idpLogin(page, SAM.username, SAM.password);
    await page.getByRole("heading", { name: "SAML test succeeded" }).waitFor();
    expect(await page.locator("#mapped-roles").textContent()).toBe("Administrator");
    expect(await page.textContent("body")).toContain(SAM.email);
    // A test signs nobody in: the admin's own session is unchanged.
    expect((await me(page)).body?.email).toBe(ADMIN.email);
    expect(watch.foreignRequests).toEqual([]);
  });

  it("the admin configures LDAP with StartTLS and the test buttons show the connection, a user and the mapping", async () => {
    const { page } = admin;
    const watch = watchPage(page);
    await page.goto(`${url}/admin/sso`, { waitUntil: "networkidle" });
    const ldap = page.getByRole("form", { name: "LDAP / Active Directory" });
    await ldap.getByLabel("Button label").fill("Northwind directory");
    await ldap.getByLabel("Server URL").fill(dir.url);
    await ldap.getByLabel("Connection security").selectOption("starttls");
    await ldap.getByLabel("CA certificate (PEM; empty uses the system's)").fill(dir.ca.cert);
    await ldap.getByLabel("Service account DN").fill(SVC.dn);
    await ldap.getByLabel("Service account password").fill(SVC.password);
    await ldap.getByLabel("User search base").fill("ou=people,dc=corp,dc=example");
    await ldap
      .getByLabel("User filter ({login} is the login name)")
      .fill("(&(objectClass=inetOrgPerson)(uid={login}))");
    await ldap.getByLabel("Group search base").fill("ou=groups,dc=corp,dc=example");
    await ldap.getByRole("button", { name: "Test connection" }).click();
    await ldap.getByText("Connected (starttls); the filter finds 2 people").waitFor();
    await ldap.getByRole("button", { name: "Add a mapping" }).click();
    await ldap.getByLabel("Group 1").fill(STAFF);
    await ldap.getByLabel("Role 1").selectOption({ label: "Member" });
    await ldap.getByLabel("Enabled").check();
    await ldap.getByRole("button", { name: "Save" }).click();
    await ldap.getByText("Saved.").waitFor();

    const tester = page.getByRole("form", { name: "Test a user" });
    await tester.getByLabel("Login name to test").fill("bob");
    await tester.getByLabel("Their password (optional: checks the sign-in too)").fill(BOB.password);
    await tester.getByRole("button", { name: "Test a user" }).click();
    const facts = tester.getByRole("definition");
    await facts.filter({ hasText: "uid=bob,ou=people,dc=corp,dc=example" }).waitFor();
    await facts.filter({ hasText: "Member" }).waitFor();

    await ldap.getByRole("button", { name: "Preview mapping" }).click();
    const preview = page.getByRole("region", { name: "Who would get which role (2 people)" });
    await preview.getByRole("cell", { name: "alice", exact: true }).waitFor();
    expect(await preview.getByRole("row").count()).toBe(3);
    expect(await axeViolations(page)).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    expect(watch.consoleErrors).toEqual([]);
  });

  it("a person signs in through the IdP from the login page and lands in the app with the mapped role", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const watch = watchPage(page);
    await page.goto(`${url}/notes`, { waitUntil: "networkidle" });
    await page.waitForURL(/\/login/);
    await page.getByRole("link", { name: "Sign in with Northwind IdP" }).click();
    await idpLogin(page, SAM.username, SAM.password);
    await page.waitForURL(`${url}/notes`);
    await page.getByRole("navigation", { name: "Main navigation" }).waitFor();
    const who = await me(page);
    expect(who.body?.email).toBe(SAM.email);
    expect(who.body?.roles).toEqual(["admin"]);
    // Single logout: signing out here signs out at the IdP too, so the next sign-in asks for the password again.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(`${url}/login`);
    expect((await me(page)).status).toBe(401);
    await page.getByRole("link", { name: "Sign in with Northwind IdP" }).click();
    await idpLogin(page, SAM.username, SAM.password);
    await page.waitForURL(`${url}/`);
    expect((await me(page)).body?.email).toBe(SAM.email);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  });

  it("a person signs in with their directory account; a group removed at the directory ends the session after the sync", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const watch = watchPage(page);
    await page.goto(`${url}/login`, { waitUntil: "networkidle" });
    expect(await page.getByLabel("Sign in with").inputValue()).not.toBe("password");
    await page.getByLabel("Login name").fill(BOB.login);
    await page.getByLabel("Password", { exact: true }).fill(BOB.password);
    await page.screenshot({ path: `${SHOTS}sso-login.png`, fullPage: true });
    expect(await axeViolations(page)).toEqual([]);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(`${url}/`);
    expect((await me(page)).body?.roles).toEqual(["member"]);

    // The directory admin takes Bob out of staff; the WorkSynapse admin runs the sync.
    await dir.admin((c) =>
      c.modify(STAFF, [
        new Change({
          operation: "delete",
          modification: new Attribute({ type: "member", values: ["uid=bob,ou=people,dc=corp,dc=example"] }),
        }),
      ]),
    );
    await admin.page.goto(`${url}/admin/sso`, { waitUntil: "networkidle" });
    await admin.page
      .getByRole("form", { name: "LDAP / Active Directory" })
      .getByRole("button", { name: "Sync now" })
      .click();
    await admin.page.getByText("Sync started").waitFor();
    for (let i = 0; (await me(page)).status !== 401; i++) {
      if (i > 100) throw new Error("Bob's session did not end");
      await page.waitForTimeout(100);
    }
    // In the browser: the next navigation sends Bob to the sign-in page, and signing in again is refused.
    await page.goto(`${url}/notes`, { waitUntil: "networkidle" });
    await page.waitForURL(/\/login/);
    await page.getByLabel("Login name").fill(BOB.login);
    await page.getByLabel("Password", { exact: true }).fill(BOB.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "no access to WorkSynapse" }).waitFor();
    // The role is gone from his account (what the admin sees).
    const users = (await (await admin.page.request.get(`${url}/api/users?limit=200&offset=0`)).json()) as {
      data: { email: string; roles: { key: string }[] }[];
    };
    expect(users.data.find((u) => u.email === "bob@northwind.example")?.roles).toEqual([]);
    // The admin sees how Bob signs in, and why his last attempt was refused.
    await admin.page.goto(`${url}/admin/users`, { waitUntil: "networkidle" });
    await admin.page
      .getByRole("row", { name: /Bob Baker/ })
      .getByText("signs in with the directory")
      .waitFor();
    await admin.page.goto(`${url}/admin/audit`, { waitUntil: "networkidle" });
    await admin.page
      .getByRole("row")
      .filter({ hasText: "auth.sso_sign_in" })
      .filter({ hasText: "no_role" })
      .first()
      .waitFor();
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  });
});
