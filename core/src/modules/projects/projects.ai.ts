// The AI project manager: a goal broken down into proposed tasks, and the weekly summary. The model's output is
// constrained by a JSON schema (a grammar), and every run is logged in ai_runs like the assistant's.
import type { Knex } from "knex";
import { z } from "zod";
import type { Config } from "../../config/schema.js";
import type { Caller } from "../../platform/auth/caller.js";
import { withOrg } from "../../platform/db/tenant.js";
import { AppError } from "../../platform/http/errors.js";
import type { Engine } from "../assistant/agent.js";
import { requireChatModel, type ModelRow } from "../ai/models.service.js";
import { admitAiRequest, recordUsage } from "../identity/org.service.js";
import { createTask, dayOf, logActivity, requireRole, roleIn, type Svc } from "./projects.service.js";
import type { PRIORITIES } from "./projects.schemas.js";

/** What the AI project manager needs. */
export interface PmDeps {
  knex: Knex;
  config: Config;
  engine: Engine;
}

const TITLE = 80;
const DESCRIPTION = 240;
const CLAIM = 200;
const ESTIMATES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 40];
const NOBODY = "nobody";

const chatModel = (svc: Svc) => requireChatModel(svc.trx, svc.caller.orgId);

async function startRun(svc: Svc, model: ModelRow, question: string, state: Record<string, unknown>) {
  await admitAiRequest(svc);
  const [run] = await svc
    .trx("ai_runs")
    .insert({
      org_id: svc.caller.orgId,
      user_id: svc.caller.userId,
      status: "running",
      model: model.name,
      question,
      state: JSON.stringify(state),
    })
    .returning("id");
  return run.id as string;
}

/** Runs one constrained generation outside any transaction and logs how it went on its ai_runs row. */
async function generate(
  deps: PmDeps,
  caller: Caller,
  runId: string,
  model: ModelRow,
  prompt: { system: string; text: string; schema: object; maxTokens: number },
): Promise<unknown> {
  const t0 = Date.now();
  let usage = { prompt: 0, completion: 0 };
  const finish = (status: string, error?: string) =>
    withOrg(deps.knex, caller.orgId, async (trx) => {
      await trx("ai_runs")
        .where({ id: runId })
        .update({
          status,
          error: error ?? null,
          steps: 1,
          prompt_tokens: usage.prompt,
          completion_tokens: usage.completion,
          elapsed_ms: Date.now() - t0,
          updated_at: trx.fn.now(),
          finished_at: trx.fn.now(),
        });
      await recordUsage({ caller, trx }, "tokensPerDay", usage.prompt + usage.completion);
    });
  try {
    const chat = await deps.engine.open({ orgId: caller.orgId, model, system: prompt.system, history: [] });
    let result;
    try {
      result = await chat.prompt(prompt.text, {
        jsonSchema: prompt.schema,
        maxTokens: prompt.maxTokens,
        temperature: 0.4,
        validate: false,
      });
    } finally {
      await chat.close();
    }
    usage = { prompt: result.promptTokens, completion: result.completionTokens };
    if (result.finishReason !== "stop" || result.json === undefined)
      throw new AppError(
        502,
        "ai_incomplete",
        "The model did not finish its answer within its token budget. Try a shorter goal.",
      );
    await finish("completed");
    return result.json;
  } catch (err) {
    await finish("failed", (err as Error).message.slice(0, 500)).catch(() => undefined);
    throw err;
  }
}

/** A member's open work, what suggested assignees are based on. */
interface Load {
  userId: string;
  displayName: string;
  openTasks: number;
  openHours: number;
  nextDueAt: string | null;
}

async function workloadOf(svc: Svc, projectId: string): Promise<Load[]> {
  const rows = (
    await svc.trx.raw(
      `select m.user_id, u.display_name, count(t.id)::int as open, coalesce(sum(t.estimate_hours), 0)::float as hours, min(t.due_at) as next_due
       from project_members m join users u on u.id = m.user_id
       left join task_assignments a on a.user_id = m.user_id
       left join tasks t on t.id = a.task_id and t.completed_at is null
       where m.project_id = ? and m.role in ('owner', 'editor') and u.status = 'active'
       group by m.user_id, u.display_name order by lower(u.display_name)`,
      [projectId],
    )
  ).rows as { user_id: string; display_name: string; open: number; hours: number; next_due: Date | null }[];
  return rows.map((r) => ({
    userId: r.user_id,
    displayName: r.display_name,
    openTasks: r.open,
    openHours: r.hours,
    nextDueAt: r.next_due ? new Date(r.next_due).toISOString() : null,
  }));
}

/** The JSON schema of a breakdown: numbered tasks that may depend on earlier ones, with a member or nobody. */
export function breakdownSchema(maxTasks: number, people: string[]) {
  return {
    type: "object",
    properties: {
      tasks: {
        type: "array",
        minItems: 1,
        maxItems: maxTasks,
        items: {
          type: "object",
          properties: {
            title: { type: "string", minLength: 3, maxLength: TITLE },
            description: { type: "string", maxLength: DESCRIPTION },
            estimateHours: { enum: ESTIMATES },
            dependsOn: {
              type: "array",
              maxItems: 3,
              items: { enum: Array.from({ length: maxTasks }, (_, i) => i + 1) },
            },
            assignee: { enum: [...people, NOBODY] },
          },
          required: ["title", "description", "estimateHours", "dependsOn", "assignee"],
          additionalProperties: false,
        },
      },
    },
    required: ["tasks"],
    additionalProperties: false,
  };
}

/** What the grammar lets through, read back leniently (byte-counted lengths may decode longer). */
const modelBreakdown = z.object({
  tasks: z
    .array(
      z.object({
        title: z.string(),
        description: z.string(),
        estimateHours: z.number(),
        dependsOn: z.array(z.number().int()),
        assignee: z.string(),
      }),
    )
    .min(1),
});

/**
 * The breakdown's tasks as the UI edits them: refs "1".."n"; a dependency only on an earlier task (so the
 * proposal has no cycle); a suggested assignee, the model's pick or else the member with the least open work.
 */
export function toProposal(raw: unknown, loads: Load[], maxTasks: number) {
  const parsed = modelBreakdown.parse(raw);
  const hours = new Map(loads.map((l) => [l.userId, l.openHours]));
  const byName = new Map(loads.map((l) => [l.displayName, l.userId]));
  return parsed.tasks.slice(0, maxTasks).map((t, i) => {
    let assigneeId = byName.get(t.assignee) ?? null;
    if (!assigneeId) assigneeId = [...hours].sort((a, b) => a[1] - b[1])[0]?.[0] ?? null;
    if (assigneeId) hours.set(assigneeId, (hours.get(assigneeId) ?? 0) + t.estimateHours);
    const title = t.title.trim().slice(0, 300) || `Step ${i + 1}`;
    return {
      ref: String(i + 1),
      title,
      description: t.description.trim().slice(0, 100_000),
      estimateHours: t.estimateHours,
      dependsOn: [...new Set(t.dependsOn.filter((d) => d >= 1 && d <= i))].map(String),
      assigneeId,
      dueAt: null,
      priority: "none" as (typeof PRIORITIES)[number],
    };
  });
}

/** Asks the model to break a goal into tasks; nothing is created until the person accepts (see acceptBreakdown). */
export async function proposeBreakdown(
  deps: PmDeps,
  caller: Caller,
  projectId: string,
  input: { goal: string; maxTasks: number },
) {
  const prep = await withOrg(deps.knex, caller.orgId, async (trx) => {
    const svc = { caller, trx };
    const { name } = await requireRole(svc, projectId, "editor");
    const model = await chatModel(svc);
    const loads = await workloadOf(svc, projectId);
    const open = (await trx("tasks")
      .where({ project_id: projectId })
      .whereNull("completed_at")
      .orderBy("number")
      .limit(15)
      .pluck("title")) as string[];
    const runId = await startRun(svc, model, input.goal, { kind: "projects.breakdown", projectId });
    return { name, model, loads, open, runId };
  });
  const people = prep.loads.map((l) => l.displayName);
  const team = prep.loads
    .map(
      (l) =>
        `- ${l.displayName}: ${l.openTasks} open tasks, ${l.openHours} hours open${l.nextDueAt ? `, next due ${l.nextDueAt.slice(0, 10)}` : ""}`,
    )
    .join("\n");
  const text = [
    `Project: ${prep.name}`,
    prep.open.length ? `Open tasks already planned:\n${prep.open.map((t) => `- ${t}`).join("\n")}` : "",
    team ? `Team and current workload:\n${team}` : "",
    `Goal: ${input.goal}`,
    `Break the goal into at most ${input.maxTasks} concrete tasks in the order they should be done. For each give a short title, a one or two sentence description, an estimate in hours, the numbers of earlier tasks it depends on, and the team member best placed to do it (prefer people with less open work and no near deadlines), or "${NOBODY}".`,
  ]
    .filter(Boolean)
    .join("\n\n");
  const raw = await generate(deps, caller, prep.runId, prep.model, {
    system: "You are a project manager. You answer only with the JSON asked for.",
    text,
    schema: breakdownSchema(input.maxTasks, people),
    // Byte-level tokenizers spend a token per byte at worst: room for every field at its longest.
    maxTokens: Math.min(deps.config.projects.aiTokens, input.maxTasks * (TITLE + DESCRIPTION + 160) + 64),
  });
  return {
    runId: prep.runId,
    model: prep.model.name,
    goal: input.goal,
    tasks: toProposal(raw, prep.loads, input.maxTasks),
    workload: prep.loads,
  };
}

/** A proposed (and possibly edited) task. */
export interface Proposed {
  ref: string;
  title: string;
  description: string;
  estimateHours: number | null;
  dependsOn: string[];
  assigneeId: string | null;
  dueAt: string | null;
  priority: (typeof PRIORITIES)[number];
}

/** Creates the accepted tasks, dependencies resolved from refs, in the caller's one transaction: all or none. */
export async function acceptBreakdown(
  svc: Svc,
  config: Config,
  projectId: string,
  input: { goal?: string; runId?: string; milestoneId?: string | null; statusId?: string; tasks: Proposed[] },
) {
  await requireRole(svc, projectId, "editor");
  const refs = new Map(input.tasks.map((t) => [t.ref, t]));
  if (refs.size !== input.tasks.length)
    throw AppError.badRequest("Two tasks have the same ref.", { field: "tasks" });
  for (const t of input.tasks)
    for (const d of t.dependsOn)
      if (!refs.has(d) || d === t.ref)
        throw AppError.badRequest(
          `Task ${t.ref} depends on ${d}, which is not another task of this proposal.`,
          { field: "tasks" },
        );
  // Create blockers first; a cycle leaves tasks that can never be placed.
  const order: Proposed[] = [];
  const placed = new Set<string>();
  while (order.length < input.tasks.length) {
    const next = input.tasks.filter((t) => !placed.has(t.ref) && t.dependsOn.every((d) => placed.has(d)));
    if (!next.length) throw AppError.badRequest("The tasks' dependencies make a cycle.", { field: "tasks" });
    for (const t of next) {
      order.push(t);
      placed.add(t.ref);
    }
  }
  if (input.runId) {
    const run = await svc
      .trx("ai_runs")
      .where({ id: input.runId, user_id: svc.caller.userId })
      .first("id", "state");
    if (!run || run.state?.kind !== "projects.breakdown" || run.state?.projectId !== projectId)
      throw AppError.badRequest("No such breakdown of yours for this project.", { field: "runId" });
  }
  const ids = new Map<string, string>();
  for (const t of order) {
    const id = await createTask(svc, config, projectId, {
      title: t.title,
      description: t.description,
      statusId: input.statusId,
      priority: t.priority,
      dueAt: t.dueAt,
      estimateHours: t.estimateHours,
      milestoneId: input.milestoneId ?? null,
      assigneeIds: t.assigneeId ? [t.assigneeId] : [],
      labelIds: [],
      blockedBy: t.dependsOn.map((d) => ids.get(d)!),
    });
    ids.set(t.ref, id);
  }
  await logActivity(svc, projectId, null, "breakdown.accept", {
    goal: input.goal ?? null,
    runId: input.runId ?? null,
    tasks: ids.size,
  });
  if (input.runId)
    await svc
      .trx("ai_runs")
      .where({ id: input.runId })
      .update({
        state: svc.trx.raw("state || ?::jsonb", [JSON.stringify({ accepted: [...ids.values()] })]),
      });
  return input.tasks.map((t) => ids.get(t.ref)!);
}

// ---------- weekly summary ----------

interface Fact {
  id: string;
  number: number;
  title: string;
  line: string;
}

/** The JSON schema of a summary: a few claims, each citing one or more of the given task refs. */
export function summarySchema(refs: string[]) {
  return {
    type: "object",
    properties: {
      claims: {
        type: "array",
        minItems: 1,
        maxItems: 5,
        items: {
          type: "object",
          properties: {
            text: { type: "string", minLength: 10, maxLength: CLAIM },
            tasks: { type: "array", minItems: 1, maxItems: 4, items: { enum: refs } },
          },
          required: ["text", "tasks"],
          additionalProperties: false,
        },
      },
    },
    required: ["claims"],
    additionalProperties: false,
  };
}

const modelSummary = z.object({
  claims: z.array(z.object({ text: z.string(), tasks: z.array(z.string()).min(1) })).min(1),
});

/** Writes this week's summary of a project: claims about what happened, each linked to the tasks behind it. */
export async function writeSummary(deps: PmDeps, caller: Caller, projectId: string) {
  const prep = await withOrg(deps.knex, caller.orgId, async (trx) => {
    const svc = { caller, trx };
    const { name } = await roleIn(svc, projectId);
    const model = await chatModel(svc);
    const rows = (
      await trx.raw(
        `select t.id, t.number, t.title, s.name as status, t.due_at, t.completed_at, t.created_at,
           t.completed_at >= now() - interval '7 days' as done_recently,
           t.created_at >= now() - interval '7 days' as new_recently,
           t.completed_at is null and t.due_at < now() as overdue,
           exists (select 1 from task_dependencies d join tasks b on b.id = d.blocked_by_id where d.task_id = t.id and b.completed_at is null) as blocked,
           (select string_agg(u.display_name, ', ') from task_assignments a join users u on u.id = a.user_id where a.task_id = t.id) as people
         from tasks t join project_statuses s on s.id = t.status_id
         where t.project_id = ? and (t.completed_at >= now() - interval '7 days' or t.completed_at is null)
         order by (t.completed_at is null and t.due_at < now()) desc, t.completed_at desc nulls last, t.due_at nulls last
         limit 24`,
        [projectId],
      )
    ).rows as {
      id: string;
      number: number;
      title: string;
      status: string;
      due_at: Date | null;
      done_recently: boolean;
      new_recently: boolean;
      overdue: boolean;
      blocked: boolean;
      people: string | null;
    }[];
    if (!rows.length)
      throw AppError.conflict(
        "Nothing happened in this project this week, and nothing is open: there is nothing to summarize.",
      );
    const facts: Fact[] = rows.map((r, i) => ({
      id: r.id,
      number: r.number,
      title: r.title,
      line: `T${i + 1}: #${r.number} "${r.title.slice(0, 120)}", ${[
        r.done_recently ? "completed this week" : `status ${r.status}`,
        r.new_recently ? "created this week" : "",
        r.overdue
          ? `OVERDUE since ${new Date(r.due_at!).toISOString().slice(0, 10)}`
          : r.due_at
            ? `due ${new Date(r.due_at).toISOString().slice(0, 10)}`
            : "",
        r.blocked ? "blocked by an open task" : "",
        r.people ? `assigned to ${r.people}` : "unassigned",
      ]
        .filter(Boolean)
        .join(", ")}`,
    }));
    const runId = await startRun(svc, model, `Weekly summary of ${name}`, {
      kind: "projects.summary",
      projectId,
    });
    const week = (
      await trx.raw("select to_char(date_trunc('week', now() at time zone 'UTC'), 'YYYY-MM-DD') as w")
    ).rows[0].w as string;
    return { name, model, facts, runId, week };
  });
  const refs = prep.facts.map((_, i) => `T${i + 1}`);
  const raw = await generate(deps, caller, prep.runId, prep.model, {
    system:
      "You are a project manager writing a short weekly status report. You answer only with the JSON asked for.",
    text: `Project: ${prep.name}\nWeek starting ${prep.week}.\nTasks:\n${prep.facts.map((f) => f.line).join("\n")}\n\nWrite up to 5 short factual claims about progress, risks and overdue work. Each claim lists the refs (T1, T2, ...) of the tasks it is based on. Say nothing the tasks do not show.`,
    schema: summarySchema(refs),
    maxTokens: Math.min(deps.config.projects.aiTokens, 5 * (CLAIM + 60) + 32),
  });
  const claims = modelSummary.parse(raw).claims.map((c) => ({
    text: c.text.trim().slice(0, 500),
    tasks: [...new Set(c.tasks)]
      .flatMap((ref) => prep.facts.filter((_, i) => refs[i] === ref))
      .map((f) => ({ id: f.id, number: f.number, title: f.title })),
  }));
  return withOrg(deps.knex, caller.orgId, async (trx) => {
    const [row] = await trx("project_summaries")
      .insert({
        org_id: caller.orgId,
        project_id: projectId,
        week_start: prep.week,
        claims: JSON.stringify(claims),
        model: prep.model.name,
        ai_run_id: prep.runId,
        created_by: caller.userId,
      })
      .returning("*");
    return presentSummary(row);
  });
}

function presentSummary(row: Record<string, unknown>) {
  return {
    id: row.id as string,
    weekStart: dayOf(row.week_start as Date | string),
    claims: row.claims as { text: string; tasks: { id: string; number: number; title: string }[] }[],
    model: row.model as string,
    createdAt: new Date(row.created_at as Date).toISOString(),
  };
}

/** The latest weekly summary of a project, or null. Tasks deleted since are dropped from its links. */
export async function latestSummary(svc: Svc, projectId: string) {
  await roleIn(svc, projectId);
  const row = await svc
    .trx("project_summaries")
    .where({ project_id: projectId })
    .orderBy("created_at", "desc")
    .first();
  if (!row) return null;
  const s = presentSummary(row);
  const alive = new Set(
    (await svc
      .trx("tasks")
      .whereIn(
        "id",
        s.claims.flatMap((c) => c.tasks.map((t) => t.id)),
      )
      .pluck("id")) as string[],
  );
  return { ...s, claims: s.claims.map((c) => ({ ...c, tasks: c.tasks.filter((t) => alive.has(t.id)) })) };
}
