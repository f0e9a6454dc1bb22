import { api, unwrap } from "$lib/api/client";
import type { components, operations } from "$lib/api/schema";
import type { MessageKey } from "$lib/i18n";

/** A project with its statuses, labels, milestones and members. */
export type ProjectDetail = components["schemas"]["ProjectDetail"];
/** A project in lists. */
export type Project = components["schemas"]["Project"];
/** A task as lists and the board show it. */
export type Task = components["schemas"]["Task"];
/** A task with everything the detail panel shows. */
export type TaskDetail = components["schemas"]["TaskDetail"];
/** A project's progress figures. */
export type Kpis = components["schemas"]["ProjectKpis"];
/** The AI's proposed breakdown of a goal. */
export type Proposal = components["schemas"]["BreakdownProposal"];
/** The AI-written weekly summary. */
export type Summary = components["schemas"]["ProjectSummary"];
/** A task's priority. */
export type Priority = Task["priority"];

/** Filters a dashboard link opens the task list with. */
export type ListFilter = Partial<
  Pick<
    NonNullable<operations["listProjectTasks"]["parameters"]["query"]>,
    "assigneeId" | "overdue" | "completedAfter" | "completedBefore" | "category"
  >
>;

/** Priorities, most urgent first, with their labels. */
export const PRIORITIES: { value: Priority; label: MessageKey }[] = [
  { value: "urgent", label: "projects.priority.urgent" },
  { value: "high", label: "projects.priority.high" },
  { value: "medium", label: "projects.priority.medium" },
  { value: "low", label: "projects.priority.low" },
  { value: "none", label: "projects.priority.none" },
];

/** Where a move puts a task: a column, and the task it goes before (null: the end). */
export interface Move {
  statusId: string;
  beforeId: string | null;
}

/**
 * The move one step in a direction from where a task is, on a board of columns (each in order): up and down
 * within its column, left and right into the neighbouring column's end. Null when there is nowhere to go.
 */
export function stepMove(
  columns: { statusId: string; taskIds: string[] }[],
  taskId: string,
  direction: "up" | "down" | "left" | "right",
): Move | null {
  const c = columns.findIndex((col) => col.taskIds.includes(taskId));
  const col = columns[c];
  if (!col) return null;
  const i = col.taskIds.indexOf(taskId);
  if (direction === "up") {
    const before = col.taskIds[i - 1];
    return before ? { statusId: col.statusId, beforeId: before } : null;
  }
  if (direction === "down") {
    if (i >= col.taskIds.length - 1) return null;
    return { statusId: col.statusId, beforeId: col.taskIds[i + 2] ?? null };
  }
  const next = columns[direction === "left" ? c - 1 : c + 1];
  return next ? { statusId: next.statusId, beforeId: null } : null;
}

/** Moves a task on the board. */
export async function moveTask(id: string, move: Move): Promise<Task> {
  return (
    await unwrap(
      api.POST("/api/tasks/{id}/move", {
        params: { path: { id } },
        body: { statusId: move.statusId, beforeId: move.beforeId },
      }),
    )
  ).data;
}

/** Every task of a project in board order (pages through the list). */
export async function allTasks(projectId: string): Promise<Task[]> {
  const out: Task[] = [];
  for (let offset = 0; ; offset += 200) {
    const r = await unwrap(
      api.GET("/api/projects/{id}/tasks", {
        params: { path: { id: projectId }, query: { limit: 200, offset, sort: "position", order: "asc" } },
      }),
    );
    out.push(...r.data);
    if (out.length >= r.page.total || !r.data.length) return out;
  }
}

/** A `datetime-local` input's value for an ISO time (local time, minutes). */
export function toLocalInput(iso: string | null): string {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

/** The ISO time of a `datetime-local` input's value (null when empty). */
export function fromLocalInput(value: string): string | null {
  return value ? new Date(value).toISOString() : null;
}

/** Uploads files to a task (multipart: not expressible through the generated client). */
export async function attachFiles(taskId: string, files: File[]): Promise<void> {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  await unwrap(
    api.POST("/api/tasks/{id}/attachments", {
      params: { path: { id: taskId } },
      body: form as never,
      bodySerializer: (b: unknown) => b as FormData,
    }),
  );
}
