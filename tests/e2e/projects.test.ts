import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import {
  addPerson,
  apiAs,
  setUpInstallation,
  sideloadTinyModel,
  spawnCore,
  waitForOk,
  type CoreProcess,
} from "../support/process.js";
import { axeViolations, launchBrowser, signInInBrowser, watchPage } from "../support/browser.js";
import { NATS_URL } from "../support/env.js";

// Projects in a browser, on the embedded database and real llama.cpp inference with the generated model:
// create a project, break a goal down and accept it, move tasks across the board with the mouse, the
// keyboard and the card menu, and watch the dashboard follow.

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
let bea: string;

let api: ReturnType<typeof apiAs>;
type Task = { id: string; title: string; statusName: string };
const tasksOf = async (projectId: string) =>
  (await api<{ data: Task[] }>("GET", `/api/projects/${projectId}/tasks?sort=number`)).data;
const column = (page: Page, status: string) =>
  page.getByRole("region", { name: new RegExp(`^${status}, \\d+ tasks$`) });
const card = (page: Page, title: string) =>
  page.getByRole("button", { name: new RegExp(`^Task \\d+: ${title}$`) });

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const env = {
    WORKSYNAPSE_DATA_DIR: mkdtempSync(path.join(tmpdir(), "ws-e2e-projects-")),
    NATS_URL,
    WORKSYNAPSE_NATS_PREFIX: `e2eproj${process.pid}`,
    WORKSYNAPSE_AI_THREADS: "1",
  };
  await sideloadTinyModel(env);
  core = spawnCore(env);
  url = await core.url;
  await waitForOk(`${url}/readyz`);
  cookie = await setUpInstallation(url, ADMIN);
  api = apiAs(url, cookie);
  bea = await addPerson(url, cookie, {
    email: "bea@harbor.example",
    displayName: "Bea Nurse",
    password: ADMIN.password,
  });
  browser = await launchBrowser();
}, 180_000);
afterAll(async () => {
  await browser?.close();
  core?.child.kill("SIGTERM");
  await core?.exit;
});

describe("projects in the browser", () => {
  it("creates a project, breaks down a goal, moves tasks by mouse, keyboard and menu, and updates the dashboard", async () => {
    const ctx = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
    const page = await ctx.newPage();
    const watch = watchPage(page);
    await signInInBrowser(page, url, ADMIN.email, ADMIN.password);
    await page
      .getByRole("navigation", { name: "Main navigation" })
      .getByRole("link", { name: "Projects" })
      .click();
    await page.waitForURL(`${url}/projects`);

    // 1. Create the project.
    await page.getByLabel("Name").fill("Ward move");
    await page.getByLabel("Description").fill("Move **ward 3** to the new wing.");
    await page.getByRole("button", { name: "Create" }).click();
    await page.waitForURL(/\/projects\/[0-9a-f-]{36}$/);
    const projectId = page.url().split("/").pop() as string;
    await page.getByRole("heading", { name: "Ward move" }).waitFor();
    await api("PUT", `/api/projects/${projectId}/members`, {
      members: [
        { userId: (await api<{ data: { id: string } }>("GET", "/api/auth/me")).data.id, role: "owner" },
        { userId: bea, role: "editor" },
      ],
    });
    const day = (offset: number) => new Date(Date.now() + offset * 86400_000).toISOString().slice(0, 10);
    await api("POST", `/api/projects/${projectId}/milestones`, {
      name: "Move day",
      startDate: day(-2),
      dueDate: day(5),
    });
    await page.reload();
    expect(await axeViolations(page)).toEqual([]);

    // 2. Break a goal down with the local model, edit the proposal, accept it.
    await page.getByRole("button", { name: "Break down a goal" }).click();
    const dialog = page.getByRole("dialog", { name: "Break a goal down into tasks" });
    await dialog.getByLabel("Goal").fill("Move the ward to the new wing");
    await dialog.getByLabel("At most this many tasks").fill("3");
    await dialog.getByRole("button", { name: "Propose tasks" }).click();
    const first = dialog.getByRole("listitem", { name: "Proposed task 1" });
    await first.waitFor({ timeout: 60_000 });
    const proposed = await dialog.getByRole("listitem", { name: /^Proposed task \d$/ }).count();
    await first.getByLabel("Title").fill("Pack the ward");
    expect(await axeViolations(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}projects-breakdown.png`, fullPage: true });
    await dialog.getByLabel("Milestone").selectOption({ label: "Move day" });
    await dialog.getByRole("button", { name: `Create ${proposed} tasks` }).click();
    await dialog.waitFor({ state: "detached" });
    await expect.poll(async () => (await tasksOf(projectId)).length).toBe(proposed);
    expect((await tasksOf(projectId))[0]?.title).toBe("Pack the ward");
    // Two more by hand, so the board has cards to move whatever the toy model proposed.
    for (const title of ["Label the beds", "Brief the night shift"]) {
      await page.getByLabel("New task title").fill(title);
      await page.getByRole("button", { name: "Add task" }).click();
      await page
        .getByRole("complementary")
        .getByRole("heading", { name: new RegExp(title) })
        .waitFor();
    }
    await page.getByRole("complementary").getByRole("button", { name: "Close" }).click();
    await card(page, "Pack the ward").waitFor();

    // 3. Dashboard before anything is done.
    await page.getByRole("tab", { name: "Dashboard" }).click();
    await expect.poll(() => page.locator("[data-kpi=completion]").textContent()).toBe("0%");
    await page.getByRole("tab", { name: "Board", exact: true }).click();

    // 4. The mouse: drag a card into "In progress".
    // A drag as a hand does it: press, move in steps (dragstart, then dragover on the way), release.
    await card(page, "Label the beds").scrollIntoViewIfNeeded();
    const from = await card(page, "Label the beds").boundingBox();
    const to = await column(page, "In progress").boundingBox();
    if (!from || !to) throw new Error("board not laid out");
    await page.mouse.move(from.x + from.width / 2, from.y + from.height / 2);
    await page.mouse.down();
    await page.mouse.move(from.x + from.width / 2 + 10, from.y + from.height / 2 + 10, { steps: 5 });
    // Onto the column's heading: not onto a card, so the task goes to the column's end.
    await page.mouse.move(to.x + to.width / 2, Math.max(to.y + 20, 20), { steps: 15 });
    await page.mouse.up();
    await expect
      .poll(async () => (await tasksOf(projectId)).find((t) => t.title === "Label the beds")?.statusName)
      .toBe("In progress");
    await column(page, "In progress")
      .getByRole("button", { name: /Label the beds$/ })
      .waitFor();

    // 5. The keyboard: Alt+Arrow moves the focused card one column at a time.
    await card(page, "Brief the night shift").focus();
    await page.keyboard.press("Alt+ArrowRight");
    await column(page, "In progress")
      .getByRole("button", { name: /Brief the night shift$/ })
      .waitFor();
    await page.getByText("Moved Brief the night shift to In progress.").waitFor();
    await page.keyboard.press("Alt+ArrowUp");
    await expect
      .poll(async () =>
        (
          await column(page, "In progress")
            .getByRole("button", { name: /^Task \d+:/ })
            .allTextContents()
        ).map((x) => (x.includes("Brief") ? "brief" : x.includes("Label") ? "label" : "other")),
      )
      .toEqual(["brief", "label"]);
    for (const status of ["Review", "Done"]) {
      await page.keyboard.press("Alt+ArrowRight");
      await page.getByText(`Moved Brief the night shift to ${status}.`).waitFor();
    }
    await column(page, "Done")
      .getByRole("button", { name: /Brief the night shift$/ })
      .waitFor();
    await expect
      .poll(
        async () => (await tasksOf(projectId)).find((t) => t.title === "Brief the night shift")?.statusName,
      )
      .toBe("Done");

    // 6. The card's menu: the same moves without a mouse drag or shortcut.
    await column(page, "In progress").getByLabel("Move Label the beds").click();
    await column(page, "In progress").getByRole("button", { name: "Move to Done" }).click();
    await column(page, "Done")
      .getByRole("button", { name: /Label the beds$/ })
      .waitFor();
    expect(await axeViolations(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}projects-board.png`, fullPage: true });

    // 7. The dashboard follows: two of the tasks are done, this week's throughput says so (as a table too).
    await page.getByRole("tab", { name: "Dashboard" }).click();
    const total = proposed + 2;
    await expect
      .poll(() => page.locator("[data-kpi=completion]").textContent())
      .toBe(`${Math.round((2 / total) * 100)}%`);
    await page.getByRole("img", { name: /Burn-down: \d+ of \d+ tasks remaining/ }).waitFor();
    expect(await page.getByRole("img", { name: /Tasks done per week: .*: 2$/ }).count()).toBe(1);
    await page.screenshot({ path: `${SHOTS}projects-charts.png`, fullPage: true });
    await page.getByRole("button", { name: /View as table \(Done per week\)/ }).click();
    const rows = page.getByRole("region", { name: "Done per week" }).getByRole("row");
    expect(await rows.last().textContent()).toContain("2");
    await page.getByRole("button", { name: /View as table \(Open tasks per member\)/ }).click();
    expect(await axeViolations(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}projects-dashboard.png`, fullPage: true });
    // A KPI opens the list of the tasks behind it.
    await page.getByRole("button", { name: `2 of ${total} done` }).click();
    await page.getByText("2 tasks", { exact: true }).waitFor();

    // 8. The task panel: a comment, and the activity log of the moves.
    await page.getByRole("button", { name: "Label the beds" }).click();
    const panel = page.getByRole("complementary");
    await panel.getByLabel("Comment", { exact: true }).fill("Beds labelled on Tuesday.");
    await panel.getByRole("button", { name: "Comment", exact: true }).click();
    await panel.getByText("Beds labelled on Tuesday.").waitFor();
    expect(await panel.getByRole("list").last().textContent()).toContain("moved it to Done");
    expect(await axeViolations(page)).toEqual([]);
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.foreignRequests).toEqual([]);
    await ctx.close();
  });
});
