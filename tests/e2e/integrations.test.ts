// The integrations page in a real browser: an administrator sees the installed plugins (one broken plugin
// reported, the rest running), enables one, creates a connection from the form the plugin's schema renders,
// tests it against a local HTTP server, and reads a signed delivery in the delivery log.
import { mkdirSync, mkdtempSync, symlinkSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { setUpInstallation, spawnCore, waitForOk, type CoreProcess } from "../support/process.js";
import { axeViolations, launchBrowser, signInInBrowser, watchPage } from "../support/browser.js";
import { NATS_URL } from "../support/env.js";
import { signGeneric } from "../../core/src/platform/gateway/webhooks.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ADMIN = {
  organizationName: "Ward Nine",
  name: "Ada Admin",
  email: "ada@nine.example",
  password: "lantern-harbor-violet-7",
};
let core: CoreProcess;
let url: string;
let browser: Browser;
const seen: string[] = [];
const site = http.createServer((req, res) => {
  seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? ""}`);
  res.writeHead(200, { "content-type": "application/json" });
  res.end("{}");
});
let siteUrl: string;

beforeAll(async () => {
  // The shipped plugins and one whose setup throws, side by side.
  const plugins = mkdtempSync(path.join(tmpdir(), "ws-e2e-plugins-"));
  for (const p of ["webhook", "mattermost"])
    symlinkSync(path.join(ROOT, "plugins", p), path.join(plugins, p));
  symlinkSync(path.join(ROOT, "tests/fixtures/plugins/thrower"), path.join(plugins, "thrower"));
  await new Promise<void>((r) => site.listen(0, "127.0.0.1", () => r()));
  siteUrl = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
  const dataDir = mkdtempSync(path.join(tmpdir(), "ws-e2e-int-"));
  mkdirSync(dataDir, { recursive: true });
  core = spawnCore({
    WORKSYNAPSE_DATA_DIR: dataDir,
    NATS_URL,
    WORKSYNAPSE_NATS_PREFIX: `e2eint${process.pid}`,
    WORKSYNAPSE_INTEGRATIONS_PLUGINS_DIR: plugins,
    WORKSYNAPSE_INTEGRATIONS_ALLOW_LOOPBACK: "true",
  });
  url = await core.url;
  await waitForOk(`${url}/readyz`);
  await setUpInstallation(url, ADMIN);
  browser = await launchBrowser();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  site.close();
  core?.child.kill("SIGTERM");
  await core?.exit;
});

describe("integrations in the browser", () => {
  it("enables a plugin, creates and tests a connection, and reads a signed delivery", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const watch = watchPage(page);
    await signInInBrowser(page, url, ADMIN.email, ADMIN.password);
    await page.goto(`${url}/admin/integrations`, { waitUntil: "networkidle" });
    const plugins = page.getByRole("region", { name: "Plugins" });
    await plugins.getByText("setup failed: boom").waitFor();
    await plugins.getByRole("checkbox", { name: "Enabled for this organization: Webhook / HTTP" }).check();

    const form = page.getByRole("form", { name: "New connection" });
    await form.getByLabel("Plugin").selectOption({ label: "Webhook / HTTP" });
    await form.getByLabel("Name", { exact: true }).fill("Build server");
    await form.getByLabel("Base URL").fill(siteUrl);
    await form.getByLabel("Credentials").selectOption({ label: "Access token" });
    await form.getByLabel("Token", { exact: true }).fill("build-token-77");
    await form.getByLabel("sendPath").fill("/notify");
    await form.getByRole("button", { name: "Create connection" }).click();
    const secret = (await page.locator("#secret-once code").textContent()) ?? "";
    expect(secret.length).toBeGreaterThan(30);

    const details = page.getByRole("region", { name: "Build server" });
    await details.getByRole("button", { name: "Test" }).click();
    await page.locator("#test-report").getByText("answered 200").waitFor();
    expect(seen.at(-1)).toBe("GET / Bearer build-token-77");

    // A system on the site sends an event, signed with the secret shown once.
    const hookUrl = (await details.locator("code").first().textContent()) ?? "";
    const body = JSON.stringify({ summary: "nightly build passed", token: "should-be-hidden" });
    const sent = await fetch(hookUrl, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-webhook-event": "build",
        ...signGeneric(secret, body),
      },
      body,
    });
    expect(sent.status).toBe(202);
    // The delivery is stored when acknowledged; its processing follows from the bus. Reopen until it shows.
    const recorded = details.getByText("build: nightly build passed");
    for (let i = 0; i < 40 && !(await recorded.isVisible()); i++) {
      await page
        .getByRole("region", { name: "Connections" })
        .getByRole("button", { name: "Build server" })
        .click();
      await details.getByRole("button", { name: "build" }).click();
      await page.locator("#delivery-payload").waitFor();
      if (!(await recorded.isVisible())) await new Promise((r) => setTimeout(r, 500));
    }
    const payload = page.locator("#delivery-payload");
    await payload.getByText("nightly build passed").waitFor();
    expect(await payload.textContent()).toContain("[redacted]");
    await recorded.waitFor();

    expect(await axeViolations(page)).toEqual([]);
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  });
});
