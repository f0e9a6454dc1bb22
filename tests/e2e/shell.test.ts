import { existsSync, mkdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AxeBuilder } from "@axe-core/playwright";
import type { Browser } from "playwright-core";
import { spawnCore, waitForOk, type CoreProcess } from "../support/process.js";
import { launchBrowser, watchPage } from "../support/browser.js";

const SHOTS = new URL("../../test-results/", import.meta.url).pathname;
let core: CoreProcess;
let url: string;
let browser: Browser;

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

describe("the served web UI", () => {
  it("shows the login page with no console errors and no request to another host", async () => {
    const page = await (await browser.newContext()).newPage();
    const watch = watchPage(page);
    const res = await page.goto(`${url}/login`, { waitUntil: "networkidle" });
    expect(res?.status()).toBe(200);
    expect(res?.headers()["content-security-policy"]).toContain("script-src 'self'");
    await expect(page.getByRole("heading", { name: "Sign in" }).isVisible()).resolves.toBe(true);
    await expect(page.getByText("Version 0.1.0").isVisible()).resolves.toBe(true);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page.getByRole("alert").textContent()).resolves.toContain(
      "Enter your username and password",
    );
    await page.screenshot({ path: `${SHOTS}login.png`, fullPage: true });
    const axe = await new AxeBuilder({ page }).analyze();
    expect(axe.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await page.close();
  });

  it("navigates to every module, keyboard first, in light and dark themes", async () => {
    const page = await (await browser.newContext()).newPage();
    const watch = watchPage(page);
    await page.goto(`${url}/`, { waitUntil: "networkidle" });
    await expect(page.getByRole("heading", { name: "Welcome to WorkSynapse" }).isVisible()).resolves.toBe(
      true,
    );
    const nav = page.getByRole("navigation", { name: "Main navigation" });
    const modules = ["Assistant", "Knowledge base", "Projects", "Chat", "Notes", "Calendar", "Workflows"];
    for (const name of [
      ...modules,
      "Integrations",
      "Productivity",
      "Analytics",
      "Organization",
      "AI models",
      "Audit log",
    ]) {
      await expect(nav.getByRole("link", { name, exact: true }).count(), name).resolves.toBe(1);
    }
    // The first Tab reaches the skip link; Enter on a nav link opens the module.
    await page.keyboard.press("Tab");
    await expect(page.evaluate(() => document.activeElement?.textContent)).resolves.toBe("Skip to content");
    await nav.getByRole("link", { name: "Projects" }).focus();
    await page.keyboard.press("Enter");
    await page.waitForURL(`${url}/projects`);
    await expect(page.getByRole("heading", { name: "Nothing here yet" }).isVisible()).resolves.toBe(true);
    await expect(nav.getByRole("link", { name: "Projects" }).getAttribute("aria-current")).resolves.toBe(
      "page",
    );

    await page.getByLabel("Theme").selectOption("dark");
    await expect(page.evaluate(() => document.documentElement.dataset.theme)).resolves.toBe("dark");
    await page.reload({ waitUntil: "networkidle" });
    await expect(page.evaluate(() => document.documentElement.dataset.theme)).resolves.toBe("dark");
    await page.screenshot({ path: `${SHOTS}projects-dark.png`, fullPage: true });
    const axe = await new AxeBuilder({ page }).analyze();
    expect(axe.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);

    const missing = await page.goto(`${url}/no-such-module`, { waitUntil: "networkidle" });
    expect(missing?.status()).toBe(200); // the SPA shell answers; the router shows the not-found page
    await expect(page.getByRole("heading", { name: "This page does not exist." }).isVisible()).resolves.toBe(
      true,
    );
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await page.close();
  });

  it("serves hashed assets as immutable and unknown asset paths as 404", async () => {
    const html = await (await fetch(`${url}/login`)).text();
    const boot = /src="(\/_app\/immutable\/boot\/[0-9a-f]+\.js)"/.exec(html)?.[1];
    expect(boot).toBeDefined();
    const asset = await fetch(`${url}${boot}`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get("cache-control")).toContain("immutable");
    expect((await fetch(`${url}/_app/immutable/nope.js`)).status).toBe(404);
  });
});
