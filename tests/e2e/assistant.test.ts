import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import {
  apiAs,
  spawnCore,
  setUpInstallation,
  waitForOk,
  type CoreProcess,
  sideloadTinyModel,
} from "../support/process.js";
import { axeViolations, launchBrowser, signInInBrowser, watchPage } from "../support/browser.js";
import { NATS_URL } from "../support/env.js";

// The assistant in a browser, on real llama.cpp inference with the generated model and the embedded
// database: a grounded question streams an answer with a source that opens the cited passage; a write tool
// shows an approval card; deny changes nothing, approve on a second try does it once.

const SHOTS = new URL("../../test-results/", import.meta.url).pathname;
const ADMIN = {
  organizationName: "Harbor Clinic",
  name: "Ada Admin",
  email: "ada@harbor.example",
  password: "lantern-harbor-violet-7",
};
let core: CoreProcess;
let url: string;
let cookie: string;
let browser: Browser;

const headers = () => ({ "x-requested-with": "worksynapse", origin: url, cookie });
let api: ReturnType<typeof apiAs>;
const notes = async () => (await api<{ data: { title: string }[] }>("GET", "/api/notes?view=all")).data;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const dataDir = mkdtempSync(path.join(tmpdir(), "ws-e2e-assistant-"));
  const env = {
    WORKSYNAPSE_DATA_DIR: dataDir,
    NATS_URL,
    WORKSYNAPSE_NATS_PREFIX: `e2easst${process.pid}`,
    WORKSYNAPSE_AI_THREADS: "1",
    WORKSYNAPSE_ASSISTANT_ANSWER_TOKENS: "200",
    WORKSYNAPSE_ASSISTANT_STEP_TOKENS: "200",
    WORKSYNAPSE_ASSISTANT_MAX_STEPS: "3",
  };
  await sideloadTinyModel(env);
  core = spawnCore(env);
  url = await core.url;
  await waitForOk(`${url}/readyz`);
  cookie = await setUpInstallation(url, ADMIN);
  api = apiAs(url, cookie);
  // A handbook to answer from, uploaded as a person would.
  const collection = (
    await api<{ data: { id: string } }>("POST", "/api/kb/collections", { name: "Handbook" })
  ).data.id;
  const form = new FormData();
  form.append(
    "files",
    new Blob(["Visiting hours. Visitors are welcome from two to eight in the afternoon and evening."]),
    "visiting.txt",
  );
  const up = await fetch(`${url}/api/kb/collections/${collection}/documents`, {
    method: "POST",
    headers: headers(),
    body: form,
  });
  expect(up.status).toBe(201);
  for (let i = 0; ; i++) {
    const docs = (
      await api<{ data: { status: string }[] }>("GET", `/api/kb/collections/${collection}/documents`)
    ).data;
    if (docs[0]?.status === "indexed") break;
    if (i > 200) throw new Error(`not indexed: ${JSON.stringify(docs)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  browser = await launchBrowser();
}, 180_000);
afterAll(async () => {
  await browser?.close();
  core?.child.kill("SIGTERM");
  await core?.exit;
});

describe("assistant in the browser", () => {
  it("streams a cited answer, opens the source, and asks before it writes", async () => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const watch = watchPage(page);
    const streams: Promise<string>[] = [];
    page.on("response", (r) => {
      // The first question's stream (read before any navigation).
      if (streams.length === 0 && r.url().endsWith("/messages") && r.status() === 200)
        streams.push(r.text().catch(() => ""));
    });
    await signInInBrowser(page, url, ADMIN.email, ADMIN.password);
    await page
      .getByRole("navigation", { name: "Main navigation" })
      .getByRole("link", { name: "Assistant" })
      .click();
    await page.waitForURL(`${url}/assistant`);

    // 1. A question answered from the handbook. (The writing tools are off for it, so the toy model's run
    //    ends in an answer; the organization's policy is what an administrator sets on the Assistant page.)
    for (const tool of ["notes.create", "assistant.remember"])
      await api("PUT", "/api/assistant/policies", { tool, policy: "deny" });
    const box = page.getByLabel("Ask the assistant");
    await box.fill("When are visiting hours?");
    await box.press("Enter");
    const answer = page.getByRole("article", { name: "Assistant" }).last();
    const sources = answer.getByRole("list", { name: "Sources" });
    await sources.waitFor({ timeout: 60_000 });
    await expect.poll(() => answer.locator(".chat-body").textContent()).not.toBe("");
    // The answer came as a stream of token events.
    const body = await streams[0];
    expect(body?.match(/event: token/g)?.length ?? 0).toBeGreaterThan(1);
    expect(await answer.getByRole("list", { name: "Tool calls" }).textContent()).toContain("kb.search");
    expect(await axeViolations(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}assistant-answer.png`, fullPage: true });
    const source = sources.getByRole("link").first();
    expect(await source.textContent()).toContain("visiting.txt");
    await source.click();
    await page.waitForURL(/\/kb\/documents\/[0-9a-f-]+#chunk-\d+$/);
    await page.getByRole("heading", { name: "visiting.txt" }).waitFor();
    await page.goBack();
    await page.waitForURL(`${url}/assistant`);
    for (const tool of ["notes.create", "assistant.remember"])
      await api("PUT", "/api/assistant/policies", { tool, policy: "ask" });

    // 2. A write tool: the approval card; deny; nothing changed.
    const before = (await notes()).length;
    const askToWrite = async () => {
      await page.getByRole("combobox", { name: /Use a tool/ }).selectOption("notes.create");
      await page.getByLabel("Answer from documents").uncheck();
      await box.fill("Make a note of the visiting hours");
      await page.getByRole("button", { name: "Send" }).click();
      const card = page.getByRole("region", { name: "The assistant wants to act" });
      await card.waitFor({ timeout: 60_000 });
      expect(await card.textContent()).toContain("notes.create");
      return card;
    };
    let card = await askToWrite();
    expect(await axeViolations(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}assistant-approval.png`, fullPage: true });
    await card.getByRole("button", { name: "Deny" }).click();
    await page
      .getByRole("list", { name: "Tool calls" })
      .filter({ hasText: "denied by you" })
      .first()
      .waitFor({ timeout: 60_000 });
    await page.getByRole("button", { name: "Send" }).waitFor();
    expect((await notes()).length).toBe(before);

    // 3. Second try: approve; the note exists once.
    card = await askToWrite();
    await card.getByRole("button", { name: "Approve" }).click();
    await page
      .getByRole("list", { name: "Tool calls" })
      .filter({ hasText: "approved and done" })
      .first()
      .waitFor({ timeout: 60_000 });
    await expect.poll(async () => (await notes()).length).toBe(before + 1);

    // The execution log shows the runs to the administrator.
    await page.goto(`${url}/admin/assistant`);
    await page.getByRole("heading", { name: "Execution log" }).waitFor();
    await page.getByRole("cell", { name: "Make a note of the visiting hours" }).first().waitFor();
    await page.getByRole("button", { name: "Details" }).first().click();
    await page.getByRole("heading", { name: "Steps of this run" }).waitFor();
    expect(await axeViolations(page)).toEqual([]);
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  });
});
