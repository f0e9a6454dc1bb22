import type { Context } from "koa";
import type { Knex } from "knex";
import { z } from "zod";
import { RateLimiterPostgres, RateLimiterRes } from "rate-limiter-flexible";
import type { Config } from "../../config/schema.js";
import type { Api } from "../../platform/http/api.js";
import { dataOf } from "../../platform/http/api.js";
import { AppError } from "../../platform/http/errors.js";
import * as admin from "./admin.service.js";
import { checkCsrf, clearSessionCookie, setSessionCookie, type Authenticator } from "./auth.js";
import * as identity from "./identity.service.js";
import * as org from "./org.service.js";
import * as s from "./identity.schemas.js";
import { audit } from "./audit.js";
import type { Logger } from "../../platform/log.js";

/** What is known of a sign-in attempt when it is refused: where the audit record of the refusal goes. */
export interface SignInAttempt {
  /** The organization whose sign-in page was used (SSO pages), found only if the attempt is refused. */
  org?: () => Promise<string | null>;
  /** The account named (password sign-in): its organization is looked up. */
  email?: string;
  userAgent?: string;
}

/** Rate limits kept in PostgreSQL, so they hold across nodes. */
export interface Limiters {
  /** Consumes a sign-in attempt of an address; throws 429 past the limit (the refusal is audited). */
  signIn(ip: string, attempt?: SignInAttempt): Promise<void>;
  api(key: string): Promise<void>;
}

/** Most refusal records written in one minute by one process, whatever the number of addresses refused. */
const REFUSAL_RECORDS_PER_MINUTE = 100;

/**
 * Audits refused sign-in attempts, aggregated: one record per address per limiter window (its first refusal;
 * the record says how long the address stays refused), and at most REFUSAL_RECORDS_PER_MINUTE records a minute
 * per process, the next record counting those left out, so a flood cannot fill the log.
 */
function refusalAuditor(knex: Knex, points: number, log: Logger) {
  let minute = 0;
  let written = 0;
  let suppressed = 0;
  return async (ip: string, consumed: number, retryAfterSeconds: number, attempt: SignInAttempt) => {
    if (consumed !== points + 1) return; // only the first refusal of a window
    const now = Math.floor(Date.now() / 60_000);
    if (now !== minute) {
      minute = now;
      written = 0;
    }
    if (written >= REFUSAL_RECORDS_PER_MINUTE) {
      suppressed += 1;
      return;
    }
    written += 1;
    const left = suppressed;
    suppressed = 0;
    try {
      let orgId = attempt.org ? await attempt.org() : null;
      if (!orgId && attempt.email)
        orgId =
          (
            (await knex.raw("select org_id from auth_find_user(?)", [attempt.email])).rows[0] as
              { org_id: string } | undefined
          )?.org_id ?? null;
      await audit(knex, {
        orgId,
        actorType: "anonymous",
        action: "auth.rate_limited",
        ip,
        userAgent: attempt.userAgent ?? null,
        outcome: "denied",
        details: {
          limitPerMinute: points,
          refusedForSeconds: retryAfterSeconds,
          ...(attempt.email ? { email: attempt.email.slice(0, 200) } : {}),
          ...(left ? { refusalsNotRecorded: left } : {}),
        },
      });
    } catch (err) {
      // The refusal stands whether or not its record could be written; the failure is logged.
      log.error({ err }, "could not audit a refused sign-in attempt");
    }
  };
}

/**
 * rate-limiter-flexible's "pool" client, running its pg-style queries through knex so the same code
 * works on PostgreSQL and on PGlite (whose raw connection takes no query objects). `$n` placeholders
 * become knex's `?`, repeated ones included.
 */
export function knexQueryClient(knex: Knex) {
  return {
    query: async (q: string | { text: string; values?: unknown[] }) => {
      const text = typeof q === "string" ? q : q.text;
      const values = typeof q === "string" ? [] : (q.values ?? []);
      const bindings: unknown[] = [];
      const sql = text.replace(/\?/g, "\\?").replace(/\$(\d+)/g, (_, n: string) => {
        bindings.push(values[Number(n) - 1]);
        return "?";
      });
      return knex.raw(sql, bindings as Knex.RawBinding[]);
    },
  };
}

/** Creates the sign-in (per address) and API (per user or key) limiters. */
export function createLimiters(knex: Knex, config: Config, log: Logger): Limiters {
  const client = knexQueryClient(knex);
  const make = (keyPrefix: string, points: number) =>
    new RateLimiterPostgres({
      storeClient: client,
      storeType: "pool",
      tableName: "rate_limits",
      tableCreated: true,
      clearExpiredByTimeout: false,
      keyPrefix,
      points,
      duration: 60,
    });
  const signIn = make("signin", config.auth.signInPerIpPerMinute);
  const api = make("api", config.auth.apiPerMinute);
  const refuse = (ms: number, what: string) => {
    const seconds = Math.max(1, Math.ceil(ms / 1000));
    return new AppError(
      429,
      "rate_limited",
      `Too many ${what}. Try again in ${seconds} s.`,
      { retryAfterSeconds: seconds },
      {
        "Retry-After": String(seconds),
      },
    );
  };
  const apiPoints = config.auth.apiPerMinute;
  const auditRefusal = refusalAuditor(knex, config.auth.signInPerIpPerMinute, log);
  return {
    signIn: async (ip, attempt = {}) => {
      try {
        await signIn.consume(ip);
      } catch (err) {
        if (!(err instanceof RateLimiterRes)) throw err;
        const refusal = refuse(err.msBeforeNext, "sign-in attempts from this address");
        await auditRefusal(ip, err.consumedPoints, Math.ceil(err.msBeforeNext / 1000), attempt);
        throw refusal;
      }
    },
    api: batchedLimit(api, apiPoints, (ms) => refuse(ms, "requests")),
  };
}

/** How long API requests are counted in memory before their points are added to the shared counter. */
const FLUSH_MS = 100;

/**
 * API requests are counted off the critical path: each node adds up its requests per key and adds them to the
 * shared counter in PostgreSQL every FLUSH_MS (one statement per active key, not one per request), and refuses
 * at once, in memory, once what the counter last said plus what it has counted since reaches the limit. So one
 * node limits exactly; across nodes, each sees the others' requests with up to FLUSH_MS and a round trip of
 * delay. Sign-in, where that matters, stays strictly synchronous.
 */
export function batchedLimit(limiter: RateLimiterPostgres, points: number, refuse: (ms: number) => AppError) {
  // used: the shared counter's last answer; sent: points on their way to it; pending: not sent yet.
  const keys = new Map<string, { used: number; sent: number; pending: number; resetAt: number }>();
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    const now = Date.now();
    for (const [key, k] of keys) {
      if (!k.pending) {
        if (k.resetAt <= now && !k.sent) keys.delete(key);
        continue;
      }
      const n = k.pending;
      k.pending = 0;
      k.sent += n;
      const learn = (res: unknown) => {
        k.sent -= n;
        if (!(res instanceof RateLimiterRes)) return; // the database did not answer: count locally only
        k.used = res.consumedPoints;
        k.resetAt = Date.now() + res.msBeforeNext;
      };
      limiter.consume(key, n).then(learn, learn);
    }
  };
  return async (key: string): Promise<void> => {
    const now = Date.now();
    let k = keys.get(key);
    if (!k) {
      k = { used: 0, sent: 0, pending: 0, resetAt: now + 60_000 };
      keys.set(key, k);
    } else if (k.resetAt <= now) {
      k.used = 0;
      k.resetAt = now + 60_000;
    }
    if (k.used + k.sent + k.pending >= points) throw refuse(k.resetAt - now);
    k.pending += 1;
    timer ??= setTimeout(flush, FLUSH_MS).unref();
  };
}

/** Where a request comes from, for audit records and sessions. */
export const requestMeta = (ctx: Context) => ({
  ip: ctx.ip,
  userAgent: ctx.get("user-agent").slice(0, 300) || undefined,
});
const meta = requestMeta;

/** The profile of a session just opened, read as that session (so it goes through the same checks). */
export async function profileOfNewSession(
  knex: Knex,
  authenticator: Authenticator,
  ctx: Context,
  token: string,
) {
  const identityOf = await authenticator.identifySession(token, requestMeta(ctx));
  // load() enters the organization, as in every signed-in route.
  return knex.transaction(async (trx) => identity.me({ caller: await identityOf.load(trx), trx }));
}

/** Registers sign-in, profile, users, roles, groups, API keys, audit and organization routes. */
export function registerIdentityRoutes(
  api: Api,
  deps: { knex: Knex | null; config: Config; authenticator: Authenticator | null; limiters: Limiters | null },
): void {
  const { config } = deps;
  const need = <T>(v: T | null): T => {
    if (!v) throw AppError.unavailable("Identity is not configured on this process.");
    return v;
  };
  const tags = ["identity"];

  // ----- public: setup and sign-in -----
  api.publicRoute({
    method: "get",
    path: "/api/auth/setup",
    operationId: "getSetupStatus",
    summary: "Whether the first-run setup is still open",
    tags,
    response: s.setupStatusSchema,
    handler: async () => ({ data: { needsSetup: await identity.needsSetup(need(deps.knex)) } }),
  });
  api.publicRoute({
    method: "post",
    path: "/api/auth/setup",
    operationId: "runSetup",
    summary: "First run: create the first organization and its owner, and sign in",
    tags,
    body: s.setupBody,
    status: 201,
    response: dataOf(s.meSchema),
    errors: [403, 409, 429],
    handler: async (ctx, { body }) => {
      checkCsrf(ctx, config);
      await need(deps.limiters).signIn(ctx.ip, { userAgent: meta(ctx).userAgent });
      const knex = need(deps.knex);
      const { orgId, userId } = await identity.setupInstallation(knex, body, meta(ctx));
      const session = await knex.transaction(async (trx) => {
        await trx.raw("select set_config('app.org_id', ?, true)", [orgId]);
        return identity.createSession(trx, config, orgId, userId, meta(ctx));
      });
      setSessionCookie(ctx, session.token, session.expires);
      return { data: await meAfterSignIn(ctx, session.token) };
    },
  });
  api.publicRoute({
    method: "post",
    path: "/api/auth/login",
    operationId: "signIn",
    summary: "Sign in with email and password; sets the session cookie",
    tags,
    body: s.signInBody,
    response: dataOf(s.meSchema),
    errors: [401, 403, 429],
    handler: async (ctx, { body }) => {
      checkCsrf(ctx, config);
      await need(deps.limiters).signIn(ctx.ip, { email: body.email, userAgent: meta(ctx).userAgent });
      const result = await identity.signIn(need(deps.knex), config, body, meta(ctx));
      setSessionCookie(ctx, result.token, result.expires);
      return { data: await meAfterSignIn(ctx, result.token) };
    },
  });
  api.publicRoute({
    method: "post",
    path: "/api/auth/invitations/accept",
    operationId: "acceptInvitation",
    summary: "Accept an invitation: create the account and sign in",
    tags,
    body: s.acceptInvitationBody,
    status: 201,
    response: dataOf(s.meSchema),
    errors: [403, 404, 409, 429],
    handler: async (ctx, { body }) => {
      checkCsrf(ctx, config);
      await need(deps.limiters).signIn(ctx.ip, { userAgent: meta(ctx).userAgent });
      const result = await admin.acceptInvitation(need(deps.knex), config, body, meta(ctx));
      setSessionCookie(ctx, result.token, result.expires);
      return { data: await meAfterSignIn(ctx, result.token) };
    },
  });

  const meAfterSignIn = (ctx: Context, token: string) =>
    profileOfNewSession(need(deps.knex), need(deps.authenticator), ctx, token);

  // ----- signed in: profile, sessions, password, keys -----
  api.route({
    method: "get",
    path: "/api/auth/me",
    operationId: "getMe",
    summary: "The signed-in person, their organization, roles and permissions",
    tags,
    response: dataOf(s.meSchema),
    handler: async (_ctx, _in, scope) => ({ data: await identity.me(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/auth/logout",
    operationId: "signOut",
    summary: "Sign out: end this session",
    tags,
    status: 204,
    handler: async (ctx, _in, scope) => {
      await identity.signOut(scope);
      clearSessionCookie(ctx);
    },
  });
  api.route({
    method: "get",
    path: "/api/auth/sessions",
    operationId: "listMySessions",
    summary: "My open sessions",
    tags,
    response: dataOf(z.array(s.sessionSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await identity.listSessions(scope) }),
  });
  api.route({
    method: "delete",
    path: "/api/auth/sessions/:id",
    operationId: "revokeMySession",
    summary: "End one of my sessions",
    tags,
    params: s.idParams,
    status: 204,
    handler: async (_ctx, { params }, scope) => identity.revokeSession(scope, params.id),
  });
  api.route({
    method: "post",
    path: "/api/auth/password",
    operationId: "changeMyPassword",
    summary: "Change my password (other sessions end)",
    tags,
    body: s.changePasswordBody,
    status: 204,
    handler: async (_ctx, { body }, scope) => identity.changePassword(scope, body),
  });
  api.route({
    method: "post",
    path: "/api/auth/token",
    operationId: "issueAccessToken",
    summary: "Exchange an API key for a short-lived access token (JWT) with the key's scope",
    tags,
    response: s.tokenSchema,
    handler: async (_ctx, _in, { caller }) => {
      if (caller.via !== "api_key") throw AppError.forbidden("Access tokens are issued for API keys only.");
      const { token, expiresIn } = await need(deps.authenticator).issueToken(caller);
      return { data: { accessToken: token, tokenType: "Bearer" as const, expiresIn } };
    },
  });
  api.route({
    method: "get",
    path: "/api/api-keys",
    operationId: "listMyApiKeys",
    summary: "My API keys",
    tags,
    permission: "apikeys.manage",
    response: dataOf(z.array(s.apiKeySchema)),
    handler: async (_ctx, _in, scope) => ({ data: await admin.listApiKeys(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/api-keys",
    operationId: "createApiKey",
    summary: "Create an API key scoped to some of my permissions (the key is shown once)",
    tags,
    permission: "apikeys.manage",
    body: s.createApiKeyBody,
    status: 201,
    response: dataOf(s.createdApiKeySchema),
    handler: async (_ctx, { body }, scope) => ({ data: await admin.createApiKey(scope, body) }),
  });
  api.route({
    method: "delete",
    path: "/api/api-keys/:id",
    operationId: "revokeApiKey",
    summary: "Revoke one of my API keys",
    tags,
    permission: "apikeys.manage",
    params: s.idParams,
    status: 204,
    handler: async (_ctx, { params }, scope) => admin.revokeApiKey(scope, params.id),
  });

  // ----- users and invitations -----
  api.route({
    method: "get",
    path: "/api/users",
    operationId: "listUsers",
    summary: "People of the organization",
    tags,
    permission: "users.read",
    query: s.userListQuery,
    response: s.userListSchema,
    handler: async (_ctx, { query }, scope) => admin.listUsers(scope, query),
  });
  api.route({
    method: "post",
    path: "/api/users",
    operationId: "createUser",
    summary: "Create a user with an initial password",
    tags,
    permission: "admin.users",
    body: s.createUserBody,
    status: 201,
    response: dataOf(s.userSchema),
    errors: [409],
    handler: async (_ctx, { body }, scope) => ({ data: await admin.createUser(scope, body) }),
  });
  api.route({
    method: "get",
    path: "/api/users/:id",
    operationId: "getUser",
    summary: "One user",
    tags,
    permission: "users.read",
    params: s.idParams,
    response: dataOf(s.userSchema),
    handler: async (_ctx, { params }, scope) => ({ data: await admin.getUser(scope, params.id) }),
  });
  api.route({
    method: "patch",
    path: "/api/users/:id",
    operationId: "updateUser",
    summary: "Rename, deactivate or reactivate a user",
    tags,
    permission: "admin.users",
    params: s.idParams,
    body: s.updateUserBody,
    response: dataOf(s.userSchema),
    errors: [409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await admin.updateUser(scope, params.id, body),
    }),
  });
  api.route({
    method: "put",
    path: "/api/users/:id/roles",
    operationId: "setUserRoles",
    summary: "Set a user's roles",
    tags,
    permission: "admin.users",
    params: s.idParams,
    body: s.roleIdsBody,
    response: dataOf(s.userSchema),
    errors: [409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await admin.setUserRoles(scope, params.id, body.roleIds),
    }),
  });
  api.route({
    method: "post",
    path: "/api/users/:id/reset-password",
    operationId: "resetUserPassword",
    summary: "Set a new password for a user (unlocks the account, ends its sessions)",
    tags,
    permission: "admin.users",
    params: s.idParams,
    body: s.resetPasswordBody,
    status: 204,
    handler: async (_ctx, { params, body }, scope) => admin.resetPassword(scope, params.id, body.password),
  });
  api.route({
    method: "get",
    path: "/api/invitations",
    operationId: "listInvitations",
    summary: "Invitations",
    tags,
    permission: "admin.users",
    response: dataOf(z.array(s.invitationSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await admin.listInvitations(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/invitations",
    operationId: "createInvitation",
    summary: "Invite an address with a role: a one-time link to copy",
    tags,
    permission: "admin.users",
    body: s.createInvitationBody,
    status: 201,
    response: dataOf(s.createdInvitationSchema),
    handler: async (_ctx, { body }, scope) => ({ data: await admin.createInvitation(scope, body) }),
  });
  api.route({
    method: "delete",
    path: "/api/invitations/:id",
    operationId: "deleteInvitation",
    summary: "Withdraw an invitation",
    tags,
    permission: "admin.users",
    params: s.idParams,
    status: 204,
    handler: async (_ctx, { params }, scope) => admin.deleteInvitation(scope, params.id),
  });

  // ----- roles and permissions -----
  api.route({
    method: "get",
    path: "/api/permissions",
    operationId: "listPermissions",
    summary: "Every permission the modules declare",
    tags,
    permission: "admin.roles",
    response: dataOf(z.array(s.permissionSchema)),
    handler: async (_ctx, _in, { trx }) => ({ data: admin.listPermissions(trx) }),
  });
  api.route({
    method: "get",
    path: "/api/roles",
    operationId: "listRoles",
    summary: "Built-in and custom roles",
    tags,
    permission: "users.read",
    response: dataOf(z.array(s.roleSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await admin.listRoles(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/roles",
    operationId: "createRole",
    summary: "Create a custom role",
    tags,
    permission: "admin.roles",
    body: s.createRoleBody,
    status: 201,
    response: dataOf(s.roleSchema),
    errors: [409],
    handler: async (_ctx, { body }, scope) => ({ data: await admin.createRole(scope, body) }),
  });
  api.route({
    method: "patch",
    path: "/api/roles/:id",
    operationId: "updateRole",
    summary: "Edit a custom role",
    tags,
    permission: "admin.roles",
    params: s.idParams,
    body: s.updateRoleBody,
    response: dataOf(s.roleSchema),
    errors: [409],
    handler: async (_ctx, { params, body }, scope) => ({
      data: await admin.updateRole(scope, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/roles/:id",
    operationId: "deleteRole",
    summary: "Delete a custom role",
    tags,
    permission: "admin.roles",
    params: s.idParams,
    status: 204,
    errors: [409],
    handler: async (_ctx, { params }, scope) => admin.deleteRole(scope, params.id),
  });

  // ----- groups -----
  api.route({
    method: "get",
    path: "/api/groups",
    operationId: "listGroups",
    summary: "Groups with members and roles",
    tags,
    permission: "users.read",
    response: dataOf(z.array(s.groupSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await admin.listGroups(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/groups",
    operationId: "createGroup",
    summary: "Create a group",
    tags,
    permission: "admin.groups",
    body: s.createGroupBody,
    status: 201,
    response: dataOf(s.groupSchema),
    errors: [409],
    handler: async (_ctx, { body }, scope) => ({ data: await admin.createGroup(scope, body) }),
  });
  api.route({
    method: "get",
    path: "/api/groups/:id",
    operationId: "getGroup",
    summary: "One group",
    tags,
    permission: "users.read",
    params: s.idParams,
    response: dataOf(s.groupSchema),
    handler: async (_ctx, { params }, scope) => ({ data: await admin.getGroup(scope, params.id) }),
  });
  api.route({
    method: "patch",
    path: "/api/groups/:id",
    operationId: "updateGroup",
    summary: "Rename or describe a group",
    tags,
    permission: "admin.groups",
    params: s.idParams,
    body: s.updateGroupBody,
    response: dataOf(s.groupSchema),
    handler: async (_ctx, { params, body }, scope) => ({
      data: await admin.updateGroup(scope, params.id, body),
    }),
  });
  api.route({
    method: "delete",
    path: "/api/groups/:id",
    operationId: "deleteGroup",
    summary: "Delete a group",
    tags,
    permission: "admin.groups",
    params: s.idParams,
    status: 204,
    handler: async (_ctx, { params }, scope) => admin.deleteGroup(scope, params.id),
  });
  api.route({
    method: "put",
    path: "/api/groups/:id/members",
    operationId: "setGroupMembers",
    summary: "Set a group's members",
    tags,
    permission: "admin.groups",
    params: s.idParams,
    body: s.userIdsBody,
    response: dataOf(s.groupSchema),
    handler: async (_ctx, { params, body }, scope) => ({
      data: await admin.setGroupMembers(scope, params.id, body.userIds),
    }),
  });
  api.route({
    method: "put",
    path: "/api/groups/:id/roles",
    operationId: "setGroupRoles",
    summary: "Set the roles a group grants",
    tags,
    permission: "admin.groups",
    params: s.idParams,
    body: s.roleIdsBody,
    response: dataOf(s.groupSchema),
    handler: async (_ctx, { params, body }, scope) => ({
      data: await admin.setGroupRoles(scope, params.id, body.roleIds),
    }),
  });

  // ----- audit -----
  api.route({
    method: "get",
    path: "/api/audit",
    operationId: "listAudit",
    summary: "Audit records with filters, newest first",
    tags,
    permission: "audit.read",
    query: s.auditQuery,
    response: s.auditListSchema,
    handler: async (_ctx, { query }, scope) => admin.listAudit(scope, query),
  });
  api.route({
    method: "get",
    path: "/api/audit/export",
    operationId: "exportAudit",
    summary: "Export audit records as JSON lines or CSV",
    tags,
    permission: "audit.export",
    query: s.auditExportQuery,
    response: z.string(),
    responseType: "text/plain",
    handler: async (ctx, { query }, scope) => {
      const { format, ...filters } = query;
      const body = await admin.exportAudit(scope, filters, format);
      ctx.type = format === "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson";
      ctx.attachment(`audit.${format}`);
      return body;
    },
  });

  // ----- organization and installation -----
  api.route({
    method: "get",
    path: "/api/org",
    operationId: "getOrganization",
    summary: "My organization, its plan, limits and today's usage",
    tags,
    permission: "org.read",
    response: dataOf(s.organizationSchema),
    handler: async (_ctx, _in, scope) => ({ data: await org.getOrganization(scope) }),
  });
  api.route({
    method: "patch",
    path: "/api/org",
    operationId: "updateOrganization",
    summary: "Change my organization's name and settings",
    tags,
    permission: "admin.settings",
    body: s.updateOrganizationBody,
    response: dataOf(s.organizationSchema),
    handler: async (_ctx, { body }, scope) => ({ data: await org.updateOrganization(scope, body) }),
  });
  api.route({
    method: "get",
    path: "/api/system/organizations",
    operationId: "listInstallationOrganizations",
    scope: "installation",
    summary: "Every organization of the installation (system administrators)",
    tags,
    response: dataOf(z.array(s.installationOrgSchema)),
    handler: async (_ctx, _in, scope) => ({ data: await org.listOrganizations(scope) }),
  });
  api.route({
    method: "post",
    path: "/api/system/organizations",
    operationId: "createInstallationOrganization",
    scope: "installation",
    summary: "Create an organization with its owner (system administrators)",
    tags,
    body: s.createOrganizationBody,
    status: 201,
    response: dataOf(s.installationOrgSchema),
    errors: [409],
    handler: async (_ctx, { body }, scope) => ({
      data: (await org.createOtherOrganization(scope, body)) as z.infer<typeof s.installationOrgSchema>,
    }),
  });
  api.route({
    method: "patch",
    path: "/api/system/organizations/:id",
    operationId: "setOrganizationPlan",
    scope: "installation",
    summary: "Set an organization's plan and limit overrides (system administrators)",
    tags,
    params: s.idParams,
    body: s.setPlanBody,
    response: dataOf(s.installationOrgSchema),
    handler: async (_ctx, { params, body }, scope) => ({
      data: (await org.setOrganizationPlan(scope, params.id, body)) as z.infer<
        typeof s.installationOrgSchema
      >,
    }),
  });
}
