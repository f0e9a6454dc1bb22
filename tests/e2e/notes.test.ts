import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { addPerson, setUpInstallation, spawnCore, waitForOk, type CoreProcess } from "../support/process.js";
import { axeViolations, launchBrowser, signInInBrowser, watchPage } from "../support/browser.js";
import { NATS_URL } from "../support/env.js";

const SHOTS = new URL("../../test-results/", import.meta.url).pathname;
const ADMIN = {
  organizationName: "Ward Four",
  name: "Ada Admin",
  email: "ada@ward.example",
  password: "lantern-harbor-violet-7",
};
const BOB = { email: "bob@ward.example", displayName: "Bob Reader", password: "quiet-orchard-mango-81" };
let core: CoreProcess;
let url: string;
let browser: Browser;

const headers = (cookie?: string) => ({
  "content-type": "application/json",
  "x-requested-with": "worksynapse",
  origin: url,
  ...(cookie ? { cookie } : {}),
});

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // The embedded database (no DATABASE_URL): the default single-node install runs notes and search too.
  core = spawnCore({
    WORKSYNAPSE_DATA_DIR: mkdtempSync(path.join(tmpdir(), "ws-e2e-notes-")),
    NATS_URL,
    WORKSYNAPSE_NATS_PREFIX: `e2enotes${process.pid}`,
  });
  url = await core.url;
  await waitForOk(`${url}/readyz`);
  const cookie = await setUpInstallation(url, ADMIN);
  await addPerson(url, cookie, BOB);
  browser = await launchBrowser();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  core?.child.kill("SIGTERM");
  await core?.exit;
});

async function signInAs(page: Page, email: string, password: string) {
  await signInInBrowser(page, url, email, password);
  await page
    .getByRole("navigation", { name: "Main navigation" })
    .getByRole("link", { name: "Notes" })
    .click();
  await page.waitForURL(`${url}/notes`);
}

const axe = axeViolations;

describe("notes in the browser", () => {
  it("writes a tagged note in a folder, shares it view-only; the other person finds it by search and cannot edit it", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const watch = watchPage(page);
    await signInAs(page, ADMIN.email, ADMIN.password);

    // A folder, then a note in it (Alt+N), with a title, Markdown text and tags.
    await page.getByLabel("Folder name").fill("Runbooks");
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByRole("button", { name: /^Runbooks/ }).click();
    await page.keyboard.press("Alt+N");
    const title = page.getByRole("textbox", { name: "Title" });
    await title.waitFor();
    await title.fill("Ventilator failover drill");
    await page
      .getByRole("textbox", { name: "Note text (Markdown)" })
      .fill("# Steps\n\nSwitch to the **backup** unit within 30 seconds.\n\nCode word: zebraquartz.");
    await page.getByText("All changes saved").waitFor();
    await page.getByRole("article", { name: "Preview" }).getByRole("heading", { name: "Steps" }).waitFor();
    await page.getByRole("textbox", { name: "Tags" }).fill("drill, icu");
    await page.getByRole("textbox", { name: "Tags" }).press("Enter");
    await page.getByRole("button", { name: "#icu 1" }).waitFor();
    expect(await page.getByRole("combobox", { name: "Folder" }).inputValue()).not.toBe("");
    expect(await axe(page)).toEqual([]);

    // Share view-only with Bob.
    await page.getByRole("button", { name: "Share", exact: true }).click();
    const dialog = page.getByRole("dialog", { name: "Share note" });
    await dialog
      .getByRole("combobox", { name: "Who" })
      .selectOption({ label: `${BOB.displayName} <${BOB.email}>` });
    await dialog.getByRole("button", { name: "Add" }).click();
    await dialog.getByRole("cell", { name: `${BOB.displayName} <${BOB.email}>`, exact: true }).waitFor();
    expect(await axe(page)).toEqual([]);
    await dialog.getByRole("button", { name: "Save" }).click();
    await dialog.waitFor({ state: "hidden" });
    await page.screenshot({ path: `${SHOTS}notes-owner.png`, fullPage: true });
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();

    // Bob finds it by search, sees the highlighted word, and can read but not edit it.
    const bobCtx = await browser.newContext();
    const bobPage = await bobCtx.newPage();
    const bobWatch = watchPage(bobPage);
    await signInAs(bobPage, BOB.email, BOB.password);
    await bobPage.keyboard.press("/");
    await bobPage.keyboard.type("zebraquartz");
    await bobPage.keyboard.press("Enter");
    const hit = bobPage.getByRole("button", { name: /Ventilator failover drill/ });
    await hit.waitFor();
    expect(await hit.locator("mark").first().textContent()).toBe("zebraquartz");
    await hit.click();
    await bobPage.getByText("View only").waitFor();
    await bobPage.getByRole("article", { name: "Preview" }).getByText("backup").waitFor();
    expect(await bobPage.getByRole("textbox", { name: "Title" }).getAttribute("readonly")).not.toBeNull();
    expect(await bobPage.getByRole("textbox", { name: "Note text (Markdown)" }).count()).toBe(0);
    expect(await bobPage.getByRole("button", { name: "Share", exact: true }).count()).toBe(0);
    expect(await bobPage.getByRole("button", { name: "Move to trash" }).count()).toBe(0);
    // Typing into the read-only title changes nothing on the server.
    await bobPage.getByRole("textbox", { name: "Title" }).press("End");
    await bobPage.keyboard.type(" edited by Bob");
    await bobPage.getByText("All changes saved").waitFor();
    expect(await axe(bobPage)).toEqual([]);
    await bobPage.screenshot({ path: `${SHOTS}notes-viewer.png`, fullPage: true });
    expect(bobWatch.consoleErrors).toEqual([]);
    expect(bobWatch.foreignRequests).toEqual([]);
    await bobCtx.close();
  }, 90_000);

  it("a save that crosses someone else's is caught, and Merge keeps both people's lines", async () => {
    const login = await fetch(`${url}/api/auth/login`, {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ email: ADMIN.email, password: ADMIN.password }),
    });
    const cookie = login.headers.getSetCookie()[0]?.split(";")[0];
    const created = (await (
      await fetch(`${url}/api/notes`, {
        method: "POST",
        headers: headers(cookie),
        body: JSON.stringify({
          title: "Shift handover",
          body: "Bed 1: stable.\nBed 2: stable.\nBed 3: stable.",
        }),
      })
    ).json()) as { data: { id: string } };
    const id = created.data.id;

    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const watch = watchPage(page);
    await signInAs(page, ADMIN.email, ADMIN.password);
    await page.getByRole("button", { name: /Shift handover/ }).click();
    const text = page.getByRole("textbox", { name: "Note text (Markdown)" });
    await text.waitFor();
    // Meanwhile, in another session, the last line changes.
    const other = await fetch(`${url}/api/notes/${id}`, {
      method: "PUT",
      headers: headers(cookie),
      body: JSON.stringify({
        title: "Shift handover",
        body: "Bed 1: stable.\nBed 2: stable.\nBed 3: needs review at 14:00.",
        baseVersion: 1,
      }),
    });
    expect(other.status).toBe(200);
    await text.fill("Bed 1: discharged.\nBed 2: stable.\nBed 3: stable.");
    await page.getByRole("alert").filter({ hasText: "saved this note while you were editing" }).waitFor();
    await page.getByRole("button", { name: "Merge" }).click();
    await page.getByText("All changes saved").waitFor();
    const saved = (await (await fetch(`${url}/api/notes/${id}`, { headers: headers(cookie) })).json()) as {
      data: { body: string; version: number };
    };
    expect(saved.data).toEqual(
      expect.objectContaining({
        body: "Bed 1: discharged.\nBed 2: stable.\nBed 3: needs review at 14:00.",
        version: 3,
      }),
    );
    expect(watch.consoleErrors.filter((e) => !e.includes("409"))).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  }, 90_000);
});
