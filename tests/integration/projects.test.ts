import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { ScriptedEngine } from "../support/scripted-engine.js";
import { createMember, createTestOrg, type Client, type TestOrg } from "../support/identity.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";
import { fireDueReminders } from "../../core/src/modules/projects/projects.reminders.js";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { importModel } from "../../core/src/modules/ai/models.service.js";
import type { Caller } from "../../core/src/platform/auth/caller.js";

// Projects and tasks through the HTTP API on real PostgreSQL: roles, every bad input, the activity log,
// the board, reminders, KPIs against hand-computed figures, and the AI project manager on a scripted engine
// (its real-inference test is projects-llm.test.ts).

type Data<T> = { data: T };
type Person = { id: string; email: string; client: Client };
interface Project {
  id: string;
  myRole: string;
  statuses: { id: string; name: string; category: string }[];
  labels: { id: string; name: string }[];
  milestones: { id: string; name: string }[];
  members: { userId: string; role: string }[];
  counts: { total: number; done: number; overdue: number };
}
interface Task {
  id: string;
  number: number;
  title: string;
  statusId: string;
  category: string;
  position: number;
  assignees: { id: string }[];
  blockedBy: string[];
  labelIds: string[];
  dueAt: string | null;
  overdue: boolean;
  completedAt: string | null;
  startedAt: string | null;
  activity: {
    action: string;
    via: string;
    actor: { id: string } | null;
    changes: Record<string, { from: unknown; to: unknown }>;
  }[];
  comments: { id: string; body: string }[];
  attachments: { id: string; name: string; size: number }[];
  reminders: { assigned: boolean; muted: boolean; next: string | null };
  canEdit: boolean;
}
type Err = { error: { code: string; message: string; details?: Record<string, unknown> } };

let srv: TestServer;
let org: TestOrg;
let other: TestOrg;
let alice: Person;
let bob: Person;
let carol: Person;
let dan: Person;
let guest: Person;
let project: Project;
const engine = new ScriptedEngine();

const status = async (c: Client, method: string, path: string, body?: unknown) => {
  const r = await c.request(method, path, body);
  const text = await r.text();
  return { status: r.status, body: (text ? JSON.parse(text) : undefined) as Err };
};
const newProject = async (c: Client, body: Record<string, unknown>) =>
  (await c.json<Data<Project>>("POST", "/api/projects", body, 201)).data;
const newTask = async (c: Client, projectId: string, body: Record<string, unknown>) =>
  (await c.json<Data<Task>>("POST", `/api/projects/${projectId}/tasks`, body, 201)).data;
const getTask = async (c: Client, id: string) => (await c.json<Data<Task>>("GET", `/api/tasks/${id}`)).data;
const column = async (c: Client, projectId: string, statusId: string) =>
  (await c.json<{ data: Task[] }>("GET", `/api/projects/${projectId}/tasks?statusId=${statusId}`)).data.map(
    (t) => t.title,
  );
const sql = <T>(fn: (trx: import("knex").Knex.Transaction) => Promise<T>) =>
  withOrg(srv.db.knex, org.orgId, fn);

beforeAll(async () => {
  srv = await getTestServer({
    assistantEngine: engine,
    env: { WORKSYNAPSE_PROJECTS_MAX_FILE_BYTES: "100000" },
  });
  org = await createTestOrg(srv, "projects");
  other = await createTestOrg(srv, "elsewhere");
  alice = await createMember(org, ["member"], "alice");
  bob = await createMember(org, ["member"], "bob");
  carol = await createMember(org, ["member"], "carol");
  dan = await createMember(org, ["member"], "dan");
  guest = await createMember(org, ["guest"], "guest");
  project = await newProject(alice.client, {
    name: "Records migration",
    description: "Move the ward records to the new system.",
    members: [
      { userId: bob.id, role: "editor" },
      { userId: carol.id, role: "viewer" },
    ],
  });
});
afterAll(() => srv?.close());

describe("projects: access and settings", () => {
  it("needs a session, the permission, and membership (404 for everyone else)", async () => {
    expect((await srv.fetch("/api/projects")).status).toBe(401);
    expect((await srv.fetch(`/api/projects/${project.id}/tasks`)).status).toBe(401);
    expect((await status(guest.client, "POST", "/api/projects", { name: "Nope" })).status).toBe(403);
    expect(project.myRole).toBe("owner");
    expect(project.statuses.map((s) => `${s.name}:${s.category}`)).toEqual([
      "To do:todo",
      "In progress:started",
      "Review:started",
      "Done:done",
    ]);
    expect((await status(dan.client, "GET", `/api/projects/${project.id}`)).status).toBe(404);
    expect((await dan.client.json<Data<Project[]>>("GET", "/api/projects")).data).toEqual([]);
    expect((await status(other.owner, "GET", `/api/projects/${project.id}`)).status).toBe(404);
    // The organization's owner manages every project (projects.manage) without being a member.
    const seen = (await org.owner.json<Data<Project>>("GET", `/api/projects/${project.id}`)).data;
    expect(seen.myRole).toBe("owner");
    expect(
      (await bob.client.json<Data<Project[]>>("GET", "/api/projects")).data.map((p) => p.myRole),
    ).toEqual(["editor"]);
    // Editors cannot change members or statuses; viewers cannot add labels.
    expect(
      (
        await status(bob.client, "PUT", `/api/projects/${project.id}/members`, {
          members: [{ userId: bob.id, role: "owner" }],
        })
      ).status,
    ).toBe(403);
    expect(
      (await status(carol.client, "POST", `/api/projects/${project.id}/labels`, { name: "x" })).status,
    ).toBe(403);
  });

  it("refuses bad settings with 400s and keeps an owner", async () => {
    const bad = [
      ["POST", "/api/projects", { name: "" }],
      ["POST", "/api/projects", { name: "x", members: [{ userId: other.ownerId, role: "editor" }] }],
      ["POST", "/api/projects", { name: "x", extra: 1 }],
      ["PUT", `/api/projects/${project.id}/members`, { members: [{ userId: bob.id, role: "editor" }] }],
      ["PUT", `/api/projects/${project.id}/members`, { members: [{ userId: alice.id, role: "boss" }] }],
      [
        "PUT",
        `/api/projects/${project.id}/statuses`,
        {
          statuses: [
            { name: "A", category: "todo" },
            { name: "B", category: "started" },
          ],
        },
      ],
      [
        "PUT",
        `/api/projects/${project.id}/statuses`,
        {
          statuses: [
            { name: "A", category: "todo" },
            { name: "a", category: "done" },
          ],
        },
      ],
      [
        "POST",
        `/api/projects/${project.id}/milestones`,
        { name: "M", startDate: "2026-12-10", dueDate: "2026-12-01" },
      ],
      [
        "POST",
        `/api/projects/${project.id}/milestones`,
        { name: "M", startDate: "tomorrow", dueDate: "2026-12-01" },
      ],
      ["PATCH", `/api/projects/${project.id}`, {}],
      ["GET", `/api/projects/${project.id}/tasks?sort=random`],
      ["GET", "/api/projects/not-a-uuid"],
    ] as const;
    for (const [method, path, body] of bad) {
      const r = await status(alice.client, method, path, body);
      expect(r.status, `${method} ${path} ${JSON.stringify(body)}`).toBe(400);
      expect(r.body.error.code).toBeTruthy();
    }
    const label = await alice.client.json<Data<{ id: string }>>(
      "POST",
      `/api/projects/${project.id}/labels`,
      { name: "Backend", color: "blue" },
      201,
    );
    expect(
      (await status(alice.client, "POST", `/api/projects/${project.id}/labels`, { name: "backend" })).status,
    ).toBe(409);
    await alice.client.json("DELETE", `/api/projects/${project.id}/labels/${label.data.id}`, undefined, 204);
  });
});

describe("projects: members, milestones, deletion, and what viewers may not do", () => {
  it("replaces members (leavers are unassigned), edits and deletes milestones, and deletes a project", async () => {
    const p = await newProject(alice.client, {
      name: "Short-lived",
      members: [
        { userId: bob.id, role: "editor" },
        { userId: carol.id, role: "viewer" },
      ],
    });
    const task = await newTask(alice.client, p.id, {
      title: "Bob's",
      assigneeIds: [bob.id],
      dueAt: new Date(Date.now() + 86400_000).toISOString(),
    });
    const ms = (
      await alice.client.json<Data<{ id: string; name: string; dueDate: string }>>(
        "POST",
        `/api/projects/${p.id}/milestones`,
        { name: "M1", startDate: "2026-12-01", dueDate: "2026-12-20" },
        201,
      )
    ).data;
    // Viewers read everything and write nothing.
    const writes: [string, string, unknown][] = [
      ["PATCH", `/api/projects/${p.id}`, { name: "x" }],
      ["DELETE", `/api/projects/${p.id}`, undefined],
      [
        "PUT",
        `/api/projects/${p.id}/statuses`,
        {
          statuses: [
            { name: "a", category: "todo" },
            { name: "b", category: "done" },
          ],
        },
      ],
      [
        "POST",
        `/api/projects/${p.id}/milestones`,
        { name: "x", startDate: "2026-12-01", dueDate: "2026-12-02" },
      ],
      ["PATCH", `/api/milestones/${ms.id}`, { name: "x" }],
      ["DELETE", `/api/milestones/${ms.id}`, undefined],
      ["PATCH", `/api/tasks/${task.id}`, { title: "x" }],
      ["POST", `/api/tasks/${task.id}/move`, { statusId: p.statuses[1]!.id }],
      ["DELETE", `/api/tasks/${task.id}`, undefined],
      ["POST", `/api/projects/${p.id}/breakdown`, { goal: "a goal" }],
      ["POST", `/api/projects/${p.id}/breakdown/accept`, { tasks: [{ ref: "1", title: "x" }] }],
    ];
    for (const [method, path, body] of writes)
      expect((await status(carol.client, method, path, body)).status, `${method} ${path}`).toBe(403);
    expect((await carol.client.json<Data<Project>>("GET", `/api/projects/${p.id}`)).data.myRole).toBe(
      "viewer",
    );
    // Editors cannot delete the project either.
    expect((await status(bob.client, "DELETE", `/api/projects/${p.id}`)).status).toBe(403);

    const moved = (
      await bob.client.json<Data<{ dueDate: string; name: string }>>("PATCH", `/api/milestones/${ms.id}`, {
        name: "M1b",
        dueDate: "2026-12-31",
      })
    ).data;
    expect(moved).toMatchObject({ name: "M1b", dueDate: "2026-12-31" });
    expect(
      (await status(bob.client, "PATCH", `/api/milestones/${ms.id}`, { dueDate: "2026-11-01" })).status,
    ).toBe(400);
    expect((await status(dan.client, "PATCH", `/api/milestones/${ms.id}`, { name: "x" })).status).toBe(404);
    await alice.client.json("PATCH", `/api/tasks/${task.id}`, { milestoneId: ms.id });
    await bob.client.json("DELETE", `/api/milestones/${ms.id}`, undefined, 204);
    expect((await getTask(alice.client, task.id)) as unknown as { milestoneId: string | null }).toMatchObject(
      { milestoneId: null },
    );

    // Bob leaves: he is unassigned and his reminders go; the project still has an owner.
    const after = (
      await alice.client.json<Data<Project>>("PUT", `/api/projects/${p.id}/members`, {
        members: [
          { userId: alice.id, role: "owner" },
          { userId: carol.id, role: "editor" },
        ],
      })
    ).data;
    expect(after.members.map((m) => m.role).sort()).toEqual(["editor", "owner"]);
    expect((await getTask(alice.client, task.id)).assignees).toEqual([]);
    expect(
      await sql((trx) => trx("task_reminders").where({ task_id: task.id }).count({ n: "*" }).first()),
    ).toMatchObject({ n: "0" });
    expect((await status(bob.client, "GET", `/api/projects/${p.id}`)).status).toBe(404);
    expect(
      (await status(carol.client, "PATCH", `/api/tasks/${task.id}`, { title: "Now I can" })).status,
    ).toBe(200);
    const log = await sql((trx) =>
      trx("activity_logs").where({ project_id: p.id, action: "project.members" }).first(),
    );
    expect(log.changes.before[bob.id]).toBe("editor");

    await alice.client.json("DELETE", `/api/projects/${p.id}`, undefined, 204);
    expect((await status(alice.client, "GET", `/api/projects/${p.id}`)).status).toBe(404);
    expect((await status(alice.client, "GET", `/api/tasks/${task.id}`)).status).toBe(404);
  });
});

describe("tasks", () => {
  it("creates, edits and logs every change with who and what; assignees are notified", async () => {
    const label = (
      await alice.client.json<Data<{ id: string }>>(
        "POST",
        `/api/projects/${project.id}/labels`,
        { name: "Data", color: "green" },
        201,
      )
    ).data;
    const ms = (
      await alice.client.json<Data<{ id: string }>>(
        "POST",
        `/api/projects/${project.id}/milestones`,
        { name: "Pilot", startDate: "2026-11-01", dueDate: "2027-01-31" },
        201,
      )
    ).data;
    const export1 = await newTask(alice.client, project.id, {
      title: "Export old records",
      priority: "high",
      labelIds: [label.id],
      milestoneId: ms.id,
      assigneeIds: [bob.id],
      estimateHours: 8,
    });
    expect(export1.number).toBe(1);
    expect(export1.assignees.map((a) => a.id)).toEqual([bob.id]);
    const bobs = (
      await bob.client.json<{ data: { kind: string; link: string }[] }>("GET", "/api/notifications")
    ).data;
    expect(
      bobs.some((n) => n.kind === "task.assigned" && n.link === `/projects/${project.id}?task=${export1.id}`),
    ).toBe(true);
    const import1 = await newTask(bob.client, project.id, {
      title: "Import into the new system",
      blockedBy: [export1.id],
      description: "Use the **bulk** loader.",
    });
    expect(import1.number).toBe(2);
    expect(import1.blockedBy).toEqual([export1.id]);
    const sub = await newTask(bob.client, project.id, {
      title: "Check the row counts",
      parentId: import1.id,
    });

    // Bad input: 400 with nothing written; viewers 403; other people and other projects' objects are refused.
    const count = async () => Number((await sql((trx) => trx("tasks").count({ n: "*" }).first()))?.n);
    const before = await count();
    const bad: [Client, Record<string, unknown>, number][] = [
      [alice.client, { title: "" }, 400],
      [alice.client, { title: "x", assigneeIds: [dan.id] }, 400],
      [alice.client, { title: "x", assigneeIds: [other.ownerId] }, 400],
      [alice.client, { title: "x", statusId: other.ownerId }, 400],
      [alice.client, { title: "x", priority: "critical" }, 400],
      [alice.client, { title: "x", dueAt: "next week" }, 400],
      [alice.client, { title: "x", estimateHours: -1 }, 400],
      [alice.client, { title: "x", parentId: other.ownerId }, 400],
      [alice.client, { title: "x", unknown: true }, 400],
      [carol.client, { title: "viewer" }, 403],
      [dan.client, { title: "stranger" }, 404],
    ];
    for (const [c, body, code] of bad)
      expect(
        (await status(c, "POST", `/api/projects/${project.id}/tasks`, body)).status,
        JSON.stringify(body),
      ).toBe(code);
    // A cycle of dependencies, a task blocking itself, a subtask of its own subtask.
    expect(
      (await status(alice.client, "PATCH", `/api/tasks/${export1.id}`, { blockedBy: [import1.id] })).status,
    ).toBe(400);
    expect(
      (await status(alice.client, "PATCH", `/api/tasks/${export1.id}`, { blockedBy: [export1.id] })).status,
    ).toBe(400);
    expect(
      (await status(alice.client, "PATCH", `/api/tasks/${import1.id}`, { parentId: sub.id })).status,
    ).toBe(400);
    expect((await status(alice.client, "PATCH", `/api/tasks/${import1.id}`, {})).status).toBe(400);
    expect(await count()).toBe(before);

    const due = new Date(Date.now() + 3 * 86400_000).toISOString();
    const edited = (
      await bob.client.json<Data<Task>>("PATCH", `/api/tasks/${import1.id}`, {
        title: "Import records",
        dueAt: due,
        assigneeIds: [bob.id, alice.id],
        priority: "medium",
      })
    ).data;
    const change = edited.activity.find((a) => a.action === "task.update")!;
    expect(change.actor?.id).toBe(bob.id);
    expect(change.via).toBe("user");
    expect(change.changes.title).toEqual({ from: "Import into the new system", to: "Import records" });
    expect(change.changes.priority).toEqual({ from: "none", to: "medium" });
    expect(change.changes.dueAt?.to).toBe(due);
    expect((change.changes.assignees?.to as string[]).sort()).toEqual([bob.id, alice.id].sort());
    const detail = await getTask(alice.client, import1.id);
    expect(detail.reminders.assigned).toBe(true);
    expect(detail.canEdit).toBe(true);
    expect((await getTask(carol.client, import1.id)).canEdit).toBe(false);

    // Comments: viewers may discuss; assignees hear of it; only the author (or an owner) deletes.
    const comment = (
      await carol.client.json<Data<{ id: string }>>(
        "POST",
        `/api/tasks/${import1.id}/comments`,
        { body: "Which loader version?" },
        201,
      )
    ).data;
    expect(
      (await status(bob.client, "DELETE", `/api/tasks/${import1.id}/comments/${comment.id}`)).status,
    ).toBe(403);
    expect(
      (await status(carol.client, "POST", `/api/tasks/${import1.id}/comments`, { body: "   " })).status,
    ).toBe(400);
    expect(
      (await bob.client.json<{ data: { kind: string }[] }>("GET", "/api/notifications")).data.some(
        (n) => n.kind === "task.comment",
      ),
    ).toBe(true);
    await alice.client.json("DELETE", `/api/tasks/${import1.id}/comments/${comment.id}`, undefined, 204);

    // List filters and sorting.
    const list = async (q: string) =>
      (await alice.client.json<{ data: Task[] }>("GET", `/api/projects/${project.id}/tasks?${q}`)).data.map(
        (t) => t.number,
      );
    expect(await list(`assigneeId=${bob.id}&sort=number`)).toEqual([1, 2]);
    expect(await list("assigneeId=me")).toEqual([2]);
    expect(await list(`labelId=${label.id}`)).toEqual([1]);
    expect(await list("priority=high")).toEqual([1]);
    expect(await list("q=records&sort=number")).toEqual([1, 2]);
    expect(await list("topLevel=true&sort=number&order=desc")).toEqual([2, 1]);
    expect(await list(`parentId=${import1.id}`)).toEqual([3]);
    expect(await list("sort=due")).toEqual([2, 1, 3]);
    const mineAll = await bob.client.json<{ data: Task[]; page: { total: number } }>(
      "GET",
      "/api/tasks/mine",
    );
    expect(mineAll.data.map((t) => t.number)).toEqual([2, 1]);
    expect(mineAll.page.total).toBe(2);
    expect((await bob.client.json<{ data: Task[] }>("GET", "/api/tasks/mine?scope=done")).data).toEqual([]);
    expect((await bob.client.json<{ data: Task[] }>("GET", "/api/tasks/mine?scope=overdue")).data).toEqual(
      [],
    );
  });

  it("moves tasks on the board: order within a column, status changes set started and completed", async () => {
    const [todo, doing, , done] = project.statuses;
    const p = await newProject(alice.client, { name: "Board" });
    const [a, b, c] = [
      await newTask(alice.client, p.id, { title: "A" }),
      await newTask(alice.client, p.id, { title: "B" }),
      await newTask(alice.client, p.id, { title: "C" }),
    ];
    const cols = p.statuses;
    expect(await column(alice.client, p.id, cols[0]!.id)).toEqual(["A", "B", "C"]);
    await alice.client.json("POST", `/api/tasks/${c.id}/move`, { statusId: cols[0]!.id, beforeId: a.id });
    expect(await column(alice.client, p.id, cols[0]!.id)).toEqual(["C", "A", "B"]);
    await alice.client.json("POST", `/api/tasks/${b.id}/move`, { statusId: cols[0]!.id, beforeId: a.id });
    expect(await column(alice.client, p.id, cols[0]!.id)).toEqual(["C", "B", "A"]);
    const started = (
      await alice.client.json<Data<Task>>("POST", `/api/tasks/${a.id}/move`, { statusId: cols[1]!.id })
    ).data;
    expect(started.startedAt).not.toBeNull();
    expect(started.completedAt).toBeNull();
    const finished = (
      await alice.client.json<Data<Task>>("POST", `/api/tasks/${a.id}/move`, { statusId: cols[3]!.id })
    ).data;
    expect(finished.completedAt).not.toBeNull();
    expect(finished.startedAt).toBe(started.startedAt);
    const reopened = (
      await alice.client.json<Data<Task>>("POST", `/api/tasks/${a.id}/move`, { statusId: cols[0]!.id })
    ).data;
    expect(reopened.completedAt).toBeNull();
    expect(
      (await getTask(alice.client, a.id)).activity
        .filter((x) => x.action === "task.move")
        .map((x) => x.changes.status),
    ).toEqual([
      { from: "Done", to: "To do" },
      { from: "In progress", to: "Done" },
      { from: "To do", to: "In progress" },
    ]);
    // Many moves into the same gap keep the order (the column is renumbered when positions get too close).
    for (let i = 0; i < 60; i++)
      await alice.client.json("POST", `/api/tasks/${(i % 2 ? b : c).id}/move`, {
        statusId: cols[0]!.id,
        beforeId: a.id,
      });
    expect(new Set(await column(alice.client, p.id, cols[0]!.id)).size).toBe(3);
    expect((await column(alice.client, p.id, cols[0]!.id)).at(-1)).toBe("A");
    // Bad moves.
    expect(
      (await status(alice.client, "POST", `/api/tasks/${a.id}/move`, { statusId: todo!.id })).status,
    ).toBe(400); // another project's status
    expect(
      (
        await status(alice.client, "POST", `/api/tasks/${a.id}/move`, {
          statusId: cols[1]!.id,
          beforeId: b.id,
        })
      ).status,
    ).toBe(400);
    expect(
      (
        await status(alice.client, "POST", `/api/tasks/${a.id}/move`, {
          statusId: cols[0]!.id,
          beforeId: a.id,
        })
      ).status,
    ).toBe(400);
    expect(
      (await status(bob.client, "POST", `/api/tasks/${a.id}/move`, { statusId: cols[1]!.id })).status,
    ).toBe(404);
    // A status that still holds tasks cannot be removed; renaming and reordering can.
    const r = await status(alice.client, "PUT", `/api/projects/${p.id}/statuses`, {
      statuses: [
        { id: cols[1]!.id, name: "Doing", category: "started" },
        { id: cols[3]!.id, name: "Done", category: "done" },
      ],
    });
    expect(r.status).toBe(409);
    const renamed = await alice.client.json<Data<Project>>("PUT", `/api/projects/${p.id}/statuses`, {
      statuses: [
        { id: cols[1]!.id, name: "To do", category: "started" },
        { id: cols[0]!.id, name: "In progress", category: "todo" },
        { id: cols[2]!.id, name: "Review", category: "started" },
        { id: cols[3]!.id, name: "Done", category: "done" },
      ],
    });
    expect(renamed.data.statuses.map((s) => s.name)).toEqual(["To do", "In progress", "Review", "Done"]);
    void doing;
    void done;
    // Archived projects are read-only until unarchived.
    await alice.client.json("PATCH", `/api/projects/${p.id}`, { archived: true });
    expect(
      (await status(alice.client, "POST", `/api/projects/${p.id}/tasks`, { title: "late" })).status,
    ).toBe(409);
    expect(
      (await alice.client.json<Data<Project[]>>("GET", "/api/projects?archived=true")).data.map((x) => x.id),
    ).toContain(p.id);
    await alice.client.json("PATCH", `/api/projects/${p.id}`, { archived: false });
    await alice.client.json("DELETE", `/api/tasks/${b.id}`, undefined, 204);
    expect((await status(alice.client, "GET", `/api/tasks/${b.id}`)).status).toBe(404);
  });

  it("attaches files to a task and serves them only to members", async () => {
    const t = await newTask(alice.client, project.id, { title: "Attach the mapping" });
    const form = new FormData();
    form.append("files", new Blob(["old,new\n1,2\n"], { type: "text/csv" }), "mapping.csv");
    const r = await srv.fetch(`/api/tasks/${t.id}/attachments`, {
      method: "POST",
      headers: alice.client.headers(),
      body: form,
    });
    expect(r.status).toBe(201);
    const [file] = ((await r.json()) as Data<{ id: string; name: string; size: number }[]>).data;
    expect(file).toMatchObject({ name: "mapping.csv", size: 12 });
    const down = await srv.fetch(`/api/tasks/${t.id}/attachments/${file!.id}`, {
      headers: carol.client.headers(),
    });
    expect(down.status).toBe(200);
    expect(await down.text()).toBe("old,new\n1,2\n");
    expect(down.headers.get("content-disposition")).toContain("attachment");
    expect(
      (await srv.fetch(`/api/tasks/${t.id}/attachments/${file!.id}`, { headers: dan.client.headers() }))
        .status,
    ).toBe(404);
    const viewer = new FormData();
    viewer.append("files", new Blob(["x"]), "x.txt");
    expect(
      (
        await srv.fetch(`/api/tasks/${t.id}/attachments`, {
          method: "POST",
          headers: carol.client.headers(),
          body: viewer,
        })
      ).status,
    ).toBe(403);
    const empty = new FormData();
    empty.append("files", new Blob([]), "empty.txt");
    expect(
      (
        await srv.fetch(`/api/tasks/${t.id}/attachments`, {
          method: "POST",
          headers: alice.client.headers(),
          body: empty,
        })
      ).status,
    ).toBe(400);
    // Too large (413), not multipart (415), no file, too many files (400): nothing is stored, no file is left.
    const big = new FormData();
    big.append("files", new Blob([new Uint8Array(150_000)]), "big.bin");
    const tooBig = await srv.fetch(`/api/tasks/${t.id}/attachments`, {
      method: "POST",
      headers: alice.client.headers(),
      body: big,
    });
    expect(tooBig.status).toBe(413);
    expect(((await tooBig.json()) as Err).error.code).toBeTruthy();
    expect(
      (await status(alice.client, "POST", `/api/tasks/${t.id}/attachments`, { files: ["x"] })).status,
    ).toBe(415);
    const none = new FormData();
    none.append("note", "no files here");
    expect(
      (
        await srv.fetch(`/api/tasks/${t.id}/attachments`, {
          method: "POST",
          headers: alice.client.headers(),
          body: none,
        })
      ).status,
    ).toBe(400);
    const many = new FormData();
    for (let i = 0; i < 11; i++) many.append("files", new Blob([`f${i}`]), `f${i}.txt`);
    expect(
      (
        await srv.fetch(`/api/tasks/${t.id}/attachments`, {
          method: "POST",
          headers: alice.client.headers(),
          body: many,
        })
      ).status,
    ).toBe(400);
    expect(
      (
        await srv.fetch(`/api/tasks/${t.id}/attachments`, {
          method: "POST",
          headers: other.owner.headers(),
          body: viewer,
        })
      ).status,
    ).toBe(404);
    const { readdir } = await import("node:fs/promises");
    const stored = await readdir(path.join(srv.config.dataDir, "projects", "files", org.orgId)).catch(
      () => [],
    );
    expect(stored).toHaveLength(1);
    expect(await readdir(path.join(srv.config.dataDir, "projects", "tmp")).catch(() => [])).toEqual([]);
    expect((await getTask(alice.client, t.id)).attachments).toHaveLength(1);
    await alice.client.json("DELETE", `/api/tasks/${t.id}/attachments/${file!.id}`, undefined, 204);
    expect((await getTask(alice.client, t.id)).attachments).toHaveLength(0);
  });
});

describe("reminders", () => {
  it("fire once per assignee when due, not for muted or finished tasks, and again after a snooze", async () => {
    const soon = new Date(Date.now() + 3600_000).toISOString();
    const past = new Date(Date.now() - 3600_000).toISOString();
    const dueSoon = await newTask(alice.client, project.id, {
      title: "Sign the data agreement",
      dueAt: soon,
      assigneeIds: [bob.id],
    });
    const late = await newTask(alice.client, project.id, {
      title: "Book the training room",
      dueAt: past,
      assigneeIds: [bob.id, alice.id],
    });
    const muted = await newTask(alice.client, project.id, {
      title: "Order badges",
      dueAt: past,
      assigneeIds: [alice.id],
    });
    await alice.client.json("PATCH", `/api/tasks/${muted.id}/reminders`, { muted: true });
    const finished = await newTask(alice.client, project.id, {
      title: "Old chore",
      dueAt: past,
      assigneeIds: [alice.id],
      statusId: project.statuses[3]!.id,
    });
    expect(
      (await status(carol.client, "PATCH", `/api/tasks/${late.id}/reminders`, { muted: true })).status,
    ).toBe(409);
    expect(
      (await status(alice.client, "PATCH", `/api/tasks/${late.id}/reminders`, { snoozeHours: 0 })).status,
    ).toBe(400);

    await fireDueReminders(srv.db.knex);
    await fireDueReminders(srv.db.knex);
    const sent = await sql((trx) =>
      trx("notifications").where({ source_type: "task_reminder" }).select("user_id", "kind", "link"),
    );
    const of = (taskId: string) =>
      sent
        .filter((n) => String(n.link).endsWith(taskId))
        .map((n) => `${n.user_id === bob.id ? "bob" : "alice"}:${n.kind}`)
        .sort();
    expect(of(dueSoon.id)).toEqual(["bob:task.due_soon"]);
    expect(of(late.id)).toEqual(["alice:task.overdue", "bob:task.overdue"]);
    expect(of(muted.id)).toEqual([]);
    expect(of(finished.id)).toEqual([]);
    // Snoozing re-arms the reminder for later; it fires again once that time has come.
    const r = (
      await bob.client.json<Data<{ next: string }>>("PATCH", `/api/tasks/${late.id}/reminders`, {
        snoozeHours: 2,
      })
    ).data;
    expect(new Date(r.next).getTime()).toBeGreaterThan(Date.now() + 3600_000);
    await fireDueReminders(srv.db.knex);
    expect(of(late.id)).toHaveLength(2);
    await sql((trx) =>
      trx("task_reminders")
        .where({ task_id: late.id, user_id: bob.id })
        .update({ fire_at: trx.raw("now() - interval '1 second'") }),
    );
    await fireDueReminders(srv.db.knex);
    const again = await sql((trx) =>
      trx("notifications")
        .where({ source_type: "task_reminder", user_id: bob.id })
        .where("link", "like", `%${late.id}`)
        .count({ n: "*" })
        .first(),
    );
    expect(Number(again?.n)).toBe(2);
    // A new due time sets new reminders; finishing the task cancels those not yet sent.
    await alice.client.json("PATCH", `/api/tasks/${dueSoon.id}`, { statusId: project.statuses[3]!.id });
    expect(
      await sql((trx) =>
        trx("task_reminders").where({ task_id: dueSoon.id }).whereNull("fired_at").pluck("kind"),
      ),
    ).toEqual([]);
  });
});

describe("KPIs", () => {
  it("match figures computed by hand on seeded tasks", async () => {
    const p = await newProject(alice.client, {
      name: "KPI",
      members: [
        { userId: bob.id, role: "editor" },
        { userId: carol.id, role: "editor" },
      ],
    });
    const now = Date.now();
    const today = new Date(new Date(now).toISOString().slice(0, 10) + "T00:00:00Z");
    const dow = (today.getUTCDay() + 6) % 7;
    const ws = today.getTime() - dow * 86400_000; // Monday 00:00 UTC of this week
    const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
    const H = 3600_000;
    const D = 86400_000;
    const ms = (
      await alice.client.json<Data<{ id: string }>>(
        "POST",
        `/api/projects/${p.id}/milestones`,
        { name: "Go-live", startDate: day(today.getTime() - 3 * D), dueDate: day(today.getTime() + 3 * D) },
        201,
      )
    ).data;
    const t: Task[] = [];
    for (const [i, extra] of [
      {},
      {},
      { milestoneId: ms.id },
      { milestoneId: ms.id, assigneeIds: [bob.id], estimateHours: 3, dueAt: new Date(now - D).toISOString() },
      {
        milestoneId: ms.id,
        assigneeIds: [bob.id],
        estimateHours: 2,
        dueAt: new Date(now + 5 * D).toISOString(),
      },
      { assigneeIds: [carol.id] },
    ].entries())
      t.push(await newTask(alice.client, p.id, { title: `K${i + 1}`, ...extra }));
    const at = (x: number) => new Date(x).toISOString();
    const seed: [number, Record<string, string | null>][] = [
      [0, { created_at: at(ws - 14 * D), started_at: at(ws - 13 * D), completed_at: at(ws - 10 * D) }],
      [1, { created_at: at(ws - 14 * D), started_at: at(ws - 7 * D + H), completed_at: at(ws - 6 * D + H) }],
      [
        2,
        { created_at: at(ws - 7 * D), started_at: at(now - 10 * H - 60_000), completed_at: at(now - 60_000) },
      ],
      [3, { created_at: at(ws - 14 * D) }],
      [4, { created_at: at(today.getTime() - 2 * D + 12 * H) }],
      [5, { created_at: at(ws - 14 * D) }],
    ];
    await sql(async (trx) => {
      for (const [i, cols] of seed) await trx("tasks").where({ id: t[i]!.id }).update(cols);
    });
    const k = (
      await alice.client.json<
        Data<{
          total: number;
          done: number;
          completionRate: number;
          overdue: { count: number; taskIds: string[] };
          throughput: { weekStart: string; done: number; taskIds: string[] }[];
          cycleTime: { samples: number; medianHours: number; averageHours: number };
          burndown: {
            name: string;
            scope: number;
            points: { date: string; remaining: number | null; ideal: number }[];
          };
          workload: { userId: string; open: number; openHours: number; overdue: number; taskIds: string[] }[];
        }>
      >("GET", `/api/projects/${p.id}/kpis?weeks=3`)
    ).data;
    expect(k.total).toBe(6);
    expect(k.done).toBe(3);
    expect(k.completionRate).toBe(0.5);
    expect(k.overdue).toEqual({ count: 1, taskIds: [t[3]!.id] });
    expect(k.throughput).toEqual([
      { weekStart: day(ws - 14 * D), done: 1, taskIds: [t[0]!.id] },
      { weekStart: day(ws - 7 * D), done: 1, taskIds: [t[1]!.id] },
      { weekStart: day(ws), done: 1, taskIds: [t[2]!.id] },
    ]);
    // 72 h, 24 h and 10 h: median 24, mean 35.3.
    expect(k.cycleTime).toMatchObject({ samples: 3, medianHours: 24, averageHours: 35.3 });
    expect(k.burndown.name).toBe("Go-live");
    expect(k.burndown.scope).toBe(3);
    expect(k.burndown.points.map((x) => x.remaining)).toEqual([2, 3, 3, 2, null, null, null]);
    expect(k.burndown.points.map((x) => x.ideal)).toEqual([3, 2.5, 2, 1.5, 1, 0.5, 0]);
    const load = new Map(k.workload.map((w) => [w.userId, w]));
    expect(load.get(bob.id)).toMatchObject({ open: 2, openHours: 5, overdue: 1 });
    expect(load.get(bob.id)?.taskIds.sort()).toEqual([t[3]!.id, t[4]!.id].sort());
    expect(load.get(carol.id)).toMatchObject({ open: 1, openHours: 0, overdue: 0 });
    expect(load.get(alice.id)).toMatchObject({ open: 0, openHours: 0 });
    // Each KPI's drill-down list shows the same tasks.
    const week = (
      await alice.client.json<{ data: Task[] }>(
        "GET",
        `/api/projects/${p.id}/tasks?completedAfter=${encodeURIComponent(at(ws - 7 * D))}&completedBefore=${encodeURIComponent(at(ws))}`,
      )
    ).data;
    expect(week.map((x) => x.id)).toEqual([t[1]!.id]);
    const overdue = (
      await alice.client.json<{ data: Task[] }>("GET", `/api/projects/${p.id}/tasks?overdue=true`)
    ).data;
    expect(overdue.map((x) => x.id)).toEqual([t[3]!.id]);
    expect((await status(alice.client, "GET", `/api/projects/${p.id}/kpis?weeks=99`)).status).toBe(400);
    expect((await status(dan.client, "GET", `/api/projects/${p.id}/kpis`)).status).toBe(404);
  });
});

describe("the AI project manager (scripted engine)", () => {
  let goalProject: Project;
  beforeAll(async () => {
    const tiny = path.join(mkdtempSync(path.join(tmpdir(), "ws-projects-")), "tiny.gguf");
    makeTinyModel(tiny);
    await importModel(srv.db.knex, await srv.ai!.llama(), srv.config, {
      file: tiny,
      name: "tiny",
      role: "chat",
    });
    goalProject = await newProject(alice.client, {
      name: "Goals",
      members: [
        { userId: bob.id, role: "editor" },
        { userId: carol.id, role: "viewer" },
      ],
    });
  });

  it("proposes tasks from a goal with dependencies and suggested assignees; accepting creates exactly them", async () => {
    await newTask(alice.client, goalProject.id, {
      title: "Existing work",
      assigneeIds: [alice.id],
      estimateHours: 30,
    });
    engine.script = (s) => {
      expect(s.prompt).toContain("Open the new clinic");
      expect(s.prompt).toMatch(/- alice \S+: \d+ open tasks, 30 hours open/);
      const props = (
        s.schema.properties as { tasks: { items: { properties: { assignee: { enum: string[] } } } } }
      ).tasks.items.properties;
      expect(props.assignee.enum).toContain("nobody");
      expect(props.assignee.enum).not.toContain(`carol ${org.marker}`); // viewers are not offered
      return {
        tasks: [
          {
            title: "Hire staff",
            description: "Two nurses.",
            estimateHours: 16,
            dependsOn: [],
            assignee: `bob ${org.marker}`,
          },
          {
            title: "Fit out rooms",
            description: "Beds and screens.",
            estimateHours: 24,
            dependsOn: [1, 2, 3],
            assignee: "nobody",
          },
          {
            title: "Open doors",
            description: "Launch day.",
            estimateHours: 4,
            dependsOn: [1, 2],
            assignee: "nobody",
          },
        ],
      };
    };
    const proposal = (
      await bob.client.json<
        Data<{
          runId: string;
          tasks: {
            ref: string;
            title: string;
            dependsOn: string[];
            assigneeId: string | null;
            estimateHours: number;
          }[];
        }>
      >("POST", `/api/projects/${goalProject.id}/breakdown`, { goal: "Open the new clinic", maxTasks: 3 })
    ).data;
    expect(proposal.tasks.map((t) => [t.ref, t.dependsOn])).toEqual([
      ["1", []],
      ["2", ["1"]], // only earlier tasks: no cycle can be proposed
      ["3", ["1", "2"]],
    ]);
    // The model's pick, then the least-loaded editor: bob has 16 h after task 1 (alice 30 h), then 40 h.
    expect(proposal.tasks.map((t) => t.assigneeId)).toEqual([bob.id, bob.id, alice.id]);
    const run = await sql((trx) => trx("ai_runs").where({ id: proposal.runId }).first());
    expect(run).toMatchObject({ status: "completed", user_id: bob.id, question: "Open the new clinic" });
    expect(
      await sql((trx) => trx("tasks").where({ project_id: goalProject.id }).count({ n: "*" }).first()),
    ).toMatchObject({ n: "1" });

    // The person edits: drops task 3, renames task 2. Bad edits are refused whole.
    const edited = [
      { ...proposal.tasks[0]!, priority: "high" },
      { ...proposal.tasks[1]!, title: "Fit out two rooms" },
    ];
    const count = async () =>
      Number(
        (await sql((trx) => trx("tasks").where({ project_id: goalProject.id }).count({ n: "*" }).first()))?.n,
      );
    for (const tasks of [
      [edited[0], { ...edited[1], dependsOn: ["3"] }],
      [{ ...edited[0], dependsOn: ["2"] }, edited[1]],
      [edited[0], { ...edited[1], assigneeId: dan.id }],
      [edited[0], { ...edited[1], ref: "1" }],
      [],
    ]) {
      expect(
        (
          await status(bob.client, "POST", `/api/projects/${goalProject.id}/breakdown/accept`, {
            runId: proposal.runId,
            tasks,
          })
        ).status,
      ).toBe(400);
      expect(await count()).toBe(1);
    }
    expect(
      (
        await status(carol.client, "POST", `/api/projects/${goalProject.id}/breakdown/accept`, {
          tasks: edited,
        })
      ).status,
    ).toBe(403);
    const ids = (
      await bob.client.json<Data<{ taskIds: string[] }>>(
        "POST",
        `/api/projects/${goalProject.id}/breakdown/accept`,
        { runId: proposal.runId, goal: "Open the new clinic", tasks: edited },
        201,
      )
    ).data.taskIds;
    expect(ids).toHaveLength(2);
    expect(await count()).toBe(3);
    const [hire, fit] = [await getTask(bob.client, ids[0]!), await getTask(bob.client, ids[1]!)];
    expect(hire).toMatchObject({ title: "Hire staff", estimateHours: 16 });
    expect(fit.title).toBe("Fit out two rooms");
    expect(fit.blockedBy).toEqual([hire.id]);
    expect(fit.assignees.map((a) => a.id)).toEqual([bob.id]);
    // Viewers cannot ask for a breakdown; empty goals are refused; no model means 409.
    expect(
      (await status(carol.client, "POST", `/api/projects/${goalProject.id}/breakdown`, { goal: "Anything" }))
        .status,
    ).toBe(403);
    expect(
      (await status(bob.client, "POST", `/api/projects/${goalProject.id}/breakdown`, { goal: "" })).status,
    ).toBe(400);
    expect(
      (
        await status(bob.client, "POST", `/api/projects/${goalProject.id}/breakdown`, {
          goal: "ok goal",
          maxTasks: 50,
        })
      ).status,
    ).toBe(400);
  });

  it("writes a weekly summary whose every claim links to the tasks it rests on", async () => {
    engine.script = (s) => {
      expect(s.prompt).toMatch(/T1: #\d+ "/);
      const refs = (
        s.schema.properties as { claims: { items: { properties: { tasks: { items: { enum: string[] } } } } } }
      ).claims.items.properties.tasks.items.enum;
      expect(refs[0]).toBe("T1");
      return {
        claims: [
          { text: "Hiring has started and fitting out waits on it.", tasks: ["T1", "T2", "T1"] },
          { text: "Nothing is overdue yet this week.", tasks: ["T3"] },
        ],
      };
    };
    const s = (
      await carol.client.json<Data<{ claims: { text: string; tasks: { id: string; title: string }[] }[] }>>(
        "POST",
        `/api/projects/${goalProject.id}/summary`,
        undefined,
        201,
      )
    ).data;
    expect(s.claims).toHaveLength(2);
    expect(s.claims.every((c) => c.tasks.length >= 1)).toBe(true);
    expect(s.claims[0]!.tasks).toHaveLength(2);
    const titles = new Set(
      (await carol.client.json<{ data: Task[] }>("GET", `/api/projects/${goalProject.id}/tasks`)).data.map(
        (t) => t.title,
      ),
    );
    expect(s.claims.flatMap((c) => c.tasks.map((t) => t.title)).every((t) => titles.has(t))).toBe(true);
    expect(
      (await carol.client.json<Data<{ claims: unknown[] }>>("GET", `/api/projects/${goalProject.id}/summary`))
        .data.claims,
    ).toHaveLength(2);
    const empty = await newProject(alice.client, { name: "Empty" });
    expect((await status(alice.client, "POST", `/api/projects/${empty.id}/summary`)).status).toBe(409);
    expect((await alice.client.json<Data<null>>("GET", `/api/projects/${empty.id}/summary`)).data).toBeNull();
  });

  it("offers the assistant tools that run as the asking user, each change marked as the assistant's", async () => {
    const caller = async (userId: string, perms: string[]): Promise<Caller> => ({
      orgId: org.orgId,
      userId,
      email: "x@example.org",
      permissions: new Set(perms),
      systemAdmin: false,
      via: "session",
    });
    const bobCaller = await caller(bob.id, ["projects.read", "projects.write"]);
    const found = await srv.tools!.invoke(srv.db.knex, bobCaller, "tasks.search", { query: "staff" });
    expect(found.status).toBe("ok");
    const hits = (found as { output: { id: string; title: string }[] }).output;
    expect(hits.map((h) => h.title)).toEqual(["Hire staff"]);
    expect(
      (
        await srv.tools!.invoke(srv.db.knex, bobCaller, "tasks.create", {
          projectId: goalProject.id,
          title: "From the assistant",
        })
      ).status,
    ).toBe("approval_required");
    const made = await srv.tools!.invoke(
      srv.db.knex,
      bobCaller,
      "tasks.create",
      { projectId: goalProject.id, title: "From the assistant" },
      { approved: true },
    );
    expect(made.status).toBe("ok");
    const id = (made as { output: { id: string } }).output.id;
    const moved = await srv.tools!.invoke(
      srv.db.knex,
      bobCaller,
      "tasks.update",
      { taskId: id, status: "done" },
      { approved: true },
    );
    expect(moved.status).toBe("ok");
    const t = await getTask(bob.client, id);
    expect(t.category).toBe("done");
    expect(t.activity.map((a) => `${a.action}:${a.via}:${a.actor?.id === bob.id}`)).toEqual([
      "task.update:assistant:true",
      "task.create:assistant:true",
    ]);
    // Dan is not a member: the tools see nothing of the project and cannot write to it.
    const danCaller = await caller(dan.id, ["projects.read", "projects.write"]);
    expect(
      (await srv.tools!.invoke(srv.db.knex, danCaller, "tasks.search", { query: "staff" })) as {
        output: unknown[];
      },
    ).toMatchObject({ output: [] });
    expect(
      (
        await srv.tools!.invoke(
          srv.db.knex,
          danCaller,
          "tasks.comment",
          { taskId: id, body: "hi" },
          { approved: true },
        )
      ).status,
    ).toBe("error");
    const summary = await srv.tools!.invoke(srv.db.knex, bobCaller, "projects.summary", {
      projectId: goalProject.id,
    });
    expect((summary as { output: { total: number; weeklySummary: string[] } }).output).toMatchObject({
      total: 4,
    });
    const listed = await srv.tools!.invoke(
      srv.db.knex,
      await caller(carol.id, ["projects.read"]),
      "projects.list",
      {},
    );
    expect(
      (listed as { output: { name: string; role: string }[] }).output.map((p) => `${p.name}:${p.role}`),
    ).toContain("Goals:viewer");
    expect(
      (
        await srv.tools!.invoke(
          srv.db.knex,
          await caller(carol.id, ["projects.read"]),
          "tasks.create",
          { projectId: goalProject.id, title: "x" },
          { approved: true },
        )
      ).status,
    ).toBe("denied");
  });
});
