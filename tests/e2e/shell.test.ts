import { existsSync, mkdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AxeBuilder } from "@axe-core/playwright";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { spawnCore, waitForOk, type CoreProcess } from "../support/process.js";
import { launchBrowser, watchPage, type PageWatch } from "../support/browser.js";

const SHOTS = new URL("../../test-results/", import.meta.url).pathname;
const ADMIN = {
  org: "St Mary Hospital",
  name: "Ada Admin",
  email: "ada@stmary.example",
  password: "lantern-harbor-violet-7",
};
const MEMBER = { name: "Mo Member", email: "mo@stmary.example", password: "quiet-orchard-river-19" };
let core: CoreProcess;
let url: string;
let browser: Browser;

async function newPage(): Promise<{ ctx: BrowserContext; page: Page; watch: PageWatch }> {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  return { ctx, page, watch: watchPage(page) };
}
const axe = async (page: Page) =>
  (await new AxeBuilder({ page }).analyze()).violations.map((v) => `${v.id}: ${v.help}`);

beforeAll(async () => {
  if (!existsSync(new URL("../../ui/build/index.html", import.meta.url))) {
    throw new Error("the UI is not built: run `npm run build` first (npm test does)");
  }
  mkdirSync(SHOTS, { recursive: true });
  // As an admin runs it: no DATABASE_URL, no NATS_URL.
  core = spawnCore();
  url = await core.url;
  await waitForOk(`${url}/readyz`);
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  core?.child.kill("SIGTERM");
  await core?.exit;
});

describe("the web UI, from first run to a member's sign-out", () => {
  it("sends a new installation to the setup wizard, which creates the organization and signs the admin in", async () => {
    const { ctx, page, watch } = await newPage();
    const res = await page.goto(`${url}/login`, { waitUntil: "networkidle" });
    expect(res?.headers()["content-security-policy"]).toContain("script-src 'self'");
    await page.waitForURL(`${url}/setup`);
    await page.getByRole("heading", { name: "Set up WorkSynapse" }).waitFor();
    expect(await axe(page)).toEqual([]);
    await page.getByLabel("Organization name").fill(ADMIN.org);
    await page.getByLabel("Your name").fill(ADMIN.name);
    await page.getByLabel("Your email address").fill(ADMIN.email);
    await page.getByLabel("Password (at least 12 characters)").fill(ADMIN.password);
    await page.getByLabel("Repeat the password").fill(ADMIN.password);
    await page.screenshot({ path: `${SHOTS}setup.png`, fullPage: true });
    await page.getByRole("button", { name: "Create organization" }).click();
    await page.waitForURL(`${url}/admin/users`);
    await page.getByRole("cell", { name: ADMIN.email }).waitFor();

    // The admin adds a member with the form.
    const add = page.locator("section", { has: page.getByRole("heading", { name: "Add a person" }) });
    await add.getByLabel("Name", { exact: true }).fill(MEMBER.name);
    await add.getByLabel("Email", { exact: true }).fill(MEMBER.email);
    await add.getByLabel("Initial password (share it with them)").fill(MEMBER.password);
    await add.getByRole("button", { name: "Create" }).click();
    await page.getByText(`${MEMBER.name} can now sign in.`).waitFor();
    await page.getByRole("cell", { name: MEMBER.email }).waitFor();
    await page.screenshot({ path: `${SHOTS}users.png`, fullPage: true });
    expect(await axe(page)).toEqual([]);

    // Every module is reachable from the navigation, keyboard first; themes persist.
    const nav = page.getByRole("navigation", { name: "Main navigation" });
    for (const name of [
      "Assistant",
      "Knowledge base",
      "Projects",
      "Chat",
      "Notes",
      "Calendar",
      "Workflows",
      "Integrations",
      "Analytics",
      "Organization",
      "Audit log",
    ]) {
      await expect(nav.getByRole("link", { name, exact: true }).count(), name).resolves.toBe(1);
    }
    await page.goto(`${url}/`, { waitUntil: "networkidle" });
    await page.keyboard.press("Tab");
    await expect(page.evaluate(() => document.activeElement?.textContent)).resolves.toBe("Skip to content");
    await nav.getByRole("link", { name: "Workflows" }).focus();
    await page.keyboard.press("Enter");
    await page.waitForURL(`${url}/workflows`);
    await page.getByRole("heading", { name: "Nothing here yet" }).waitFor();
    await page.getByLabel("Theme").selectOption("dark");
    await page.reload({ waitUntil: "networkidle" });
    await expect(page.evaluate(() => document.documentElement.dataset.theme)).resolves.toBe("dark");
    await page.screenshot({ path: `${SHOTS}workflows-dark.png`, fullPage: true });
    expect(await axe(page)).toEqual([]);

    // The roles editor: a custom role from the permission list, then edited.
    await page.goto(`${url}/admin/roles`, { waitUntil: "networkidle" });
    const form = page.locator("form", { has: page.getByRole("heading", { name: "New custom role" }) });
    await form.getByLabel("Name", { exact: true }).fill("Reviewers");
    await form.getByRole("checkbox", { name: /audit\.read/ }).check();
    await form.getByRole("button", { name: "Create" }).click();
    const row = page.getByRole("row", { name: /Reviewers/ });
    await row.getByText("audit.read").waitFor();
    await row.getByRole("button", { name: "Edit Reviewers" }).click();
    await page.getByRole("checkbox", { name: /audit\.export/ }).check();
    await page.getByRole("button", { name: "Save" }).click();
    await row.getByText("audit.export audit.read").waitFor();
    expect(await axe(page)).toEqual([]);

    // The audit log shows the setup and the new member.
    await page.goto(`${url}/admin/audit`, { waitUntil: "networkidle" });
    await page.getByRole("cell", { name: "user.create" }).waitFor();

    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(`${url}/login`);
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  });

  it("signs the member in; the administration pages are refused to them; they sign out", async () => {
    const { ctx, page, watch } = await newPage();
    await page.goto(`${url}/admin/users`, { waitUntil: "networkidle" });
    await page.waitForURL(/\/login\?next=/);
    await page.getByLabel("Username or email").fill(MEMBER.email);
    await page.getByLabel("Password").fill("not-the-password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").getByText("The email address or password is wrong").waitFor();
    await page.getByLabel("Password").fill(MEMBER.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    // Back to the page asked for: the member may see people, but not manage them.
    await page.waitForURL(`${url}/admin/users`);
    await page.getByRole("cell", { name: ADMIN.email }).waitFor();
    await expect(page.getByRole("heading", { name: "Add a person" }).count()).resolves.toBe(0);
    const nav = page.getByRole("navigation", { name: "Main navigation" });
    await expect(nav.getByRole("link", { name: "Audit log" }).count()).resolves.toBe(0);
    await page.goto(`${url}/admin/audit`, { waitUntil: "networkidle" });
    await page.getByRole("alert").getByText("You do not have access to this page").waitFor();
    await page.screenshot({ path: `${SHOTS}member-refused.png`, fullPage: true });
    // The API refuses too, whatever the page shows.
    const status = await page.evaluate(async () => (await fetch("/api/audit")).status);
    expect(status).toBe(403);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(`${url}/login`);
    await page.goto(`${url}/`, { waitUntil: "networkidle" });
    await page.waitForURL(/\/login/);
    // Expected refusals only: the signed-out session check (401), the wrong password (401) and the 403 asked for above.
    expect(
      watch.consoleErrors.filter((e) => !/^Failed to load resource: .* status of (401|403)/.test(e)),
    ).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  });

  it("serves hashed assets as immutable and unknown asset paths as 404", async () => {
    const html = await (await fetch(`${url}/login`)).text();
    const boot = /src="(\/_app\/immutable\/boot\/[0-9a-f]+\.js)"/.exec(html)?.[1];
    expect(boot).toBeDefined();
    const asset = await fetch(`${url}${boot}`);
    expect(asset.headers.get("cache-control")).toContain("immutable");
    expect((await fetch(`${url}/_app/immutable/nope.js`)).status).toBe(404);
  });
});
