import { z } from "zod";
import type { Config } from "../../config/schema.js";
import type { ToolContext, ToolRegistry } from "../../platform/tools/registry.js";
import { PRIORITIES } from "./projects.schemas.js";
import * as pm from "./projects.service.js";
import { projectKpis } from "./projects.kpis.js";
import { latestSummary } from "./projects.ai.js";

/** Changes the assistant makes are marked as its own in the activity log (they still run as the asking user). */
const asAssistant = (ctx: ToolContext): pm.Svc => ({ ...ctx, via: "assistant" });

const brief = (t: {
  id: string;
  number: number;
  title: string;
  projectName: string;
  statusName: string;
  dueAt: string | null;
  assignees: { displayName: string }[];
  overdue: boolean;
}) => ({
  id: t.id,
  number: t.number,
  title: t.title,
  project: t.projectName,
  status: t.statusName,
  dueAt: t.dueAt,
  overdue: t.overdue,
  assignees: t.assignees.map((a) => a.displayName),
});

/** The AI tools of the projects module: read projects and tasks; create, update, assign and comment (approved first). */
export function registerProjectTools(tools: ToolRegistry, config: Config): void {
  tools.register({
    name: "projects.list",
    description: "List the projects the user is a member of, with task counts.",
    permission: "projects.read",
    effect: "read",
    input: z.strictObject({}),
    run: async (ctx) =>
      (await pm.listProjects(ctx, { archived: false })).map((p) => ({
        id: p.id,
        name: p.name,
        role: p.myRole,
        ...p.counts,
      })),
  });
  tools.register({
    name: "tasks.search",
    description:
      "Search tasks in the user's projects by words, optionally only overdue ones or only the user's own.",
    permission: "projects.read",
    effect: "read",
    input: z.strictObject({
      query: z.string().trim().min(1).max(200).optional(),
      projectId: z.uuid().optional(),
      mine: z.boolean().default(false),
      overdue: z.boolean().default(false),
      limit: z.number().int().min(1).max(20).default(10),
    }),
    run: async (ctx, input) => {
      const { data } = await pm.searchTasks(ctx, {
        q: input.query,
        projectId: input.projectId,
        assigneeId: input.mine ? "me" : undefined,
        overdue: input.overdue || undefined,
        sort: input.overdue ? "due" : "updated",
        order: input.overdue ? "asc" : "desc",
        limit: input.limit,
        offset: 0,
      });
      return data.map(brief);
    },
  });
  tools.register({
    name: "tasks.create",
    description: "Create a task in a project (asks the user to approve first).",
    permission: "projects.write",
    effect: "write",
    input: z.strictObject({
      projectId: z.uuid(),
      title: z.string().trim().min(1).max(300),
      description: z.string().max(5000).default(""),
      dueAt: z.iso.datetime({ offset: true }).optional(),
      priority: z.enum(PRIORITIES).default("none"),
    }),
    run: async (ctx, input) => {
      const svc = asAssistant(ctx);
      const id = await pm.createTask(svc, config, input.projectId, {
        ...input,
        assigneeIds: [],
        labelIds: [],
        blockedBy: [],
      });
      const t = await pm.getTask(svc, id);
      return { id: t.id, number: t.number, title: t.title };
    },
  });
  tools.register({
    name: "tasks.update",
    description:
      "Change a task's title, status (by status name), priority or due time (asks the user to approve first).",
    permission: "projects.write",
    effect: "write",
    input: z.strictObject({
      taskId: z.uuid(),
      title: z.string().trim().min(1).max(300).optional(),
      status: z.string().trim().min(1).max(60).optional(),
      priority: z.enum(PRIORITIES).optional(),
      dueAt: z.iso.datetime({ offset: true }).nullable().optional(),
    }),
    run: async (ctx, input) => {
      const svc = asAssistant(ctx);
      const t = await pm.getTask(svc, input.taskId);
      let statusId: string | undefined;
      if (input.status) {
        const s = await ctx
          .trx("project_statuses")
          .where({ project_id: t.projectId })
          .whereRaw("lower(name) = lower(?)", [input.status])
          .first("id");
        if (!s) throw new Error(`The project has no status named ${input.status}.`);
        statusId = s.id;
      }
      const u = await pm.updateTask(svc, config, input.taskId, {
        title: input.title,
        statusId,
        priority: input.priority,
        dueAt: input.dueAt,
      });
      return brief(u);
    },
  });
  tools.register({
    name: "tasks.assign",
    description: "Set who a task is assigned to, by their user ids (asks the user to approve first).",
    permission: "projects.write",
    effect: "write",
    input: z.strictObject({ taskId: z.uuid(), assigneeIds: z.array(z.uuid()).max(10) }),
    run: async (ctx, input) =>
      brief(await pm.updateTask(asAssistant(ctx), config, input.taskId, { assigneeIds: input.assigneeIds })),
  });
  tools.register({
    name: "tasks.comment",
    description: "Add a comment to a task (asks the user to approve first).",
    permission: "projects.read",
    effect: "write",
    input: z.strictObject({ taskId: z.uuid(), body: z.string().trim().min(1).max(5000) }),
    run: async (ctx, input) => {
      const c = await pm.addComment(asAssistant(ctx), input.taskId, input.body);
      return { id: c.id };
    },
  });
  tools.register({
    name: "projects.summary",
    description:
      "A project's progress: completion, overdue tasks, throughput, workload per member, and the latest weekly summary.",
    permission: "projects.read",
    effect: "read",
    input: z.strictObject({ projectId: z.uuid() }),
    run: async (ctx, input) => {
      const k = await projectKpis(ctx, input.projectId, { weeks: 4 });
      const s = await latestSummary(ctx, input.projectId);
      return {
        total: k.total,
        done: k.done,
        completionRate: k.completionRate,
        overdue: k.overdue.count,
        doneLastWeeks: k.throughput.map((w) => ({ weekStart: w.weekStart, done: w.done })),
        medianCycleHours: k.cycleTime.medianHours,
        workload: k.workload.map((w) => ({ person: w.displayName, open: w.open, overdue: w.overdue })),
        weeklySummary: s ? s.claims.map((c) => c.text) : null,
      };
    },
  });
}
