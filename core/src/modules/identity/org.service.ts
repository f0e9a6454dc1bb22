import type { Knex } from "knex";
import { z } from "zod";
import { AppError } from "../../platform/http/errors.js";
import { actorOf, audit } from "./audit.js";
import type { Svc } from "./admin.service.js";
import type { Caller } from "../../platform/auth/caller.js";
import { createOrganization } from "./identity.service.js";
import { asOtherOrg } from "../../platform/db/tenant.js";

/** The plans and what each allows; null means unlimited. */
export const PLANS = {
  starter: {
    aiRequestsPerDay: 200,
    tokensPerDay: 200_000,
    integrations: 2,
    workflowRunsPerDay: 100,
    ssoAllowed: false,
    analyticsDays: 30,
  },
  professional: {
    aiRequestsPerDay: 2_000,
    tokensPerDay: 2_000_000,
    integrations: 10,
    workflowRunsPerDay: 1_000,
    ssoAllowed: true,
    analyticsDays: 365,
  },
  enterprise: {
    aiRequestsPerDay: null,
    tokensPerDay: null,
    integrations: null,
    workflowRunsPerDay: null,
    ssoAllowed: true,
    analyticsDays: null,
  },
} as const;

/** A plan's name. */
export type PlanName = keyof typeof PLANS;
/** Limits of a plan after overrides. */
export type Limits = {
  [K in keyof (typeof PLANS)["starter"]]: (typeof PLANS)["starter"][K] | null | number | boolean;
};

/** Counted limits: the usage counter a quota reads. */
export const QUOTA_METRICS = {
  aiRequestsPerDay: "ai.requests",
  tokensPerDay: "ai.tokens",
  workflowRunsPerDay: "workflow.runs",
} as const;

/** Per-organization overrides a system administrator may set. */
export const overridesSchema = z
  .strictObject({
    aiRequestsPerDay: z.number().int().min(0).nullable(),
    tokensPerDay: z.number().int().min(0).nullable(),
    integrations: z.number().int().min(0).nullable(),
    workflowRunsPerDay: z.number().int().min(0).nullable(),
    ssoAllowed: z.boolean(),
    analyticsDays: z.number().int().min(1).nullable(),
  })
  .partial();

/** The organization's plan limits with overrides applied. */
export async function limitsOf(
  trx: Knex.Transaction,
  orgId: string,
): Promise<{ plan: PlanName; limits: Limits }> {
  const org = await trx("organizations").select("plan", "plan_overrides").where({ id: orgId }).first();
  const plan = (org?.plan ?? "starter") as PlanName;
  return { plan, limits: { ...PLANS[plan], ...(org?.plan_overrides as Partial<Limits>) } };
}

const startOfNextDayUtc = () => {
  const d = new Date();
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1));
};

/**
 * Counts usage for the organization and the user, refusing with 429 when the plan's daily limit would be
 * passed. The check and the increment are one statement, so concurrent requests cannot overshoot.
 */
export async function consumeQuota(
  { caller, trx }: Svc,
  limit: keyof typeof QUOTA_METRICS,
  amount = 1,
): Promise<void> {
  const metric = QUOTA_METRICS[limit];
  const { limits } = await limitsOf(trx, caller.orgId);
  const max = limits[limit] as number | null;
  // Past the limit the error rolls the request's transaction back, and the count with it.
  const total = await addUsage(trx, caller.orgId, caller.userId, metric, amount);
  if (max !== null && total > max) throw quotaError(metric, max);
}

/** The conflict clause of the admission's usage upsert (as in usage_add): one row per organization (or person), metric and day. */
const USAGE_UPSERT = `on conflict (org_id, coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), metric, day)
  do update set value = usage_counters.value + excluded.value`;

/**
 * Adds to today's counters of the organization and of the person in one statement, `usage_add` (migration
 * 20261205000000), in the caller's transaction or outside any; the organization's new total.
 */
async function addUsage(
  db: Knex | Knex.Transaction,
  orgId: string,
  userId: string,
  metric: string,
  amount: number,
): Promise<number> {
  const rows = (
    await db
      .raw("select usage_add(?, ?, ?, ?) as total", [orgId, userId, metric, amount])
      .options({ name: "usage_add" })
  ).rows as { total: string }[];
  return Number(rows[0]?.total ?? 0);
}

/** The organization, its plan, limits, settings and today's usage (organization and caller). */
export async function getOrganization({ caller, trx }: Svc) {
  const org = await trx("organizations")
    .select("id", "name", "slug", "plan", "created_at")
    .where({ id: caller.orgId })
    .first();
  const settings = await trx("tenant_settings").select("settings").where({ org_id: caller.orgId }).first();
  const { limits } = await limitsOf(trx, caller.orgId);
  const usage = await trx("usage_counters")
    .select("metric", "user_id", "value")
    .where({ day: trx.raw("current_date") });
  const sum = (metric: string, mine: boolean) =>
    usage
      .filter((u) => u.metric === metric && (mine ? u.user_id === caller.userId : u.user_id === null))
      .reduce((a, u) => a + Number(u.value), 0);
  return {
    id: org.id as string,
    name: org.name as string,
    slug: org.slug as string,
    plan: org.plan as PlanName,
    limits,
    settings: (settings?.settings ?? {}) as Record<string, unknown>,
    usageToday: Object.values(QUOTA_METRICS).map((metric) => ({
      metric,
      organization: sum(metric, false),
      you: sum(metric, true),
    })),
    createdAt: (org.created_at as Date).toISOString(),
  };
}

/** Changes the organization's name and settings. */
export async function updateOrganization(
  { caller, trx }: Svc,
  input: { name?: string; settings?: Record<string, unknown> },
) {
  if (input.name !== undefined)
    await trx("organizations").where({ id: caller.orgId }).update({ name: input.name });
  if (input.settings !== undefined) {
    await trx("tenant_settings")
      .where({ org_id: caller.orgId })
      .update({ settings: JSON.stringify(input.settings), updated_at: trx.fn.now() });
  }
  await audit(trx, {
    ...actorOf(caller),
    action: "settings.update",
    targetType: "organization",
    targetId: caller.orgId,
    outcome: "success",
    details: input,
  });
  return getOrganization({ caller, trx });
}

/** Every organization of the installation (system administrators only). */
export async function listOrganizations({ caller, trx }: Svc) {
  if (!caller.systemAdmin) throw AppError.forbidden("Only system administrators manage organizations.");
  const rows = (await trx.raw("select * from installation_organizations()")).rows as Record<
    string,
    unknown
  >[];
  return rows.map((r) => ({
    id: r.id as string,
    name: r.name as string,
    slug: r.slug as string,
    plan: r.plan as PlanName,
    overrides: r.plan_overrides as Record<string, unknown>,
    createdAt: (r.created_at as Date).toISOString(),
  }));
}

/** Creates another organization with its first owner (system administrators only). */
export async function createOtherOrganization(
  { caller, trx }: Svc,
  input: { name: string; ownerEmail: string; ownerName: string; ownerPassword: string },
) {
  if (!caller.systemAdmin) throw AppError.forbidden("Only system administrators manage organizations.");
  let orgId = "";
  // createOrganization sets the new organization for the rest of the transaction; asOtherOrg restores ours.
  await asOtherOrg(trx, caller.orgId, caller.orgId, async () => {
    ({ orgId } = await createOrganization(
      trx,
      { ...input, systemAdmin: false },
      { actorType: "user", actorId: caller.userId, meta: caller },
    ));
  });
  await audit(trx, {
    ...actorOf(caller),
    action: "system.organization.create",
    targetType: "organization",
    targetId: orgId,
    outcome: "success",
    details: { name: input.name },
  });
  return (await listOrganizations({ caller, trx })).find((o) => o.id === orgId);
}

/** Sets another organization's plan and overrides (system administrators only). */
export async function setOrganizationPlan(
  { caller, trx }: Svc,
  id: string,
  input: { plan?: PlanName; overrides?: z.infer<typeof overridesSchema> },
) {
  if (!caller.systemAdmin) throw AppError.forbidden("Only system administrators manage organizations.");
  const exists = (await listOrganizations({ caller, trx })).some((o) => o.id === id);
  if (!exists) throw AppError.notFound("No such organization.");
  await asOtherOrg(trx, caller.orgId, id, async (other) => {
    const patch: Record<string, unknown> = {};
    if (input.plan) patch.plan = input.plan;
    if (input.overrides) patch.plan_overrides = JSON.stringify(input.overrides);
    await other("organizations").where({ id }).update(patch);
    await audit(other, {
      orgId: id,
      actorType: "user",
      actorId: caller.userId,
      action: "system.plan",
      targetType: "organization",
      targetId: id,
      outcome: "success",
      details: input,
    });
  });
  await audit(trx, {
    ...actorOf(caller),
    action: "system.plan",
    targetType: "organization",
    targetId: id,
    outcome: "success",
    details: input,
  });
  return (await listOrganizations({ caller, trx })).find((o) => o.id === id);
}

/** Adds usage without a limit check (tokens are known only after the answer). */
export async function recordUsage(
  { caller, trx }: Svc,
  limit: keyof typeof QUOTA_METRICS,
  amount: number,
): Promise<void> {
  await addUsage(trx, caller.orgId, caller.userId, QUOTA_METRICS[limit], amount);
}

/** The same outside any transaction: one statement, which enters the caller's organization itself. */
export async function recordUsageNow(
  knex: Knex,
  caller: Caller,
  limit: keyof typeof QUOTA_METRICS,
  amount: number,
): Promise<void> {
  await addUsage(knex, caller.orgId, caller.userId, QUOTA_METRICS[limit], amount);
}

const limitsCache = new Map<string, { at: number; limits: Limits }>();

/** The organization's limits, cached for 5 s (plans change rarely; every AI request reads them). */
async function cachedLimits(trx: Knex.Transaction, orgId: string): Promise<Limits> {
  const hit = limitsCache.get(orgId);
  if (hit && Date.now() - hit.at < 5000) return hit.limits;
  const { limits } = await limitsOf(trx, orgId);
  if (limitsCache.size > 10_000) limitsCache.clear();
  limitsCache.set(orgId, { at: Date.now(), limits });
  return limits;
}

/**
 * Admits one AI request in one statement: counts it for the organization and the person, and reads
 * today's token usage. Past a limit it throws 429, and the transaction's rollback undoes the count.
 */
export async function admitAiRequest({ caller, trx }: Svc): Promise<void> {
  const limits = await cachedLimits(trx, caller.orgId);
  const row = (
    await trx.raw(
      `with tokens as (
       select coalesce(sum(value), 0) as used from usage_counters
       where org_id = ? and user_id is null and metric = ? and day = current_date),
     counted as (
       insert into usage_counters (org_id, user_id, metric, day, value)
       values (?, null, ?, current_date, 1), (?, ?, ?, current_date, 1)
       ${USAGE_UPSERT}
       returning user_id, value)
     select (select value from counted where user_id is null) as requests, (select used from tokens) as tokens`,
      [
        caller.orgId,
        QUOTA_METRICS.tokensPerDay,
        caller.orgId,
        QUOTA_METRICS.aiRequestsPerDay,
        caller.orgId,
        caller.userId,
        QUOTA_METRICS.aiRequestsPerDay,
      ],
    )
  ).rows[0] as { requests: string; tokens: string };
  const tokenMax = limits.tokensPerDay as number | null;
  if (tokenMax !== null && Number(row.tokens) >= tokenMax)
    throw quotaError(QUOTA_METRICS.tokensPerDay, tokenMax);
  const max = limits.aiRequestsPerDay as number | null;
  if (max !== null && Number(row.requests) > max) throw quotaError(QUOTA_METRICS.aiRequestsPerDay, max);
}

function quotaError(metric: string, max: number): AppError {
  const resetsAt = startOfNextDayUtc();
  return new AppError(
    429,
    "quota_exceeded",
    `The organization's plan allows ${max} ${metric} per day; it resets at ${resetsAt.toISOString()}.`,
    { metric, limit: max, resetsAt: resetsAt.toISOString() },
    { "Retry-After": String(Math.ceil((resetsAt.getTime() - Date.now()) / 1000)) },
  );
}
