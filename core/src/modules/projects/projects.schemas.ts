import { z } from "zod";
import { pageQuery } from "../identity/identity.schemas.js";

const id = z.uuid();
const name = z.string().trim().min(1).max(200);
/** Task and project descriptions and comments are Markdown. */
const markdown = z.string().max(100_000);
const iso = z.iso.datetime({ offset: true });
const day = z.iso.date();
const flag = z.enum(["true", "false"]).transform((v) => v === "true");

export const ROLES = ["owner", "editor", "viewer"] as const;
export const CATEGORIES = ["todo", "started", "done"] as const;
export const PRIORITIES = ["none", "low", "medium", "high", "urgent"] as const;
export const COLORS = ["gray", "red", "orange", "yellow", "green", "teal", "blue", "purple", "pink"] as const;

const role = z.enum(ROLES);
const person = z.object({ id, displayName: z.string() });

export const projectParams = z.object({ id });
export const labelParams = z.object({ id, labelId: id });

export const statusSchema = z
  .object({ id, name: z.string(), category: z.enum(CATEGORIES), position: z.number() })
  .meta({ id: "ProjectStatus" });
export const labelSchema = z
  .object({ id, name: z.string(), color: z.enum(COLORS) })
  .meta({ id: "ProjectLabel" });
export const milestoneSchema = z
  .object({ id, projectId: id, name: z.string(), startDate: day, dueDate: day })
  .meta({ id: "Milestone" });
export const memberSchema = z
  .object({ userId: id, displayName: z.string(), email: z.string(), role })
  .meta({ id: "ProjectMember" });

export const projectSchema = z
  .object({
    id,
    name: z.string(),
    description: z.string(),
    archivedAt: z.string().nullable(),
    /** The caller's role; administrators with projects.manage act as owners of every project. */
    myRole: role,
    counts: z.object({ total: z.number(), done: z.number(), overdue: z.number() }),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: "Project" });
export const projectDetailSchema = projectSchema
  .extend({
    statuses: z.array(statusSchema),
    labels: z.array(labelSchema),
    milestones: z.array(milestoneSchema),
    members: z.array(memberSchema),
  })
  .meta({ id: "ProjectDetail" });

export const listProjectsQuery = z.object({ archived: flag.default(false) });
const memberInput = z.strictObject({ userId: id, role });
export const createProjectBody = z
  .strictObject({
    name,
    description: markdown.default(""),
    members: z.array(memberInput).max(500).default([]),
  })
  .meta({ id: "CreateProjectRequest" });
export const updateProjectBody = z
  .strictObject({ name: name.optional(), description: markdown.optional(), archived: z.boolean().optional() })
  .refine((b) => Object.keys(b).length > 0, "Give at least one of name, description, archived")
  .meta({ id: "UpdateProjectRequest" });
export const setMembersBody = z
  .strictObject({ members: z.array(memberInput).min(1).max(500) })
  .meta({ id: "SetProjectMembersRequest" });
export const setStatusesBody = z
  .strictObject({
    statuses: z
      .array(
        z.strictObject({
          id: id.optional(),
          name: z.string().trim().min(1).max(60),
          category: z.enum(CATEGORIES),
        }),
      )
      .min(2)
      .max(12),
  })
  .meta({ id: "SetProjectStatusesRequest" });
export const createLabelBody = z
  .strictObject({ name: z.string().trim().min(1).max(60), color: z.enum(COLORS).default("gray") })
  .meta({ id: "CreateLabelRequest" });
export const milestoneBody = z
  .strictObject({ name, startDate: day, dueDate: day })
  .refine((m) => m.dueDate >= m.startDate, {
    message: "dueDate must not be before startDate",
    path: ["dueDate"],
  })
  .meta({ id: "MilestoneRequest" });
export const updateMilestoneBody = z
  .strictObject({ name: name.optional(), startDate: day.optional(), dueDate: day.optional() })
  .refine((b) => Object.keys(b).length > 0, "Give at least one of name, startDate, dueDate")
  .meta({ id: "UpdateMilestoneRequest" });

// ---------- tasks ----------

const brief = z.object({ id, number: z.number(), title: z.string(), done: z.boolean() });
export const taskSchema = z
  .object({
    id,
    projectId: id,
    projectName: z.string(),
    number: z.number(),
    parentId: id.nullable(),
    title: z.string(),
    statusId: id,
    statusName: z.string(),
    category: z.enum(CATEGORIES),
    priority: z.enum(PRIORITIES),
    dueAt: z.string().nullable(),
    estimateHours: z.number().nullable(),
    milestoneId: id.nullable(),
    position: z.number(),
    assignees: z.array(person),
    labelIds: z.array(id),
    blockedBy: z.array(id),
    subtasks: z.object({ total: z.number(), done: z.number() }),
    overdue: z.boolean(),
    createdAt: z.string(),
    updatedAt: z.string(),
    startedAt: z.string().nullable(),
    completedAt: z.string().nullable(),
  })
  .meta({ id: "Task" });
export const taskListSchema = z.object({
  data: z.array(taskSchema),
  page: z.object({ total: z.number(), limit: z.number(), offset: z.number() }),
});
export const commentSchema = z
  .object({
    id,
    author: person.nullable(),
    body: z.string(),
    createdAt: z.string(),
    editedAt: z.string().nullable(),
  })
  .meta({ id: "TaskComment" });
export const attachmentSchema = z
  .object({
    id,
    name: z.string(),
    mime: z.string(),
    size: z.number(),
    uploadedBy: person.nullable(),
    createdAt: z.string(),
  })
  .meta({ id: "TaskAttachment" });
export const activitySchema = z
  .object({
    id: z.number(),
    actor: person.nullable(),
    via: z.enum(["user", "assistant"]),
    action: z.string(),
    changes: z.record(z.string(), z.unknown()),
    createdAt: z.string(),
  })
  .meta({ id: "TaskActivity" });
export const taskDetailSchema = taskSchema
  .extend({
    description: z.string(),
    subtaskList: z.array(brief),
    blockedByTasks: z.array(brief),
    blocking: z.array(brief),
    comments: z.array(commentSchema),
    attachments: z.array(attachmentSchema),
    activity: z.array(activitySchema),
    /** The caller's reminders of this task: whether they are an assignee and have muted them. */
    reminders: z.object({ assigned: z.boolean(), muted: z.boolean(), next: z.string().nullable() }),
    canEdit: z.boolean(),
  })
  .meta({ id: "TaskDetail" });

export const taskListQuery = pageQuery.extend({
  q: z.string().trim().min(1).max(300).optional(),
  statusId: id.optional(),
  category: z.enum(CATEGORIES).optional(),
  /** A person's id, or "me". */
  assigneeId: z.union([id, z.literal("me")]).optional(),
  labelId: id.optional(),
  priority: z.enum(PRIORITIES).optional(),
  milestoneId: id.optional(),
  overdue: flag.optional(),
  /** Only subtasks of this task; `topLevel=true` leaves subtasks out. */
  parentId: id.optional(),
  topLevel: flag.optional(),
  /** Only tasks completed at or after this time (the KPI drill-downs use it). */
  completedAfter: iso.optional(),
  completedBefore: iso.optional(),
  sort: z.enum(["position", "number", "due", "priority", "created", "updated", "title"]).default("position"),
  order: z.enum(["asc", "desc"]).default("asc"),
});
export const myTasksQuery = pageQuery.extend({
  scope: z.enum(["open", "overdue", "done"]).default("open"),
});

const taskFields = {
  title: z.string().trim().min(1).max(300),
  description: markdown,
  statusId: id,
  priority: z.enum(PRIORITIES),
  dueAt: iso.nullable(),
  estimateHours: z.number().min(0).max(10_000).nullable(),
  milestoneId: id.nullable(),
  parentId: id.nullable(),
  assigneeIds: z.array(id).max(20),
  labelIds: z.array(id).max(30),
  blockedBy: z.array(id).max(50),
};
export const createTaskBody = z
  .strictObject({
    ...taskFields,
    description: markdown.default(""),
    statusId: id.optional(),
    priority: taskFields.priority.default("none"),
    dueAt: taskFields.dueAt.optional(),
    estimateHours: taskFields.estimateHours.optional(),
    milestoneId: taskFields.milestoneId.optional(),
    parentId: taskFields.parentId.optional(),
    assigneeIds: taskFields.assigneeIds.default([]),
    labelIds: taskFields.labelIds.default([]),
    blockedBy: taskFields.blockedBy.default([]),
  })
  .meta({ id: "CreateTaskRequest" });
export const updateTaskBody = z
  .strictObject(
    Object.fromEntries(Object.entries(taskFields).map(([k, v]) => [k, v.optional()])) as {
      [K in keyof typeof taskFields]: z.ZodOptional<(typeof taskFields)[K]>;
    },
  )
  .refine((b) => Object.keys(b).length > 0, "Give at least one field to change")
  .meta({ id: "UpdateTaskRequest" });
export const moveTaskBody = z
  .strictObject({
    statusId: id,
    /** Put the task just before this one in the column; null or absent: at the end. */
    beforeId: id.nullish(),
  })
  .meta({ id: "MoveTaskRequest" });
export const commentBody = z
  .strictObject({ body: z.string().trim().min(1).max(20_000) })
  .meta({ id: "TaskCommentRequest" });
export const reminderBody = z
  .strictObject({ muted: z.boolean().optional(), snoozeHours: z.number().int().min(1).max(336).optional() })
  .refine((b) => b.muted !== undefined || b.snoozeHours !== undefined, "Give muted or snoozeHours")
  .meta({ id: "TaskReminderRequest" });
export const filesForm = z.object({ files: z.array(z.string().meta({ format: "binary" })) });
export const attachmentParams = z.object({ id, attachmentId: id });
export const commentParams = z.object({ id, commentId: id });

// ---------- the AI project manager ----------

export const breakdownBody = z
  .strictObject({
    goal: z.string().trim().min(3).max(2000),
    maxTasks: z.number().int().min(1).max(8).default(5),
  })
  .meta({ id: "BreakdownRequest" });
const proposedTask = z.strictObject({
  /** A reference inside the proposal ("1", "2", ...): dependsOn names these. */
  ref: z.string().min(1).max(20),
  title: z.string().trim().min(1).max(300),
  description: markdown.default(""),
  estimateHours: z.number().min(0).max(10_000).nullable().default(null),
  dependsOn: z.array(z.string().min(1).max(20)).max(20).default([]),
  assigneeId: id.nullable().default(null),
  dueAt: iso.nullable().default(null),
  priority: z.enum(PRIORITIES).default("none"),
});
export const proposalSchema = z
  .object({
    runId: id,
    model: z.string(),
    goal: z.string(),
    tasks: z.array(proposedTask),
    /** Each member's open work when the proposal was made (what the suggestions were based on). */
    workload: z.array(
      z.object({
        userId: id,
        displayName: z.string(),
        openTasks: z.number(),
        openHours: z.number(),
        nextDueAt: z.string().nullable(),
      }),
    ),
  })
  .meta({ id: "BreakdownProposal" });
export const acceptBody = z
  .strictObject({
    goal: z.string().trim().max(2000).optional(),
    runId: id.optional(),
    milestoneId: id.nullish(),
    statusId: id.optional(),
    tasks: z.array(proposedTask).min(1).max(50),
  })
  .meta({ id: "AcceptBreakdownRequest" });

export const kpiQuery = z.object({
  weeks: z.coerce.number().int().min(1).max(26).default(8),
  milestoneId: id.optional(),
});
const ids = z.array(id);
export const kpiSchema = z
  .object({
    asOf: z.string(),
    total: z.number(),
    done: z.number(),
    completionRate: z.number(),
    overdue: z.object({ count: z.number(), taskIds: ids }),
    throughput: z.array(z.object({ weekStart: day, done: z.number(), taskIds: ids })),
    cycleTime: z.object({
      samples: z.number(),
      medianHours: z.number().nullable(),
      averageHours: z.number().nullable(),
      taskIds: ids,
    }),
    burndown: z
      .object({
        milestoneId: id,
        name: z.string(),
        scope: z.number(),
        points: z.array(z.object({ date: day, remaining: z.number().nullable(), ideal: z.number() })),
      })
      .nullable(),
    workload: z.array(
      z.object({
        userId: id,
        displayName: z.string(),
        open: z.number(),
        openHours: z.number(),
        overdue: z.number(),
        taskIds: ids,
      }),
    ),
  })
  .meta({ id: "ProjectKpis" });
export const summarySchema = z
  .object({
    id,
    weekStart: day,
    claims: z.array(
      z.object({ text: z.string(), tasks: z.array(z.object({ id, number: z.number(), title: z.string() })) }),
    ),
    model: z.string(),
    createdAt: z.string(),
  })
  .meta({ id: "ProjectSummary" });
