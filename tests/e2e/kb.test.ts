import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { spawnCore, waitForOk, type CoreProcess, sideloadTinyModel } from "../support/process.js";
import { axeViolations, launchBrowser, signInInBrowser, watchPage } from "../support/browser.js";
import { NATS_URL } from "../support/env.js";
import { makePdf } from "../support/kb-fixtures.js";

const SHOTS = new URL("../../test-results/", import.meta.url).pathname;
const ADMIN = {
  organizationName: "County Hospital",
  name: "Ada Admin",
  email: "ada@county.example",
  password: "lantern-harbor-violet-7",
};
let core: CoreProcess;
let url: string;
let browser: Browser;
let pdfPath: string;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const dataDir = mkdtempSync(path.join(tmpdir(), "ws-e2e-kb-"));
  const env = {
    WORKSYNAPSE_DATA_DIR: dataDir,
    NATS_URL,
    WORKSYNAPSE_NATS_PREFIX: `e2ekb${process.pid}`,
    WORKSYNAPSE_AI_THREADS: "1",
  };
  await sideloadTinyModel(env, "embedding");
  core = spawnCore(env);
  url = await core.url;
  await waitForOk(`${url}/readyz`);
  const r = await fetch(`${url}/api/auth/setup`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: url },
    body: JSON.stringify(ADMIN),
  });
  expect(r.status).toBe(201);
  pdfPath = path.join(dataDir, "stroke-pathway.pdf");
  writeFileSync(
    pdfPath,
    await makePdf([
      ["Stroke pathway. Scope and purpose of this protocol for the emergency department."],
      [
        "Thrombolysis window: give alteplase within four and a half hours of symptom onset after the CT scan.",
      ],
      ["Rehabilitation starts on the stroke unit within forty-eight hours."],
    ]),
  );
  browser = await launchBrowser();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  core?.child.kill("SIGTERM");
  await core?.exit;
});

const axe = axeViolations;

describe("knowledge base in the browser", () => {
  it("uploads a PDF, watches it reach Indexed, searches, and opens the cited page", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const watch = watchPage(page);
    await signInInBrowser(page, url, ADMIN.email, ADMIN.password);
    await page
      .getByRole("navigation", { name: "Main navigation" })
      .getByRole("link", { name: "Knowledge base" })
      .click();
    await page.waitForURL(`${url}/kb`);

    await page.getByLabel("New collection").fill("Emergency protocols");
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByRole("heading", { name: "Emergency protocols" }).waitFor();
    expect(await axe(page)).toEqual([]);

    // The file picker (drag and drop uses the same upload).
    await page.getByLabel("Choose files").setInputFiles(pdfPath);
    const row = page.getByRole("row", { name: /stroke-pathway\.pdf/ });
    await row.getByText("Indexed").waitFor({ timeout: 60_000 });
    expect(await row.getByRole("cell").nth(2).textContent()).toBe("3");
    // A name with accents, as Chromium sends it (raw UTF-8 in the multipart header), is kept as written.
    await page.getByLabel("Choose files").setInputFiles({
      name: "Résumé été.txt",
      mimeType: "text/plain",
      buffer: Buffer.from("Curriculum of the triage nurse, summer rota."),
    });
    await page
      .getByRole("row", { name: /Résumé été\.txt/ })
      .getByText("Indexed")
      .waitFor({ timeout: 60_000 });
    // A folder: its files keep their paths, so two index.md files in different folders are two documents.
    const folder = mkdtempSync(path.join(tmpdir(), "ws-e2e-folder-"));
    for (const [sub, text] of [
      ["triage", "Triage colours run from red to blue."],
      ["handover", "Handover uses the SBAR structure."],
    ] as const) {
      mkdirSync(path.join(folder, "wards", sub), { recursive: true });
      writeFileSync(path.join(folder, "wards", sub, "index.md"), `# ${sub}\n\n${text}\n`);
    }
    await page.getByLabel("Choose a folder").setInputFiles(path.join(folder, "wards"));
    for (const sub of ["triage", "handover"])
      await page
        .getByRole("row", { name: new RegExp(`wards/${sub}/index\\.md`) })
        .getByText("Indexed")
        .waitFor({ timeout: 60_000 });
    await page.screenshot({ path: `${SHOTS}kb-collection.png`, fullPage: true });

    await page.getByRole("link", { name: "Search documents" }).click();
    await page.waitForURL(`${url}/kb/search`);
    await page.getByLabel("Question or words").fill("alteplase thrombolysis window");
    await page.getByRole("button", { name: "Search", exact: true }).click();
    const cite = page.getByRole("link", { name: /stroke-pathway\.pdf, page 2/ }).first();
    await cite.waitFor();
    expect(await page.locator("mark").first().textContent()).toMatch(/alteplase|thrombolysis|window/i);
    // The page says which search ran (an embedding model is set here: meaning and words) and each hit's relevance.
    await page.getByRole("status").filter({ hasText: "Searched by: Meaning and words." }).waitFor();
    expect(await page.locator(".relevance").first().textContent()).toMatch(/rank score [\d.]+/);
    expect(await axe(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}kb-search.png`, fullPage: true });

    await cite.click();
    await page.waitForURL(/\/kb\/documents\/.+#chunk-\d+$/);
    const cited = page.locator("li.cited");
    await cited.waitFor();
    expect(await cited.textContent()).toContain("page 2");
    expect(await cited.textContent()).toContain("alteplase");
    expect(await page.evaluate(() => document.activeElement?.classList.contains("cited"))).toBe(true);
    expect(await axe(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}kb-document.png`, fullPage: true });
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  }, 120_000);
});
