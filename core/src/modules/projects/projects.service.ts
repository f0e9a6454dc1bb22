import path from "node:path";
import { mkdir, rename, rm } from "node:fs/promises";
import type { Knex } from "knex";
import { fileTypeFromFile } from "file-type";
import type { Config } from "../../config/schema.js";
import { can } from "../../platform/auth/caller.js";
import type { Scope } from "../../platform/http/api.js";
import { AppError } from "../../platform/http/errors.js";
import { formatMegabytes, fsyncDir, type Received } from "../../platform/http/uploads.js";
import { actorOf, audit } from "../identity/audit.js";
import { addNotifications } from "../notifications/notifications.service.js";
import type { CATEGORIES, PRIORITIES, ROLES } from "./projects.schemas.js";

/** A service call; `via: "assistant"` marks changes the assistant made for the caller in the activity log. */
export interface Svc extends Scope {
  via?: "user" | "assistant";
}

/** A person's role in a project. */
export type Role = (typeof ROLES)[number];
type Category = (typeof CATEGORIES)[number];
type Priority = (typeof PRIORITIES)[number];

/** Seen by administrators of the organization in every project, as its owners. */
const MANAGE = "projects.manage";
const DEFAULT_STATUSES: { name: string; category: Category }[] = [
  { name: "To do", category: "todo" },
  { name: "In progress", category: "started" },
  { name: "Review", category: "started" },
  { name: "Done", category: "done" },
];
const PRIORITY_RANK = "array_position(array['urgent','high','medium','low','none'], t.priority)";
/** Gap between neighbours on the board; a move halves it, so dozens of moves fit before a renumbering. */
const STEP = 1024;

const iso = (d: Date | string | null | undefined) => (d ? new Date(d).toISOString() : null);
/** A PostgreSQL date (read as local midnight by the driver) as YYYY-MM-DD. */
export const dayOf = (d: Date | string) =>
  typeof d === "string"
    ? d.slice(0, 10)
    : new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 10);

// ---------- access ----------

/** The caller's role in a project (projects.manage acts as owner), or 404: a project you are not in does not exist for you. */
export async function roleIn(svc: Svc, projectId: string, opts: { lock?: boolean } = {}) {
  const q = svc.trx("projects").where({ id: projectId });
  if (opts.lock) q.forUpdate();
  const p = await q.first("id", "archived_at", "name");
  if (!p) throw AppError.notFound("Project not found.");
  const m = await svc
    .trx("project_members")
    .where({ project_id: projectId, user_id: svc.caller.userId })
    .first("role");
  const role = (can(svc.caller, MANAGE) ? "owner" : m?.role) as Role | undefined;
  if (!role) throw AppError.notFound("Project not found.");
  return { role, archived: Boolean(p.archived_at), name: p.name as string };
}

const RANK: Record<Role, number> = { viewer: 0, editor: 1, owner: 2 };

/** Throws unless the caller has at least `need` in the project; writes to an archived project are refused. */
export async function requireRole(
  svc: Svc,
  projectId: string,
  need: Role,
  opts: { allowArchived?: boolean } = {},
) {
  const r = await roleIn(svc, projectId);
  if (RANK[r.role] < RANK[need])
    throw AppError.forbidden(
      need === "owner"
        ? "Only the project's owners can do that."
        : "You can view this project but not change it.",
    );
  if (r.archived && need !== "viewer" && !opts.allowArchived)
    throw AppError.conflict("This project is archived; unarchive it first.");
  return r;
}

// ---------- activity ----------

/** Records who changed what; every task and project change goes through here. */
export async function logActivity(
  svc: Svc,
  projectId: string,
  taskId: string | null,
  action: string,
  changes: Record<string, unknown> = {},
) {
  await svc.trx("activity_logs").insert({
    org_id: svc.caller.orgId,
    project_id: projectId,
    task_id: taskId,
    actor_id: svc.caller.userId,
    via: svc.via ?? "user",
    action,
    changes: JSON.stringify(changes),
  });
}

// ---------- projects ----------

interface ProjectRow {
  id: string;
  name: string;
  description: string;
  archived_at: Date | null;
  created_at: Date;
  updated_at: Date;
  my_role: Role | null;
  total: number;
  done: number;
  overdue: number;
}

function projectsOf(svc: Svc) {
  const { trx, caller } = svc;
  const q = trx({ p: "projects" }).select(
    "p.*",
    trx.raw("project_role(p.id, ?) as my_role", [caller.userId]),
    trx.raw("(select count(*)::int from tasks t where t.project_id = p.id) as total"),
    trx.raw(
      "(select count(*)::int from tasks t where t.project_id = p.id and t.completed_at is not null) as done",
    ),
    trx.raw(
      "(select count(*)::int from tasks t where t.project_id = p.id and t.completed_at is null and t.due_at < now()) as overdue",
    ),
  );
  if (!can(caller, MANAGE)) q.whereRaw("project_role(p.id, ?) is not null", [caller.userId]);
  return q;
}

function presentProject(r: ProjectRow, manage: boolean) {
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    archivedAt: iso(r.archived_at),
    myRole: (manage ? "owner" : r.my_role) as Role,
    counts: { total: r.total, done: r.done, overdue: r.overdue },
    createdAt: iso(r.created_at) as string,
    updatedAt: iso(r.updated_at) as string,
  };
}

/** The projects the caller is a member of (all of them for projects.manage). */
export async function listProjects(svc: Svc, q: { archived: boolean }) {
  const rows = (await projectsOf(svc)
    .modify((b) => (q.archived ? b.whereNotNull("p.archived_at") : b.whereNull("p.archived_at")))
    .orderByRaw("lower(p.name)")) as ProjectRow[];
  return rows.map((r) => presentProject(r, can(svc.caller, MANAGE)));
}

/** One project with its statuses, labels, milestones and members. */
export async function getProject(svc: Svc, id: string) {
  await roleIn(svc, id);
  const { trx } = svc;
  const row = (await projectsOf(svc).where("p.id", id).first()) as ProjectRow;
  const [statuses, labels, milestones, members] = [
    await trx("project_statuses").where({ project_id: id }).orderBy("position"),
    await trx("labels").where({ project_id: id }).orderByRaw("lower(name)"),
    await trx("milestones").where({ project_id: id }).orderBy("due_date"),
    await trx({ m: "project_members" })
      .join({ u: "users" }, "u.id", "m.user_id")
      .where("m.project_id", id)
      .orderByRaw("array_position(array['owner','editor','viewer'], m.role), lower(u.display_name)")
      .select("m.user_id", "m.role", "u.display_name", "u.email"),
  ];
  return {
    ...presentProject(row, can(svc.caller, MANAGE)),
    statuses: statuses.map((s) => ({ id: s.id, name: s.name, category: s.category, position: s.position })),
    labels: labels.map((l) => ({ id: l.id, name: l.name, color: l.color })),
    milestones: milestones.map(presentMilestone),
    members: members.map((m) => ({
      userId: m.user_id,
      displayName: m.display_name,
      email: m.email,
      role: m.role,
    })),
  };
}

const presentMilestone = (m: Record<string, unknown>) => ({
  id: m.id as string,
  projectId: m.project_id as string,
  name: m.name as string,
  startDate: dayOf(m.start_date as Date),
  dueDate: dayOf(m.due_date as Date),
});

/** Every user id must be an active person of the organization (RLS hides the others). */
async function assertPeople(svc: Svc, ids: string[], field: string) {
  const unique = [...new Set(ids)];
  if (!unique.length) return;
  const found = await svc.trx("users").whereIn("id", unique).where({ status: "active" }).pluck("id");
  if (found.length !== unique.length)
    throw AppError.badRequest("Some of these people are not in your organization.", {
      field,
      unknown: unique.filter((u) => !found.includes(u)),
    });
}

/** Creates a project with the default statuses; the caller is its first owner. */
export async function createProject(
  svc: Svc,
  input: { name: string; description: string; members: { userId: string; role: Role }[] },
) {
  const { trx, caller } = svc;
  await assertPeople(
    svc,
    input.members.map((m) => m.userId),
    "members",
  );
  const [p] = await trx("projects")
    .insert({
      org_id: caller.orgId,
      name: input.name,
      description: input.description,
      created_by: caller.userId,
    })
    .returning("id");
  const members = new Map(input.members.map((m) => [m.userId, m.role]));
  members.set(caller.userId, "owner");
  await trx("project_members").insert(
    [...members].map(([userId, role]) => ({ org_id: caller.orgId, project_id: p.id, user_id: userId, role })),
  );
  await trx("project_statuses").insert(
    DEFAULT_STATUSES.map((s, i) => ({
      org_id: caller.orgId,
      project_id: p.id,
      name: s.name,
      category: s.category,
      position: i,
    })),
  );
  await logActivity(svc, p.id, null, "project.create", { name: input.name });
  await audit(trx, {
    ...actorOf(caller),
    action: "project.create",
    targetType: "project",
    targetId: p.id,
    outcome: "success",
    details: { name: input.name },
  });
  return getProject(svc, p.id);
}

/** Renames, describes, archives or unarchives a project (owners). */
export async function updateProject(
  svc: Svc,
  id: string,
  input: { name?: string; description?: string; archived?: boolean },
) {
  await requireRole(svc, id, "owner", { allowArchived: true });
  const patch: Record<string, unknown> = { updated_at: svc.trx.fn.now() };
  if (input.name !== undefined) patch.name = input.name;
  if (input.description !== undefined) patch.description = input.description;
  if (input.archived !== undefined) patch.archived_at = input.archived ? svc.trx.fn.now() : null;
  await svc.trx("projects").where({ id }).update(patch);
  await logActivity(svc, id, null, "project.update", input);
  if (input.archived !== undefined)
    await audit(svc.trx, {
      ...actorOf(svc.caller),
      action: input.archived ? "project.archive" : "project.unarchive",
      targetType: "project",
      targetId: id,
      outcome: "success",
    });
  return getProject(svc, id);
}

/** Deletes a project with its tasks (owners; audited). */
export async function deleteProject(svc: Svc, id: string) {
  const r = await requireRole(svc, id, "owner", { allowArchived: true });
  await svc.trx("projects").where({ id }).delete();
  await audit(svc.trx, {
    ...actorOf(svc.caller),
    action: "project.delete",
    targetType: "project",
    targetId: id,
    outcome: "success",
    details: { name: r.name },
  });
}

/** Replaces the members and their roles (owners); a project always keeps an owner. */
export async function setMembers(svc: Svc, id: string, members: { userId: string; role: Role }[]) {
  await requireRole(svc, id, "owner");
  const byUser = new Map(members.map((m) => [m.userId, m.role]));
  if (![...byUser.values()].includes("owner"))
    throw AppError.badRequest("A project needs at least one owner.", { field: "members" });
  await assertPeople(svc, [...byUser.keys()], "members");
  const before = await svc.trx("project_members").where({ project_id: id }).select("user_id", "role");
  await svc.trx("project_members").where({ project_id: id }).delete();
  await svc.trx("project_members").insert(
    [...byUser].map(([userId, role]) => ({
      org_id: svc.caller.orgId,
      project_id: id,
      user_id: userId,
      role,
    })),
  );
  // People who left the project are no longer assigned to its tasks.
  await svc
    .trx("task_assignments")
    .whereIn("task_id", svc.trx("tasks").select("id").where({ project_id: id }))
    .whereNotIn("user_id", [...byUser.keys()])
    .delete();
  await svc
    .trx("task_reminders")
    .whereIn("task_id", svc.trx("tasks").select("id").where({ project_id: id }))
    .whereNotIn("user_id", [...byUser.keys()])
    .delete();
  await logActivity(svc, id, null, "project.members", {
    before: Object.fromEntries(before.map((m) => [m.user_id, m.role])),
    after: Object.fromEntries(byUser),
  });
  return getProject(svc, id);
}

/** Replaces the statuses in order (owners): kept ones by id, new ones without; a status still holding tasks cannot go. */
export async function setStatuses(
  svc: Svc,
  id: string,
  statuses: { id?: string; name: string; category: Category }[],
) {
  await requireRole(svc, id, "owner");
  const { trx, caller } = svc;
  if (!statuses.some((s) => s.category === "done") || !statuses.some((s) => s.category !== "done"))
    throw AppError.badRequest("A project needs a done status and at least one that is not done.", {
      field: "statuses",
    });
  const names = new Set(statuses.map((s) => s.name.toLowerCase()));
  if (names.size !== statuses.length)
    throw AppError.badRequest("Two statuses have the same name.", { field: "statuses" });
  const current = (await trx("project_statuses").where({ project_id: id })) as { id: string; name: string }[];
  const keep = new Set(statuses.flatMap((s) => (s.id ? [s.id] : [])));
  const unknown = [...keep].filter((k) => !current.some((c) => c.id === k));
  if (unknown.length)
    throw AppError.badRequest("Some statuses are not this project's.", { field: "statuses", unknown });
  const dropped = current.filter((c) => !keep.has(c.id));
  if (dropped.length) {
    const used = await trx("tasks")
      .whereIn(
        "status_id",
        dropped.map((d) => d.id),
      )
      .first("status_id");
    if (used)
      throw AppError.conflict("Move the tasks out of a status before removing it.", {
        status: dropped.find((d) => d.id === used.status_id)?.name,
      });
    await trx("project_statuses")
      .whereIn(
        "id",
        dropped.map((d) => d.id),
      )
      .delete();
  }
  // Names are unique per project: park the kept ones first, so a swap of two names does not collide.
  await trx("project_statuses")
    .where({ project_id: id })
    .update({ name: trx.raw("id::text") });
  for (const [i, s] of statuses.entries()) {
    if (s.id)
      await trx("project_statuses")
        .where({ id: s.id })
        .update({ name: s.name, category: s.category, position: i });
    else
      await trx("project_statuses").insert({
        org_id: caller.orgId,
        project_id: id,
        name: s.name,
        category: s.category,
        position: i,
      });
  }
  // A task's done-ness follows its status's category.
  await trx.raw(
    `update tasks t set completed_at = case when s.category = 'done' then coalesce(t.completed_at, now()) else null end,
       started_at = case when s.category = 'todo' then t.started_at else coalesce(t.started_at, now()) end
     from project_statuses s where s.id = t.status_id and t.project_id = ?`,
    [id],
  );
  await logActivity(svc, id, null, "project.statuses", {
    statuses: statuses.map((s) => `${s.name} (${s.category})`),
  });
  return getProject(svc, id);
}

/** Adds a label to the project (editors). */
export async function createLabel(svc: Svc, id: string, input: { name: string; color: string }) {
  await requireRole(svc, id, "editor");
  const exists = await svc
    .trx("labels")
    .where({ project_id: id })
    .whereRaw("lower(name) = lower(?)", [input.name])
    .first("id");
  if (exists) throw AppError.conflict("This project already has a label with that name.");
  const [l] = await svc
    .trx("labels")
    .insert({ org_id: svc.caller.orgId, project_id: id, ...input })
    .returning("*");
  await logActivity(svc, id, null, "label.create", { name: input.name });
  return { id: l.id as string, name: l.name as string, color: l.color };
}

/** Removes a label from the project and its tasks (editors). */
export async function deleteLabel(svc: Svc, id: string, labelId: string) {
  await requireRole(svc, id, "editor");
  const n = await svc.trx("labels").where({ id: labelId, project_id: id }).delete().returning("name");
  if (!n.length) throw AppError.notFound("Label not found.");
  await logActivity(svc, id, null, "label.delete", { name: n[0].name });
}

/** Adds a milestone (editors). */
export async function createMilestone(
  svc: Svc,
  id: string,
  input: { name: string; startDate: string; dueDate: string },
) {
  await requireRole(svc, id, "editor");
  const [m] = await svc
    .trx("milestones")
    .insert({
      org_id: svc.caller.orgId,
      project_id: id,
      name: input.name,
      start_date: input.startDate,
      due_date: input.dueDate,
    })
    .returning("*");
  await logActivity(svc, id, null, "milestone.create", input);
  return presentMilestone(m);
}

async function milestoneProject(svc: Svc, milestoneId: string) {
  const m = await svc.trx("milestones").where({ id: milestoneId }).first();
  if (!m) throw AppError.notFound("Milestone not found.");
  await roleIn(svc, m.project_id).catch(() => {
    throw AppError.notFound("Milestone not found.");
  });
  return m as Record<string, unknown> & { project_id: string };
}

/** Renames or reschedules a milestone (editors). */
export async function updateMilestone(
  svc: Svc,
  milestoneId: string,
  input: { name?: string; startDate?: string; dueDate?: string },
) {
  const m = await milestoneProject(svc, milestoneId);
  await requireRole(svc, m.project_id, "editor");
  const start = input.startDate ?? dayOf(m.start_date as Date);
  const due = input.dueDate ?? dayOf(m.due_date as Date);
  if (due < start) throw AppError.badRequest("dueDate must not be before startDate.", { field: "dueDate" });
  const [row] = await svc
    .trx("milestones")
    .where({ id: milestoneId })
    .update({ ...(input.name !== undefined && { name: input.name }), start_date: start, due_date: due })
    .returning("*");
  await logActivity(svc, m.project_id, null, "milestone.update", { id: milestoneId, ...input });
  return presentMilestone(row);
}

/** Deletes a milestone; its tasks stay, without a milestone (editors). */
export async function deleteMilestone(svc: Svc, milestoneId: string) {
  const m = await milestoneProject(svc, milestoneId);
  await requireRole(svc, m.project_id, "editor");
  await svc.trx("milestones").where({ id: milestoneId }).delete();
  await logActivity(svc, m.project_id, null, "milestone.delete", { name: m.name });
}

// ---------- tasks ----------

interface TaskRow {
  id: string;
  project_id: string;
  project_name: string;
  number: number;
  parent_id: string | null;
  title: string;
  description: string;
  status_id: string;
  status_name: string;
  category: Category;
  priority: Priority;
  due_at: Date | null;
  estimate_hours: string | null;
  milestone_id: string | null;
  position: number;
  created_at: Date;
  updated_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  assignees: { id: string; displayName: string }[];
  label_ids: string[];
  blocked_by: string[];
  sub_total: number;
  sub_done: number;
  total?: number;
}

/** Tasks with what lists show of them, limited to the projects the caller may read. */
function tasksOf(svc: Svc) {
  const { trx, caller } = svc;
  const q = trx({ t: "tasks" })
    .join({ s: "project_statuses" }, "s.id", "t.status_id")
    .join({ p: "projects" }, "p.id", "t.project_id")
    .select(
      "t.*",
      "p.name as project_name",
      "s.name as status_name",
      "s.category",
      trx.raw(
        `coalesce((select json_agg(json_build_object('id', u.id, 'displayName', u.display_name) order by lower(u.display_name))
           from task_assignments a join users u on u.id = a.user_id where a.task_id = t.id), '[]') as assignees`,
      ),
      trx.raw("array(select label_id from task_labels l where l.task_id = t.id) as label_ids"),
      trx.raw("array(select blocked_by_id from task_dependencies d where d.task_id = t.id) as blocked_by"),
      trx.raw("(select count(*)::int from tasks c where c.parent_id = t.id) as sub_total"),
      trx.raw(
        "(select count(*)::int from tasks c where c.parent_id = t.id and c.completed_at is not null) as sub_done",
      ),
    );
  if (!can(caller, MANAGE)) q.whereRaw("project_role(t.project_id, ?) is not null", [caller.userId]);
  return q;
}

function presentTask(r: TaskRow) {
  return {
    id: r.id,
    projectId: r.project_id,
    projectName: r.project_name,
    number: r.number,
    parentId: r.parent_id,
    title: r.title,
    statusId: r.status_id,
    statusName: r.status_name,
    category: r.category,
    priority: r.priority,
    dueAt: iso(r.due_at),
    estimateHours: r.estimate_hours === null ? null : Number(r.estimate_hours),
    milestoneId: r.milestone_id,
    position: r.position,
    assignees: r.assignees,
    labelIds: r.label_ids,
    blockedBy: r.blocked_by,
    subtasks: { total: r.sub_total, done: r.sub_done },
    overdue: !r.completed_at && !!r.due_at && new Date(r.due_at).getTime() < Date.now(),
    createdAt: iso(r.created_at) as string,
    updatedAt: iso(r.updated_at) as string,
    startedAt: iso(r.started_at),
    completedAt: iso(r.completed_at),
  };
}

/** The task list's filters. */
export interface TaskQuery {
  q?: string;
  statusId?: string;
  category?: Category;
  assigneeId?: string;
  labelId?: string;
  priority?: Priority;
  milestoneId?: string;
  overdue?: boolean;
  parentId?: string;
  topLevel?: boolean;
  completedAfter?: string;
  completedBefore?: string;
  /** Only tasks not done. */
  open?: boolean;
  sort: "position" | "number" | "due" | "priority" | "created" | "updated" | "title";
  order: "asc" | "desc";
  limit: number;
  offset: number;
}

function filtered(svc: Svc, q: TaskQuery) {
  const query = tasksOf(svc).select(svc.trx.raw("count(*) over ()::int as total"));
  if (q.statusId) query.where("t.status_id", q.statusId);
  if (q.category) query.where("s.category", q.category);
  if (q.assigneeId)
    query.whereExists((b) =>
      b
        .from({ a: "task_assignments" })
        .whereRaw("a.task_id = t.id")
        .where("a.user_id", q.assigneeId === "me" ? svc.caller.userId : q.assigneeId),
    );
  if (q.labelId)
    query.whereExists((b) =>
      b.from({ l: "task_labels" }).whereRaw("l.task_id = t.id").where("l.label_id", q.labelId),
    );
  if (q.priority) query.where("t.priority", q.priority);
  if (q.milestoneId) query.where("t.milestone_id", q.milestoneId);
  if (q.overdue === true) query.whereNull("t.completed_at").where("t.due_at", "<", svc.trx.fn.now());
  if (q.overdue === false) query.whereRaw("not (t.completed_at is null and t.due_at < now())");
  if (q.parentId) query.where("t.parent_id", q.parentId);
  if (q.topLevel) query.whereNull("t.parent_id");
  if (q.completedAfter) query.where("t.completed_at", ">=", q.completedAfter);
  if (q.completedBefore) query.where("t.completed_at", "<", q.completedBefore);
  if (q.open) query.whereNull("t.completed_at");
  if (q.q) {
    const tsq = svc.trx.raw("websearch_to_tsquery('english', ?)", [q.q]);
    query.where((b) =>
      b
        .whereRaw("t.search @@ ?", [tsq])
        .orWhereRaw("t.title ilike ?", [`%${q.q!.replace(/[\\%_]/g, "\\$&")}%`]),
    );
  }
  const dir = q.order;
  const nulls = dir === "asc" ? "nulls last" : "nulls first";
  switch (q.sort) {
    case "position":
      query.orderBy("s.position", dir).orderBy("t.position", dir);
      break;
    case "number":
      query.orderBy("t.number", dir);
      break;
    case "due":
      query.orderByRaw(`t.due_at ${dir} ${nulls}`);
      break;
    case "priority":
      query.orderByRaw(`${PRIORITY_RANK} ${dir}`);
      break;
    case "created":
      query.orderBy("t.created_at", dir);
      break;
    case "updated":
      query.orderBy("t.updated_at", dir);
      break;
    case "title":
      query.orderByRaw(`lower(t.title) ${dir}`);
  }
  return query.orderBy("t.number", "asc").limit(q.limit).offset(q.offset);
}

/** A project's tasks, filtered and sorted. */
export async function listTasks(svc: Svc, projectId: string, q: TaskQuery) {
  await roleIn(svc, projectId);
  const rows = (await filtered(svc, q).where("t.project_id", projectId)) as TaskRow[];
  return {
    data: rows.map(presentTask),
    page: { total: rows[0]?.total ?? 0, limit: q.limit, offset: q.offset },
  };
}

/** Tasks across every project the caller may read (the assistant's search, my tasks). */
export async function searchTasks(
  svc: Svc,
  q: TaskQuery & { projectId?: string; includeArchived?: boolean },
) {
  const query = filtered(svc, q);
  if (q.projectId) query.where("t.project_id", q.projectId);
  if (!q.includeArchived) query.whereNull("p.archived_at");
  const rows = (await query) as TaskRow[];
  return {
    data: rows.map(presentTask),
    page: { total: rows[0]?.total ?? 0, limit: q.limit, offset: q.offset },
  };
}

/** The caller's own tasks: open (soonest due first), overdue, or done (latest first). */
export async function myTasks(
  svc: Svc,
  q: { scope: "open" | "overdue" | "done"; limit: number; offset: number },
) {
  const base = { assigneeId: "me", limit: q.limit, offset: q.offset } as const;
  if (q.scope === "done")
    return searchTasks(svc, {
      ...base,
      completedAfter: "1970-01-01T00:00:00Z",
      sort: "updated",
      order: "desc",
    });
  return searchTasks(svc, {
    ...base,
    open: true,
    overdue: q.scope === "overdue" ? true : undefined,
    sort: "due",
    order: "asc",
  });
}

async function taskRow(svc: Svc, id: string, lock = false) {
  const q = tasksOf(svc).where("t.id", id);
  if (lock) q.forUpdate("t");
  const row = (await q.first()) as TaskRow | undefined;
  if (!row) throw AppError.notFound("Task not found.");
  return row;
}

const brief = (trx: Knex.Transaction) =>
  trx({ t: "tasks" }).select("t.id", "t.number", "t.title", trx.raw("t.completed_at is not null as done"));

/** One task with its subtasks, dependencies, comments, attachments and activity. */
export async function getTask(svc: Svc, id: string) {
  const row = await taskRow(svc, id);
  const { role } = await roleIn(svc, row.project_id);
  const { trx, caller } = svc;
  const person = (pid: string | null, pname: string | null) =>
    pid ? { id: pid, displayName: pname ?? "" } : null;
  // One after another: a transaction is one connection.
  const subs = await brief(trx).where("t.parent_id", id).orderBy("t.number");
  const blockers = await brief(trx)
    .join({ d: "task_dependencies" }, "d.blocked_by_id", "t.id")
    .where("d.task_id", id)
    .orderBy("t.number");
  const blocking = await brief(trx)
    .join({ d: "task_dependencies" }, "d.task_id", "t.id")
    .where("d.blocked_by_id", id)
    .orderBy("t.number");
  const comments = await trx({ c: "task_comments" })
    .leftJoin({ u: "users" }, "u.id", "c.author_id")
    .where("c.task_id", id)
    .orderBy("c.created_at")
    .select("c.*", "u.display_name");
  const files = await trx({ f: "task_attachments" })
    .leftJoin({ u: "users" }, "u.id", "f.uploaded_by")
    .where("f.task_id", id)
    .orderBy("f.created_at")
    .select("f.*", "u.display_name");
  const activity = await trx({ a: "activity_logs" })
    .leftJoin({ u: "users" }, "u.id", "a.actor_id")
    .where("a.task_id", id)
    .orderBy("a.id", "desc")
    .limit(200)
    .select("a.*", "u.display_name");
  const mine = await trx("task_assignments").where({ task_id: id, user_id: caller.userId }).first("muted");
  const next = await trx("task_reminders")
    .where({ task_id: id, user_id: caller.userId })
    .whereNull("fired_at")
    .orderBy("fire_at")
    .first("fire_at as at");

  return {
    ...presentTask(row),
    description: row.description,
    subtaskList: subs,
    blockedByTasks: blockers,
    blocking,
    comments: comments.map((c) => ({
      id: c.id,
      author: person(c.author_id, c.display_name),
      body: c.body,
      createdAt: iso(c.created_at)!,
      editedAt: iso(c.edited_at),
    })),
    attachments: files.map((f) => ({
      id: f.id,
      name: f.name,
      mime: f.mime,
      size: Number(f.size_bytes),
      uploadedBy: person(f.uploaded_by, f.display_name),
      createdAt: iso(f.created_at)!,
    })),
    activity: activity.map((a) => ({
      id: Number(a.id),
      actor: person(a.actor_id, a.display_name),
      via: a.via,
      action: a.action,
      changes: a.changes,
      createdAt: iso(a.created_at)!,
    })),
    reminders: { assigned: !!mine, muted: !!mine?.muted, next: mine && !mine.muted ? iso(next?.at) : null },
    canEdit: RANK[role] >= RANK.editor,
  };
}

/** A status of this project, or 400. */
async function statusOf(svc: Svc, projectId: string, statusId?: string) {
  const q = svc.trx("project_statuses").where({ project_id: projectId });
  const s = await (statusId ? q.where({ id: statusId }) : q.orderBy("position")).first(
    "id",
    "category",
    "name",
  );
  if (!s) throw AppError.badRequest("No such status in this project.", { field: "statusId" });
  return s as { id: string; category: Category; name: string };
}

/** Checks references a task may have: assignees are members, labels/milestone/parent/blockers are this project's. */
async function checkRefs(
  svc: Svc,
  projectId: string,
  taskId: string | null,
  input: {
    assigneeIds?: string[];
    labelIds?: string[];
    milestoneId?: string | null;
    parentId?: string | null;
    blockedBy?: string[];
  },
) {
  const { trx } = svc;
  const oneOf = async (table: string, ids: string[], field: string, message: string) => {
    const unique = [...new Set(ids)];
    if (!unique.length) return;
    const n = await trx(table)
      .whereIn(table === "project_members" ? "user_id" : "id", unique)
      .where({ project_id: projectId })
      .count({ n: "*" })
      .first();
    if (Number(n?.n) !== unique.length) throw AppError.badRequest(message, { field });
  };
  await oneOf(
    "project_members",
    input.assigneeIds ?? [],
    "assigneeIds",
    "Only members of the project can be assigned.",
  );
  await oneOf("labels", input.labelIds ?? [], "labelIds", "No such label in this project.");
  if (input.milestoneId)
    await oneOf("milestones", [input.milestoneId], "milestoneId", "No such milestone in this project.");
  if (input.parentId) {
    await oneOf("tasks", [input.parentId], "parentId", "No such task in this project.");
    if (taskId) {
      const cycle = await trx.raw(
        `with recursive up as (select id, parent_id from tasks where id = ?
           union all select t.id, t.parent_id from tasks t join up on t.id = up.parent_id)
         select 1 from up where id = ? limit 1`,
        [input.parentId, taskId],
      );
      if (cycle.rows.length)
        throw AppError.badRequest("A task cannot be a subtask of itself.", { field: "parentId" });
    }
  }
  if (input.blockedBy?.length) {
    await oneOf("tasks", input.blockedBy, "blockedBy", "A task can only be blocked by tasks of its project.");
    if (taskId) {
      if (input.blockedBy.includes(taskId))
        throw AppError.badRequest("A task cannot block itself.", { field: "blockedBy" });
      // Would any blocker (transitively) be blocked by this task? Then the new edge closes a cycle.
      const cycle = await trx.raw(
        `with recursive down as (select task_id from task_dependencies where blocked_by_id = ?
           union select d.task_id from task_dependencies d join down on d.blocked_by_id = down.task_id)
         select 1 from down where task_id = any(?::uuid[]) limit 1`,
        [taskId, input.blockedBy],
      );
      if (cycle.rows.length)
        throw AppError.badRequest("These dependencies would make a cycle.", { field: "blockedBy" });
    }
  }
}

/** Brings the task's reminders in line with its due time, assignees and state (one row per assignee and kind). */
export async function syncReminders(svc: Svc, config: Config, taskId: string, dueChanged: boolean) {
  const { trx } = svc;
  const t = await trx("tasks").where({ id: taskId }).first("due_at", "completed_at");
  const assignees = (await trx("task_assignments").where({ task_id: taskId }).pluck("user_id")) as string[];
  await trx("task_reminders")
    .where({ task_id: taskId })
    .where((b) => {
      b.whereNotIn("user_id", assignees.length ? assignees : ["00000000-0000-0000-0000-000000000000"]);
      if (dueChanged || !t.due_at) b.orWhereRaw("true");
      else if (t.completed_at) b.orWhereNull("fired_at");
    })
    .delete();
  if (!t.due_at || t.completed_at || !assignees.length) return;
  const due = new Date(t.due_at);
  const soon = new Date(due.getTime() - config.projects.reminderLeadHours * 3600_000);
  const rows = assignees.flatMap((userId) =>
    [
      ...(due.getTime() > Date.now() ? [{ kind: "due_soon", fire_at: soon }] : []),
      { kind: "overdue", fire_at: due },
    ].map((r) => ({ org_id: svc.caller.orgId, task_id: taskId, user_id: userId, ...r })),
  );
  await trx("task_reminders").insert(rows).onConflict(["task_id", "user_id", "kind"]).ignore();
}

async function setLinks(
  svc: Svc,
  taskId: string,
  table: "task_assignments" | "task_labels" | "task_dependencies",
  column: string,
  ids: string[],
) {
  const unique = [...new Set(ids)];
  const before = (await svc.trx(table).where({ task_id: taskId }).pluck(column)) as string[];
  await svc
    .trx(table)
    .where({ task_id: taskId })
    .whereNotIn(column, unique.length ? unique : ["00000000-0000-0000-0000-000000000000"])
    .delete();
  const added = unique.filter((u) => !before.includes(u));
  if (added.length)
    await svc
      .trx(table)
      .insert(added.map((v) => ({ org_id: svc.caller.orgId, task_id: taskId, [column]: v })));
  return { added, removed: before.filter((b) => !unique.includes(b)) };
}

/** Tells people (other than the caller) about something that happened to a task, linking to it. */
async function notifyAbout(
  svc: Svc,
  task: { id: string; project_id: string },
  userIds: string[],
  what: { kind: string; title: string; body: string },
) {
  await addNotifications(
    svc.trx,
    svc.caller.orgId,
    userIds
      .filter((u) => u !== svc.caller.userId)
      .map((userId) => ({
        userId,
        ...what,
        link: `/projects/${task.project_id}?task=${task.id}`,
        actorId: svc.caller.userId,
        sourceType: "task",
        sourceId: task.id,
      })),
  );
}

/** The input of a new task. */
export interface NewTask {
  title: string;
  description: string;
  statusId?: string;
  priority: Priority;
  dueAt?: string | null;
  estimateHours?: number | null;
  milestoneId?: string | null;
  parentId?: string | null;
  assigneeIds: string[];
  labelIds: string[];
  blockedBy: string[];
}

/** Creates a task at the end of its status's column (editors). */
export async function createTask(svc: Svc, config: Config, projectId: string, input: NewTask) {
  const { name } = await requireRole(svc, projectId, "editor");
  const { trx, caller } = svc;
  const status = await statusOf(svc, projectId, input.statusId);
  await checkRefs(svc, projectId, null, input);
  const [{ number }] = await trx("projects")
    .where({ id: projectId })
    .update({ next_number: trx.raw("next_number + 1"), updated_at: trx.fn.now() })
    .returning(trx.raw("next_number - 1 as number"));
  const last = await trx("tasks")
    .where({ project_id: projectId, status_id: status.id })
    .max({ p: "position" })
    .first();
  const [t] = await trx("tasks")
    .insert({
      org_id: caller.orgId,
      project_id: projectId,
      number,
      parent_id: input.parentId ?? null,
      title: input.title,
      description: input.description,
      status_id: status.id,
      priority: input.priority,
      due_at: input.dueAt ?? null,
      estimate_hours: input.estimateHours ?? null,
      milestone_id: input.milestoneId ?? null,
      position: Number(last?.p ?? 0) + STEP,
      created_by: caller.userId,
      started_at: status.category === "todo" ? null : trx.fn.now(),
      completed_at: status.category === "done" ? trx.fn.now() : null,
    })
    .returning(["id", "project_id", "title"]);
  await setLinks(svc, t.id, "task_assignments", "user_id", input.assigneeIds);
  await setLinks(svc, t.id, "task_labels", "label_id", input.labelIds);
  await setLinks(svc, t.id, "task_dependencies", "blocked_by_id", input.blockedBy);
  await syncReminders(svc, config, t.id, true);
  await notifyAbout(svc, t, input.assigneeIds, {
    kind: "task.assigned",
    title: `Assigned to you: ${t.title}`,
    body: name,
  });
  await logActivity(svc, projectId, t.id, "task.create", { number, title: input.title, status: status.name });
  return t.id as string;
}

/** What a task update may change. */
export type TaskPatch = Partial<{
  title: string;
  description: string;
  statusId: string;
  priority: Priority;
  dueAt: string | null;
  estimateHours: number | null;
  milestoneId: string | null;
  parentId: string | null;
  assigneeIds: string[];
  labelIds: string[];
  blockedBy: string[];
}>;

/** The columns a status change sets: first start, and completion (cleared when a task is reopened). */
function statusColumns(trx: Knex.Transaction, category: Category) {
  return {
    started_at: category === "todo" ? undefined : trx.raw("coalesce(started_at, now())"),
    completed_at: category === "done" ? trx.raw("coalesce(completed_at, now())") : null,
  };
}

/** Changes a task's fields and links, logging each change with its old and new value (editors). */
export async function updateTask(svc: Svc, config: Config, id: string, input: TaskPatch) {
  const row = await taskRow(svc, id, true);
  const { name } = await requireRole(svc, row.project_id, "editor");
  const { trx } = svc;
  await checkRefs(svc, row.project_id, id, input);
  const changes: Record<string, { from: unknown; to: unknown }> = {};
  const patch: Record<string, unknown> = {};
  const field = (key: keyof TaskPatch, column: string, from: unknown, to: unknown) => {
    if (to === undefined) return;
    const a = from instanceof Date ? from.toISOString() : from === null ? null : String(from);
    const b = to === null ? null : key === "dueAt" ? new Date(to as string).toISOString() : String(to);
    if (a === b) return;
    patch[column] = to;
    changes[key] = { from: from instanceof Date ? from.toISOString() : from, to };
  };
  field("title", "title", row.title, input.title);
  field("description", "description", row.description, input.description);
  field("priority", "priority", row.priority, input.priority);
  field("dueAt", "due_at", row.due_at, input.dueAt);
  field(
    "estimateHours",
    "estimate_hours",
    row.estimate_hours === null ? null : Number(row.estimate_hours),
    input.estimateHours,
  );
  field("milestoneId", "milestone_id", row.milestone_id, input.milestoneId);
  field("parentId", "parent_id", row.parent_id, input.parentId);
  if (changes.description) changes.description = { from: "…", to: "…" };
  if (input.statusId && input.statusId !== row.status_id) {
    const s = await statusOf(svc, row.project_id, input.statusId);
    Object.assign(patch, { status_id: s.id, ...statusColumns(trx, s.category) });
    const last = await trx("tasks")
      .where({ project_id: row.project_id, status_id: s.id })
      .max({ p: "position" })
      .first();
    patch.position = Number(last?.p ?? 0) + STEP;
    changes.status = { from: row.status_name, to: s.name };
  }
  for (const k of Object.keys(patch)) if (patch[k] === undefined) delete patch[k];
  if (Object.keys(patch).length)
    await trx("tasks")
      .where({ id })
      .update({ ...patch, updated_at: trx.fn.now() });
  let assigned: string[] = [];
  if (input.assigneeIds) {
    const r = await setLinks(svc, id, "task_assignments", "user_id", input.assigneeIds);
    if (r.added.length || r.removed.length) changes.assignees = { from: r.removed, to: r.added };
    assigned = r.added;
  }
  if (input.labelIds) {
    const r = await setLinks(svc, id, "task_labels", "label_id", input.labelIds);
    if (r.added.length || r.removed.length) changes.labels = { from: r.removed, to: r.added };
  }
  if (input.blockedBy) {
    const r = await setLinks(svc, id, "task_dependencies", "blocked_by_id", input.blockedBy);
    if (r.added.length || r.removed.length) changes.blockedBy = { from: r.removed, to: r.added };
  }
  if (Object.keys(changes).length) {
    if (!patch.updated_at) await trx("tasks").where({ id }).update({ updated_at: trx.fn.now() });
    await logActivity(svc, row.project_id, id, "task.update", changes);
    await syncReminders(svc, config, id, "dueAt" in changes);
    await notifyAbout(svc, row, assigned, {
      kind: "task.assigned",
      title: `Assigned to you: ${input.title ?? row.title}`,
      body: name,
    });
  }
  return getTask(svc, id);
}

/** Moves a task on the board: into a status, just before another task or at the end (editors). */
export async function moveTask(
  svc: Svc,
  config: Config,
  id: string,
  input: { statusId: string; beforeId?: string | null },
) {
  const row = await taskRow(svc, id, true);
  await requireRole(svc, row.project_id, "editor");
  const { trx } = svc;
  const s = await statusOf(svc, row.project_id, input.statusId);
  let position: number;
  if (input.beforeId) {
    if (input.beforeId === id)
      throw AppError.badRequest("A task cannot go before itself.", { field: "beforeId" });
    const before = await trx("tasks")
      .where({ id: input.beforeId, project_id: row.project_id, status_id: s.id })
      .first("position");
    if (!before) throw AppError.badRequest("That task is not in this column.", { field: "beforeId" });
    const prev = await trx("tasks")
      .where({ project_id: row.project_id, status_id: s.id })
      .whereNot({ id })
      .where("position", "<", before.position)
      .max({ p: "position" })
      .first();
    position =
      prev?.p === null || prev?.p === undefined
        ? before.position - STEP
        : (Number(prev.p) + before.position) / 2;
  } else {
    const last = await trx("tasks")
      .where({ project_id: row.project_id, status_id: s.id })
      .whereNot({ id })
      .max({ p: "position" })
      .first();
    position = Number(last?.p ?? 0) + STEP;
  }
  const patch: Record<string, unknown> = { position, updated_at: trx.fn.now() };
  if (s.id !== row.status_id) Object.assign(patch, { status_id: s.id, ...statusColumns(trx, s.category) });
  for (const k of Object.keys(patch)) if (patch[k] === undefined) delete patch[k];
  await trx("tasks").where({ id }).update(patch);
  if (s.id !== row.status_id) {
    await logActivity(svc, row.project_id, id, "task.move", {
      status: { from: row.status_name, to: s.name },
    });
    await syncReminders(svc, config, id, false);
  }
  // Neighbours closer than float precision can tell apart: spread the column out again.
  const gap = await trx.raw(
    `select min(d) as d from (select position - lag(position) over (order by position) as d from tasks where project_id = ? and status_id = ?) x`,
    [row.project_id, s.id],
  );
  if (gap.rows[0]?.d !== null && Number(gap.rows[0]?.d) < 1e-6)
    await trx.raw(
      `update tasks t set position = x.n * ${STEP} from (select id, row_number() over (order by position, number) as n from tasks where project_id = ? and status_id = ?) x where x.id = t.id`,
      [row.project_id, s.id],
    );
  return presentTask(await taskRow(svc, id));
}

/** Deletes a task with its subtasks (editors; logged on the project). */
export async function deleteTask(svc: Svc, config: Config, id: string) {
  const row = await taskRow(svc, id, true);
  await requireRole(svc, row.project_id, "editor");
  const files = await svc
    .trx("task_attachments")
    .where({ task_id: id })
    .orWhereIn("task_id", svc.trx("tasks").select("id").where({ parent_id: id }))
    .pluck("id");
  await svc.trx("tasks").where({ id }).delete();
  await logActivity(svc, row.project_id, null, "task.delete", { number: row.number, title: row.title });
  svc.trx.executionPromise
    .then(() =>
      Promise.all(files.map((f: string) => rm(attachmentPath(config, svc.caller.orgId, f), { force: true }))),
    )
    .catch(() => undefined);
}

// ---------- comments ----------

/** Comments on a task (viewers too: discussing is not editing); mentions of assignees are not needed, they are told. */
export async function addComment(svc: Svc, id: string, body: string) {
  const row = await taskRow(svc, id);
  await requireRole(svc, row.project_id, "viewer");
  const [c] = await svc
    .trx("task_comments")
    .insert({ org_id: svc.caller.orgId, task_id: id, author_id: svc.caller.userId, body })
    .returning("id");
  await logActivity(svc, row.project_id, id, "task.comment", { commentId: c.id });
  await notifyAbout(
    svc,
    row,
    row.assignees.map((a) => a.id),
    { kind: "task.comment", title: `New comment on ${row.title}`, body: body.slice(0, 200) },
  );
  return (await getTask(svc, id)).comments.find((x) => x.id === c.id)!;
}

/** Deletes a comment: its author, or a project owner. */
export async function deleteComment(svc: Svc, taskId: string, commentId: string) {
  const row = await taskRow(svc, taskId);
  const { role } = await roleIn(svc, row.project_id);
  const c = await svc.trx("task_comments").where({ id: commentId, task_id: taskId }).first("author_id");
  if (!c) throw AppError.notFound("Comment not found.");
  if (c.author_id !== svc.caller.userId && role !== "owner")
    throw AppError.forbidden("Only its author or a project owner can delete a comment.");
  await svc.trx("task_comments").where({ id: commentId }).delete();
  await logActivity(svc, row.project_id, taskId, "task.comment.delete", { commentId });
}

// ---------- attachments ----------

/** Where attachments live. */
export const projectsDir = (config: Config) => config.projects.dir ?? path.join(config.dataDir, "projects");
const attachmentPath = (config: Config, orgId: string, id: string) =>
  path.join(projectsDir(config), "files", orgId, id);
const SAFE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"]);

/** Checks the caller may attach files to a task before its upload is read. */
export async function canAttach(svc: Svc, id: string) {
  const row = await taskRow(svc, id);
  await requireRole(svc, row.project_id, "editor");
}

/** Attaches received files to a task: moved into place and fsynced before the rows commit, removed if they do not. */
export async function addAttachments(svc: Svc, config: Config, id: string, files: Received[]) {
  const row = await taskRow(svc, id);
  await requireRole(svc, row.project_id, "editor");
  if (!files.length) throw AppError.badRequest("Choose at least one file.", { field: "files" });
  const tooLarge = files.find((f) => f.tooLarge);
  if (tooLarge)
    throw new AppError(
      413,
      "file_too_large",
      `${tooLarge.name} is larger than ${formatMegabytes(config.projects.maxFileBytes)}.`,
    );
  const empty = files.find((f) => f.size === 0);
  if (empty) throw new AppError(400, "empty_file", `${empty.name} is empty.`);
  const placed: string[] = [];
  try {
    const ids: string[] = [];
    for (const f of files) {
      const detected = (await fileTypeFromFile(f.tmp))?.mime;
      const [a] = await svc
        .trx("task_attachments")
        .insert({
          org_id: svc.caller.orgId,
          task_id: id,
          name: f.name,
          mime: detected && SAFE_TYPES.has(detected) ? detected : "application/octet-stream",
          size_bytes: f.size,
          sha256: f.sha256,
          uploaded_by: svc.caller.userId,
        })
        .returning("id");
      const target = attachmentPath(config, svc.caller.orgId, a.id);
      await mkdir(path.dirname(target), { recursive: true });
      await rename(f.tmp, target);
      placed.push(target);
      await fsyncDir(path.dirname(target));
      ids.push(a.id);
    }
    await logActivity(svc, row.project_id, id, "task.attach", { files: files.map((f) => f.name) });
    svc.trx.executionPromise.catch(() => Promise.all(placed.map((p) => rm(p, { force: true }))));
    return (await getTask(svc, id)).attachments.filter((a) => ids.includes(a.id));
  } catch (err) {
    await Promise.all(placed.map((p) => rm(p, { force: true })));
    throw err;
  }
}

/** An attachment the caller may read: where it is and how to serve it. */
export async function openAttachment(svc: Svc, config: Config, taskId: string, attachmentId: string) {
  await taskRow(svc, taskId);
  const a = await svc.trx("task_attachments").where({ id: attachmentId, task_id: taskId }).first();
  if (!a) throw AppError.notFound("No such file.");
  return {
    path: attachmentPath(config, svc.caller.orgId, a.id),
    name: a.name as string,
    mime: a.mime as string,
    size: Number(a.size_bytes),
  };
}

/** Removes an attachment (editors). */
export async function deleteAttachment(svc: Svc, config: Config, taskId: string, attachmentId: string) {
  const row = await taskRow(svc, taskId);
  await requireRole(svc, row.project_id, "editor");
  const n = await svc
    .trx("task_attachments")
    .where({ id: attachmentId, task_id: taskId })
    .delete()
    .returning("name");
  if (!n.length) throw AppError.notFound("No such file.");
  await logActivity(svc, row.project_id, taskId, "task.attachment.delete", { name: n[0].name });
  svc.trx.executionPromise
    .then(() => rm(attachmentPath(config, svc.caller.orgId, attachmentId), { force: true }))
    .catch(() => undefined);
}

// ---------- reminders ----------

/** Mutes or unmutes the caller's reminders of a task, or snoozes them (asks again in so many hours). */
export async function setReminders(
  svc: Svc,
  config: Config,
  id: string,
  input: { muted?: boolean; snoozeHours?: number },
) {
  const row = await taskRow(svc, id);
  const mine = await svc
    .trx("task_assignments")
    .where({ task_id: id, user_id: svc.caller.userId })
    .first("muted");
  if (!mine) throw AppError.conflict("Only the task's assignees get its reminders.");
  if (input.muted !== undefined)
    await svc
      .trx("task_assignments")
      .where({ task_id: id, user_id: svc.caller.userId })
      .update({ muted: input.muted });
  if (input.snoozeHours !== undefined) {
    if (!row.due_at || row.completed_at)
      throw AppError.conflict("This task has no open deadline to be reminded of.");
    const kind = new Date(row.due_at).getTime() <= Date.now() ? "overdue" : "due_soon";
    const at = new Date(Date.now() + input.snoozeHours * 3600_000);
    await svc
      .trx("task_reminders")
      .insert({ org_id: svc.caller.orgId, task_id: id, user_id: svc.caller.userId, kind, fire_at: at })
      .onConflict(["task_id", "user_id", "kind"])
      .merge({ fire_at: at, fired_at: null });
  }
  await syncReminders(svc, config, id, false);
  return (await getTask(svc, id)).reminders;
}
