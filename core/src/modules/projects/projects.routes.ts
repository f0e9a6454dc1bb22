import path from "node:path";
import { rm } from "node:fs/promises";
import type { Knex } from "knex";
import { z } from "zod";
import type { Config } from "../../config/schema.js";
import { afterCommit, dataOf, type Api } from "../../platform/http/api.js";
import { withOrg } from "../../platform/db/tenant.js";
import { AppError } from "../../platform/http/errors.js";
import { receiveFiles, sendDownload } from "../../platform/http/uploads.js";
import type { Engine } from "../assistant/agent.js";
import * as pm from "./projects.service.js";
import { acceptBreakdown, latestSummary, proposeBreakdown, writeSummary } from "./projects.ai.js";
import { projectKpis } from "./projects.kpis.js";
import * as s from "./projects.schemas.js";

const tags = ["projects"];
const read = "projects.read";
const write = "projects.write";

/** What the projects routes need: the database for work after a transaction, and the model for the AI project manager. */
export interface ProjectRouteDeps {
  config: Config;
  knex: Knex | null;
  engine: Engine | null;
}

/** Registers projects, their settings, tasks, comments, attachments, reminders, KPIs and the AI project manager. */
export function registerProjectRoutes(api: Api, deps: ProjectRouteDeps): void {
  const { config } = deps;
  const ai = () => {
    if (!deps.knex || !deps.engine) throw AppError.unavailable("The AI is not running on this process.");
    return { knex: deps.knex, config, engine: deps.engine };
  };
  const knex = () => {
    if (!deps.knex) throw AppError.unavailable("Projects need a database.");
    return deps.knex;
  };

  // ----- projects -----
  api.route({
    method: "get",
    path: "/api/projects",
    operationId: "listProjects",
    summary: "The projects you are a member of (every project for projects.manage), with task counts",
    tags,
    permission: read,
    query: s.listProjectsQuery,
    response: dataOf(z.array(s.projectSchema)),
    handler: async (_ctx, { query }, scope) => ({ data: await pm.listProjects(scope, query) }),
  });
  api.route({
    method: "post",
    path: "/api/projects",
    operationId: "createProject",
    summary: "Create a project with the default statuses; you become its owner",
    tags,
    permission: write,
    body: s.createProjectBody,
    status: 201,
    response: dataOf(s.projectDetailSchema),
    handler: async (_ctx, { body }, scope) => ({ data: await pm.createProject(scope, body) }),
  });
  api.route({
    method: "get",
    path: "/api/projects/:id",
    operationId: "getProject",
    summary: "A project with its statuses, labels, milestones and members",
    tags,
    permission: read,
    params: s.projectParams,
    response: dataOf(s.projectDetailSchema),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await pm.getProject(scope, params.id) }),
  });
  api.route({
    method: "patch",
    path: "/api/projects/:id",
    operationId: "updateProject",
    summary: "Rename, describe, archive or unarchive a project (owners)",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.updateProjectBody,
    response: dataOf(s.projectDetailSchema),
    errors: [403, 404],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.updateProject(scope, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/projects/:id",
    operationId: "deleteProject",
    summary: "Delete a project with all its tasks (owners)",
    tags,
    permission: write,
    params: s.projectParams,
    status: 204,
    errors: [403, 404],
    handler: async (_ctx, { params }, scope) => pm.deleteProject(scope, params.id),
  });
  api.route({
    method: "put",
    path: "/api/projects/:id/members",
    operationId: "setProjectMembers",
    summary: "Replace the members and their project roles (owners); people removed are unassigned",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.setMembersBody,
    response: dataOf(s.projectDetailSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.setMembers(scope, params.id, body.members),
    }),
  });
  api.route({
    method: "put",
    path: "/api/projects/:id/statuses",
    operationId: "setProjectStatuses",
    summary: "Replace the board's statuses in order (owners); 409 if a removed status still holds tasks",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.setStatusesBody,
    response: dataOf(s.projectDetailSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.setStatuses(scope, params.id, body.statuses),
    }),
  });
  api.route({
    method: "post",
    path: "/api/projects/:id/labels",
    operationId: "createProjectLabel",
    summary: "Add a label (editors)",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.createLabelBody,
    status: 201,
    response: dataOf(s.labelSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.createLabel(scope, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/projects/:id/labels/:labelId",
    operationId: "deleteProjectLabel",
    summary: "Remove a label from the project and its tasks (editors)",
    tags,
    permission: write,
    params: s.labelParams,
    status: 204,
    errors: [403, 404, 409],
    handler: async (_ctx, { params }, scope) => pm.deleteLabel(scope, params.id, params.labelId),
  });
  api.route({
    method: "post",
    path: "/api/projects/:id/milestones",
    operationId: "createMilestone",
    summary: "Add a milestone (editors)",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.milestoneBody,
    status: 201,
    response: dataOf(s.milestoneSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.createMilestone(scope, params.id, body),
    }),
  });
  api.route({
    method: "patch",
    path: "/api/milestones/:id",
    operationId: "updateMilestone",
    summary: "Rename or reschedule a milestone (editors)",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.updateMilestoneBody,
    response: dataOf(s.milestoneSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.updateMilestone(scope, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/milestones/:id",
    operationId: "deleteMilestone",
    summary: "Delete a milestone; its tasks stay (editors)",
    tags,
    permission: write,
    params: s.projectParams,
    status: 204,
    errors: [403, 404, 409],
    handler: async (_ctx, { params }, scope) => pm.deleteMilestone(scope, params.id),
  });

  // ----- tasks -----
  api.route({
    method: "get",
    path: "/api/projects/:id/tasks",
    operationId: "listProjectTasks",
    summary: "A project's tasks, filtered and sorted (board order by default)",
    tags,
    permission: read,
    params: s.projectParams,
    query: s.taskListQuery,
    response: s.taskListSchema,
    errors: [404],
    handler: async (_ctx, { params, query }, scope) => pm.listTasks(scope, params.id, query),
  });
  api.route({
    method: "post",
    path: "/api/projects/:id/tasks",
    operationId: "createTask",
    summary: "Create a task at the end of its column (editors)",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.createTaskBody,
    status: 201,
    response: dataOf(s.taskDetailSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => {
      const id = await pm.createTask(scope, config, params.id, body);
      return { data: await pm.getTask(scope, id) };
    },
  });
  api.route({
    method: "get",
    path: "/api/tasks/mine",
    operationId: "myTasks",
    summary: "Tasks assigned to you across your projects: open (soonest due first), overdue, or done",
    tags,
    permission: read,
    query: s.myTasksQuery,
    response: s.taskListSchema,
    handler: async (_ctx, { query }, scope) => pm.myTasks(scope, query),
  });
  api.route({
    method: "get",
    path: "/api/tasks/:id",
    operationId: "getTask",
    summary: "A task with its subtasks, dependencies, comments, attachments and activity",
    tags,
    permission: read,
    params: s.projectParams,
    response: dataOf(s.taskDetailSchema),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await pm.getTask(scope, params.id) }),
  });
  api.route({
    method: "patch",
    path: "/api/tasks/:id",
    operationId: "updateTask",
    summary: "Change a task's fields, assignees, labels or dependencies; each change is logged (editors)",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.updateTaskBody,
    response: dataOf(s.taskDetailSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.updateTask(scope, config, params.id, body),
    }),
  });
  api.route({
    method: "post",
    path: "/api/tasks/:id/move",
    operationId: "moveTask",
    summary: "Move a task on the board: into a status, before another task or to the end (editors)",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.moveTaskBody,
    response: dataOf(s.taskSchema),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.moveTask(scope, config, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/tasks/:id",
    operationId: "deleteTask",
    summary: "Delete a task and its subtasks (editors)",
    tags,
    permission: write,
    params: s.projectParams,
    status: 204,
    errors: [403, 404, 409],
    handler: async (_ctx, { params }, scope) => pm.deleteTask(scope, config, params.id),
  });
  api.route({
    method: "post",
    path: "/api/tasks/:id/comments",
    operationId: "addTaskComment",
    summary: "Comment on a task (any member, viewers too); its assignees are notified",
    tags,
    permission: read,
    params: s.projectParams,
    body: s.commentBody,
    status: 201,
    response: dataOf(s.commentSchema),
    errors: [404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.addComment(scope, params.id, body.body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/tasks/:id/comments/:commentId",
    operationId: "deleteTaskComment",
    summary: "Delete a comment (its author or a project owner)",
    tags,
    permission: read,
    params: s.commentParams,
    status: 204,
    errors: [403, 404],
    handler: async (_ctx, { params }, scope) => pm.deleteComment(scope, params.id, params.commentId),
  });
  api.route({
    method: "post",
    path: "/api/tasks/:id/attachments",
    operationId: "addTaskAttachments",
    summary: "Attach files to a task (multipart/form-data: `files`; editors)",
    tags,
    permission: write,
    params: s.projectParams,
    multipart: s.filesForm,
    status: 201,
    response: dataOf(z.array(s.attachmentSchema)),
    errors: [403, 404, 409, 413, 415],
    handler: async (ctx, { params }, scope) => {
      await pm.canAttach(scope, params.id);
      // The body streams to disk after this transaction has committed (no connection held meanwhile).
      return afterCommit(async () => {
        const files = await receiveFiles(ctx, path.join(pm.projectsDir(config), "tmp"), {
          maxUploadBytes: config.projects.maxFileBytes * config.projects.maxFilesPerUpload,
          maxFileBytes: config.projects.maxFileBytes,
          maxFiles: config.projects.maxFilesPerUpload,
        });
        try {
          return {
            data: await withOrg(knex(), scope.caller.orgId, (trx) =>
              pm.addAttachments({ caller: scope.caller, trx }, config, params.id, files),
            ),
          };
        } finally {
          await Promise.all(files.map((f) => rm(f.tmp, { force: true })));
        }
      });
    },
  });
  api.route({
    method: "get",
    path: "/api/tasks/:id/attachments/:attachmentId",
    operationId: "downloadTaskAttachment",
    summary: "A file attached to a task you can read (always as a download)",
    tags,
    permission: read,
    params: s.attachmentParams,
    responseType: "application/octet-stream",
    response: z.string().meta({ format: "binary" }),
    errors: [404],
    handler: async (ctx, { params }, scope) => {
      return sendDownload(ctx, await pm.openAttachment(scope, config, params.id, params.attachmentId));
    },
  });
  api.route({
    method: "delete",
    path: "/api/tasks/:id/attachments/:attachmentId",
    operationId: "deleteTaskAttachment",
    summary: "Remove a file from a task (editors)",
    tags,
    permission: write,
    params: s.attachmentParams,
    status: 204,
    errors: [403, 404, 409],
    handler: async (_ctx, { params }, scope) =>
      pm.deleteAttachment(scope, config, params.id, params.attachmentId),
  });
  api.route({
    method: "patch",
    path: "/api/tasks/:id/reminders",
    operationId: "setTaskReminders",
    summary: "Mute or unmute your reminders of a task, or snooze them for some hours (assignees)",
    tags,
    permission: read,
    params: s.projectParams,
    body: s.reminderBody,
    response: dataOf(s.taskDetailSchema.shape.reminders),
    errors: [404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await pm.setReminders(scope, config, params.id, body),
    }),
  });

  // ----- progress and the AI project manager -----
  api.route({
    method: "get",
    path: "/api/projects/:id/kpis",
    operationId: "projectKpis",
    summary:
      "Completion, overdue, weekly throughput, cycle time, a milestone's burn-down and workload, each with its tasks",
    tags,
    permission: read,
    params: s.projectParams,
    query: s.kpiQuery,
    response: dataOf(s.kpiSchema),
    errors: [404],
    handler: async (_ctx, { params, query }, scope) => ({ data: await projectKpis(scope, params.id, query) }),
  });
  api.route({
    method: "get",
    path: "/api/projects/:id/summary",
    operationId: "latestProjectSummary",
    summary: "The latest AI-written weekly summary (null if none yet)",
    tags,
    permission: read,
    params: s.projectParams,
    response: dataOf(s.summarySchema.nullable()),
    errors: [404],
    handler: async (_ctx, { params }, scope) => ({ data: await latestSummary(scope, params.id) }),
  });
  api.route({
    method: "post",
    path: "/api/projects/:id/summary",
    operationId: "writeProjectSummary",
    summary: "Have the local model write this week's summary; every claim links to the tasks it rests on",
    tags,
    permission: read,
    params: s.projectParams,
    status: 201,
    response: dataOf(s.summarySchema),
    errors: [404, 409, 429, 503],
    handler: async (_ctx, { params }, scope) => {
      const deps = ai();
      await pm.roleIn(scope, params.id);
      return afterCommit(async () => ({ data: await writeSummary(deps, scope.caller, params.id) }));
    },
  });
  api.route({
    method: "post",
    path: "/api/projects/:id/breakdown",
    operationId: "proposeBreakdown",
    summary: "Have the local model break a goal into proposed tasks (nothing is created until you accept)",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.breakdownBody,
    response: dataOf(s.proposalSchema),
    errors: [403, 404, 409, 429, 503],
    handler: async (_ctx, { params, body }, scope) => {
      const deps = ai();
      await pm.requireRole(scope, params.id, "editor");
      return afterCommit(async () => ({ data: await proposeBreakdown(deps, scope.caller, params.id, body) }));
    },
  });
  api.route({
    method: "post",
    path: "/api/projects/:id/breakdown/accept",
    operationId: "acceptBreakdown",
    summary:
      "Create the accepted (and edited) proposed tasks with their dependencies, all in one transaction",
    tags,
    permission: write,
    params: s.projectParams,
    body: s.acceptBody,
    status: 201,
    response: dataOf(z.object({ taskIds: z.array(z.uuid()) })),
    errors: [403, 404, 409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: { taskIds: await acceptBreakdown(scope, config, params.id, body) },
    }),
  });
}
