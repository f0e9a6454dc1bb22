import { z } from "zod";
import { PASSWORD_MAX } from "./passwords.js";
import { overridesSchema } from "./org.service.js";

const email = z.email().max(254);
const name = z.string().trim().min(1).max(120);
const password = z
  .string()
  .min(1)
  .max(PASSWORD_MAX * 4);
const id = z.uuid();
const iso = z.iso.datetime({ offset: true });

/** `{ id }` path parameters. */
export const idParams = z.object({ id });
/** Paging of list endpoints. */
export const pageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
});
const page = z.object({ total: z.number(), limit: z.number(), offset: z.number() }).meta({ id: "Page" });

export const setupStatusSchema = z.object({ data: z.object({ needsSetup: z.boolean() }) });
export const setupBody = z
  .strictObject({ organizationName: name, name, email, password })
  .meta({ id: "SetupRequest" });
export const signInBody = z
  .strictObject({ email: z.string().trim().min(1).max(254), password })
  .meta({ id: "SignInRequest" });
export const acceptInvitationBody = z
  .strictObject({ token: z.string().min(20).max(200), displayName: name, password })
  .meta({ id: "AcceptInvitationRequest" });
export const changePasswordBody = z
  .strictObject({ currentPassword: password, newPassword: password })
  .meta({ id: "ChangePasswordRequest" });

export const meSchema = z
  .object({
    id,
    email: z.string(),
    displayName: z.string(),
    systemAdmin: z.boolean(),
    roles: z.array(z.string()),
    permissions: z.array(z.string()),
    /** Where the UI sends the browser to sign out when the session came from an IdP with single logout. */
    singleLogoutUrl: z.string().nullable(),
    organization: z.object({ id, name: z.string(), slug: z.string(), plan: z.string() }),
    via: z.enum(["session", "api_key", "token"]),
  })
  .meta({ id: "Me" });

export const sessionSchema = z
  .object({
    id,
    ip: z.string().nullable(),
    userAgent: z.string().nullable(),
    createdAt: z.string(),
    lastSeenAt: z.string(),
    expiresAt: z.string(),
    current: z.boolean(),
  })
  .meta({ id: "Session" });

const roleRef = z.object({ id, key: z.string(), name: z.string() });
export const userSchema = z
  .object({
    id,
    email: z.string(),
    displayName: z.string(),
    status: z.enum(["active", "deactivated"]),
    locked: z.boolean(),
    roles: z.array(roleRef),
    lastLoginAt: z.string().nullable(),
    createdAt: z.string(),
    /** How the person signs in: a local password, or the organization's SAML IdP or directory. */
    signsInWith: z.enum(["password", "saml", "ldap"]),
  })
  .meta({ id: "User" });
export const userListQuery = pageQuery.extend({ search: z.string().max(200).optional() });
export const userListSchema = z.object({ data: z.array(userSchema), page });
export const createUserBody = z
  .strictObject({ email, displayName: name, password, roleIds: z.array(id).max(50).default([]) })
  .meta({ id: "CreateUserRequest" });
export const updateUserBody = z
  .strictObject({ displayName: name.optional(), status: z.enum(["active", "deactivated"]).optional() })
  .meta({ id: "UpdateUserRequest" });
export const roleIdsBody = z.strictObject({ roleIds: z.array(id).max(50) }).meta({ id: "RoleIdsRequest" });
export const resetPasswordBody = z.strictObject({ password }).meta({ id: "ResetPasswordRequest" });

export const invitationSchema = z
  .object({
    id,
    email: z.string(),
    roleId: id,
    expiresAt: z.string(),
    acceptedAt: z.string().nullable(),
    createdAt: z.string(),
  })
  .meta({ id: "Invitation" });
export const createdInvitationSchema = invitationSchema
  .extend({ token: z.string(), path: z.string() })
  .meta({ id: "CreatedInvitation" });
export const createInvitationBody = z
  .strictObject({ email, roleId: id })
  .meta({ id: "CreateInvitationRequest" });

const permissionCode = z
  .string()
  .regex(/^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$/)
  .max(80);
export const roleSchema = z
  .object({
    id,
    key: z.string(),
    name: z.string(),
    description: z.string(),
    builtin: z.boolean(),
    permissions: z.array(z.string()),
  })
  .meta({ id: "Role" });
export const createRoleBody = z
  .strictObject({
    name,
    description: z.string().max(500).default(""),
    permissions: z.array(permissionCode).max(200),
  })
  .meta({ id: "CreateRoleRequest" });
export const updateRoleBody = z
  .strictObject({
    name: name.optional(),
    description: z.string().max(500).optional(),
    permissions: z.array(permissionCode).max(200).optional(),
  })
  .meta({ id: "UpdateRoleRequest" });
export const permissionSchema = z
  .object({ code: z.string(), module: z.string(), description: z.string(), roles: z.array(z.string()) })
  .meta({ id: "Permission" });

export const groupSchema = z
  .object({
    id,
    name: z.string(),
    description: z.string(),
    members: z.array(z.object({ id, email: z.string(), displayName: z.string() })),
    roles: z.array(roleRef),
  })
  .meta({ id: "Group" });
export const createGroupBody = z
  .strictObject({ name, description: z.string().max(500).default("") })
  .meta({ id: "CreateGroupRequest" });
export const updateGroupBody = z
  .strictObject({ name: name.optional(), description: z.string().max(500).optional() })
  .meta({ id: "UpdateGroupRequest" });
export const userIdsBody = z.strictObject({ userIds: z.array(id).max(1000) }).meta({ id: "UserIdsRequest" });

export const apiKeySchema = z
  .object({
    id,
    name: z.string(),
    prefix: z.string(),
    permissions: z.array(z.string()),
    expiresAt: z.string().nullable(),
    lastUsedAt: z.string().nullable(),
    revokedAt: z.string().nullable(),
    createdAt: z.string(),
  })
  .meta({ id: "ApiKey" });
export const createdApiKeySchema = apiKeySchema.extend({ key: z.string() }).meta({ id: "CreatedApiKey" });
export const createApiKeyBody = z
  .strictObject({ name, permissions: z.array(permissionCode).min(1).max(200), expiresAt: iso.optional() })
  .meta({ id: "CreateApiKeyRequest" });
export const tokenSchema = z.object({
  data: z.object({ accessToken: z.string(), tokenType: z.literal("Bearer"), expiresIn: z.number() }),
});

export const auditQuery = pageQuery.extend({
  action: z.string().max(100).optional(),
  actorId: z.string().max(100).optional(),
  targetId: z.string().max(100).optional(),
  outcome: z.enum(["success", "failure", "denied"]).optional(),
  from: iso.optional(),
  to: iso.optional(),
});
export const auditExportQuery = auditQuery
  .omit({ limit: true, offset: true })
  .extend({ format: z.enum(["jsonl", "csv"]).default("jsonl") });
export const auditRecordSchema = z
  .object({
    id: z.string(),
    seq: z.number(),
    at: z.string(),
    actorType: z.string(),
    actorId: z.string().nullable(),
    action: z.string(),
    targetType: z.string().nullable(),
    targetId: z.string().nullable(),
    ip: z.string().nullable(),
    userAgent: z.string().nullable(),
    outcome: z.string(),
    details: z.record(z.string(), z.unknown()),
    hash: z.string(),
  })
  .meta({ id: "AuditRecord" });
export const auditListSchema = z.object({ data: z.array(auditRecordSchema), page });

const limits = z.object({
  aiRequestsPerDay: z.number().nullable(),
  tokensPerDay: z.number().nullable(),
  integrations: z.number().nullable(),
  workflowRunsPerDay: z.number().nullable(),
  ssoAllowed: z.boolean(),
  analyticsDays: z.number().nullable(),
});
const planName = z.enum(["starter", "professional", "enterprise"]);
export const organizationSchema = z
  .object({
    id,
    name: z.string(),
    slug: z.string(),
    plan: planName,
    limits,
    settings: z.record(z.string(), z.unknown()),
    usageToday: z.array(z.object({ metric: z.string(), organization: z.number(), you: z.number() })),
    createdAt: z.string(),
  })
  .meta({ id: "Organization" });
export const updateOrganizationBody = z
  .strictObject({ name: name.optional(), settings: z.record(z.string().max(100), z.unknown()).optional() })
  .meta({ id: "UpdateOrganizationRequest" });
export const installationOrgSchema = z
  .object({
    id,
    name: z.string(),
    slug: z.string(),
    plan: planName,
    overrides: z.record(z.string(), z.unknown()),
    createdAt: z.string(),
  })
  .meta({ id: "InstallationOrganization" });
export const createOrganizationBody = z
  .strictObject({ name, ownerEmail: email, ownerName: name, ownerPassword: password })
  .meta({ id: "CreateOrganizationRequest" });
export const setPlanBody = z
  .strictObject({ plan: planName.optional(), overrides: overridesSchema.optional() })
  .meta({ id: "SetPlanRequest" });
