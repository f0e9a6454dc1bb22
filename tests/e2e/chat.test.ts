// Chat in the browser with two people in two browser contexts: a direct message arrives live, the typing
// indicator and the read receipt show, a file is shared, @assistant answers in the thread (real inference on
// the generated model), and a public channel can be created and joined.
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import {
  addPerson,
  setUpInstallation,
  spawnCore,
  waitForOk,
  type CoreProcess,
  sideloadTinyModel,
} from "../support/process.js";
import { axeViolations, launchBrowser, signInInBrowser, watchPage } from "../support/browser.js";
import { NATS_URL } from "../support/env.js";

const SHOTS = new URL("../../test-results/", import.meta.url).pathname;
const ADA = {
  organizationName: "Harbor Ward",
  name: "Ada Admin",
  email: "ada@harbor.example",
  password: "lantern-harbor-violet-7",
};
const BOB = { email: "bob@harbor.example", displayName: "Bob Nurse", password: "quiet-orchard-mango-81" };
let core: CoreProcess;
let url: string;
let browser: Browser;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const env = {
    WORKSYNAPSE_DATA_DIR: mkdtempSync(path.join(tmpdir(), "ws-e2e-chat-")),
    NATS_URL,
    WORKSYNAPSE_NATS_PREFIX: `e2echat${process.pid}`,
    WORKSYNAPSE_AI_THREADS: "1",
    WORKSYNAPSE_ASSISTANT_ANSWER_TOKENS: "200",
    WORKSYNAPSE_ASSISTANT_STEP_TOKENS: "200",
    WORKSYNAPSE_ASSISTANT_MAX_STEPS: "3",
  };
  // A local model for @assistant, sideloaded as an admin does.
  await sideloadTinyModel(env);
  core = spawnCore(env);
  url = await core.url;
  await waitForOk(`${url}/readyz`);
  const cookie = await setUpInstallation(url, ADA);
  await addPerson(url, cookie, BOB);
  // The toy model's answer should end in text, not in a request to approve a write: writes are off here.
  for (const tool of ["notes.create", "assistant.remember"]) {
    const r = await fetch(`${url}/api/assistant/policies`, {
      method: "PUT",
      headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: url, cookie },
      body: JSON.stringify({ tool, policy: "deny" }),
    });
    expect(r.status).toBe(204);
  }
  browser = await launchBrowser();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  core?.child.kill("SIGTERM");
  await core?.exit;
});

async function openChat(
  email: string,
  password: string,
): Promise<{ page: Page; watch: ReturnType<typeof watchPage> }> {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const watch = watchPage(page);
  await signInInBrowser(page, url, email, password);
  await page.getByRole("navigation", { name: "Main navigation" }).getByRole("link", { name: "Chat" }).click();
  await page.waitForURL(`${url}/chat`);
  await page.getByRole("status").filter({ hasText: "Live" }).waitFor();
  return { page, watch };
}

describe("chat in the browser", () => {
  it("two people: a direct message arrives live, typing shows, the read receipt comes back", async () => {
    const ada = await openChat(ADA.email, ADA.password);
    const bob = await openChat(BOB.email, BOB.password);

    // Ada starts a direct conversation with Bob and writes.
    await ada.page.getByLabel("Direct message with").selectOption({ label: BOB.displayName });
    await ada.page.getByRole("button", { name: "Start conversation" }).click();
    await ada.page.getByRole("heading", { name: BOB.displayName, level: 2 }).waitFor();
    const composer = ada.page.getByRole("textbox", { name: `Message ${BOB.displayName}` });
    await composer.fill("Can you check **bed 4**?");
    await composer.press("Enter");
    await ada.page.getByRole("log").getByText("bed 4").waitFor();

    // Bob is connected: Ada's conversation list says he is online.
    await ada.page
      .getByRole("navigation", { name: "Your channels and direct messages" })
      .getByRole("img", { name: "online" })
      .waitFor();
    // Bob sees the conversation appear with an unread badge, opens it, and reads the message.
    const dm = bob.page
      .getByRole("navigation", { name: "Your channels and direct messages" })
      .getByRole("button", { name: /Ada Admin/ });
    await dm.getByLabel("1 unread").waitFor();
    await dm.click();
    await bob.page.getByRole("log").locator("strong", { hasText: "bed 4" }).waitFor();
    // Ada sees that Bob read it.
    await ada.page.getByText("Seen by Bob Nurse").waitFor();

    // Bob types: Ada sees the indicator; Bob's answer arrives live.
    const reply = bob.page.getByRole("textbox", { name: "Message Ada Admin" });
    await reply.pressSequentially("On it");
    await ada.page.getByText("Bob Nurse typing…").waitFor();
    await reply.press("Enter");
    await ada.page.getByRole("log").getByText("On it").waitFor();

    // Bob reacts to Ada's message and answers in its thread; Ada sees both live.
    const adaMsg = bob.page.getByRole("article", { name: "Message from Ada Admin" }).first();
    await adaMsg.getByRole("button", { name: "React with 👍" }).click();
    await ada.page
      .getByRole("article", { name: "Message from Ada Admin" })
      .first()
      .getByRole("button", { name: "👍 1" })
      .waitFor();
    await adaMsg.getByRole("button", { name: "Reply in thread" }).click();
    const threadBox = bob.page.getByRole("textbox", { name: "Reply in the thread" });
    await threadBox.fill("Bed 4 is fine now");
    await bob.page.getByRole("button", { name: "Reply", exact: true }).click();
    await bob.page.getByRole("region", { name: "Thread" }).getByText("Bed 4 is fine now").waitFor();
    await ada.page.getByRole("button", { name: "1 replies" }).click();
    await ada.page.getByRole("region", { name: "Thread" }).getByText("Bed 4 is fine now").waitFor();
    // The reply is in the thread, not in the channel's timeline.
    expect(await ada.page.getByRole("log").getByText("Bed 4 is fine now").count()).toBe(0);

    // Ada shares a file; Bob sees it live and downloads it.
    await ada.page.getByLabel("Attach files").setInputFiles({
      name: "handover.txt",
      mimeType: "text/plain",
      buffer: Buffer.from("Bed 4: stable. Bed 5: watch."),
    });
    await composer.fill("Handover notes");
    await ada.page.getByRole("button", { name: "Send" }).click();
    const link = bob.page.getByRole("log").getByRole("link", { name: "handover.txt" });
    await link.waitFor();
    const href = (await link.getAttribute("href")) as string;
    const file = await bob.page.request.get(`${url}${href}`);
    expect(file.status()).toBe(200);
    expect(await file.text()).toBe("Bed 4: stable. Bed 5: watch.");
    // Ada mentions Bob: his notification bell counts it; the notification opens the conversation.
    await composer.fill("@bob please sign the handover");
    await composer.press("Enter");
    const bell = bob.page.getByRole("button", { name: /Notifications/ });
    await bell.getByLabel("1 unread").waitFor({ timeout: 30_000 });
    await bell.click();
    const panel = bob.page.getByRole("region", { name: "Notifications" });
    const note = panel.getByRole("link", { name: "Ada Admin mentioned you in a direct message" });
    await note.waitFor();
    expect(await panel.textContent()).toContain("please sign the handover");
    expect(await axeViolations(bob.page)).toEqual([]);
    await note.click();
    await bob.page.waitForURL(/\/chat\?channel=/);
    await bob.page.getByRole("heading", { name: "Ada Admin", level: 2 }).waitFor();
    await expect.poll(() => bell.getByLabel("1 unread").count()).toBe(0);

    // Ada asks the assistant in the conversation: its answer arrives in the thread of her question.
    await composer.fill("@assistant what is on the handover?");
    await composer.press("Enter");
    const question = ada.page
      .getByRole("article", { name: "Message from Ada Admin" })
      .filter({ hasText: "what is on the handover" });
    await question.getByRole("button", { name: "1 replies" }).click({ timeout: 30_000 });
    const answer = ada.page
      .getByRole("region", { name: "Thread" })
      .getByRole("article", { name: "Message from Assistant" });
    await answer.waitFor();
    await expect
      .poll(async () => (await answer.locator(".chat-body").textContent())?.trim() ?? "", { timeout: 60_000 })
      .not.toMatch(/^(…)?$/);
    // Bob, in the same conversation, sees the reply count of Ada's question live.
    await bob.page
      .getByRole("article", { name: "Message from Ada Admin" })
      .filter({ hasText: "what is on the handover" })
      .getByRole("button", { name: "1 replies" })
      .waitFor();
    await ada.page.screenshot({ path: `${SHOTS}chat.png`, fullPage: true });
    expect(await axeViolations(ada.page)).toEqual([]);

    // A public channel: Ada creates it, Bob finds and joins it.
    await ada.page.getByLabel("New channel name").fill("ward-4");
    await ada.page.getByRole("button", { name: "Create channel" }).click();
    await ada.page.getByRole("heading", { name: "# ward-4" }).waitFor();
    await bob.page.reload({ waitUntil: "networkidle" });
    await bob.page.getByRole("button", { name: "Join ward-4" }).click();
    await bob.page.getByRole("heading", { name: "# ward-4" }).waitFor();
    for (const w of [ada.watch, bob.watch]) {
      expect(w.foreignRequests).toEqual([]);
      expect(w.consoleErrors).toEqual([]);
    }
  });
});
