import { z } from "zod";

const id = z.uuid();
const slug = z.string().min(1).max(100);

/** One sign-in option shown on the login page. */
export const signInOptionSchema = z
  .object({
    organization: z.string(),
    organizationName: z.string(),
    kind: z.enum(["saml", "ldap"]),
    label: z.string(),
  })
  .meta({ id: "SsoSignInOption" });

/** Directory sign-in. */
export const ldapSignInBody = z
  .strictObject({
    organization: slug,
    login: z.string().max(256),
    password: z.string().max(1024),
  })
  .meta({ id: "LdapSignInRequest" });

/** A group-to-role rule. */
export const groupRoleSchema = z.strictObject({ group: z.string().trim().min(1).max(1000), roleId: id });

/** Saving a provider; `config` is validated for the provider's kind by the service. */
export const saveProviderBody = z
  .strictObject({
    enabled: z.boolean(),
    label: z.string().trim().min(1).max(100),
    config: z.record(z.string(), z.unknown()),
    /** The LDAP service account's password; omit to keep the stored one, "" to clear it. */
    secret: z.string().max(1024).optional(),
    groupRoles: z.array(groupRoleSchema).max(500),
    defaultRoleId: id.nullable(),
    syncMinutes: z.number().int().min(5).max(10080).optional(),
  })
  .meta({ id: "SaveSsoProviderRequest" });

/** A provider as an admin sees it (no secret). */
export const providerSchema = z
  .object({
    id,
    kind: z.enum(["saml", "ldap"]),
    enabled: z.boolean(),
    label: z.string(),
    config: z.record(z.string(), z.unknown()),
    hasSecret: z.boolean(),
    groupRoles: z.array(z.object({ group: z.string(), roleId: id })),
    defaultRoleId: id.nullable(),
    syncMinutes: z.number(),
    lastSyncAt: z.string().nullable(),
    lastSync: z.record(z.string(), z.unknown()),
  })
  .meta({ id: "SsoProvider" });

/** The policy: SSO required, and the break-glass owner. */
export const policySchema = z
  .strictObject({ ssoRequired: z.boolean(), breakGlassUserId: id.nullable() })
  .meta({ id: "SsoPolicy" });

/** Everything the SSO admin page shows. */
export const ssoOverviewSchema = z
  .object({
    saml: providerSchema.nullable(),
    ldap: providerSchema.nullable(),
    policy: policySchema,
    serviceProvider: z.object({
      entityId: z.string(),
      acsUrl: z.string(),
      sloUrl: z.string(),
      metadataUrl: z.string(),
    }),
  })
  .meta({ id: "SsoOverview" });

/** IdP metadata to read into the form. */
export const metadataImportBody = z
  .strictObject({ xml: z.string().min(1).max(1_000_000) })
  .meta({ id: "SamlMetadataImport" });
export const metadataImportSchema = z.object({
  idpEntityId: z.string(),
  idpSsoUrl: z.string(),
  idpSloUrl: z.string(),
  idpCerts: z.array(z.string()),
});

/** Unsaved directory settings to test (the stored ones when omitted). */
export const ldapTestBody = z
  .strictObject({
    config: z.record(z.string(), z.unknown()).optional(),
    secret: z.string().max(1024).optional(),
  })
  .meta({ id: "LdapTestRequest" });
export const ldapTestUserBody = z
  .strictObject({
    config: z.record(z.string(), z.unknown()).optional(),
    secret: z.string().max(1024).optional(),
    login: z.string().min(1).max(256),
    /** With a password the sign-in itself is tried (no session is made). */
    password: z.string().max(1024).optional(),
  })
  .meta({ id: "LdapTestUserRequest" });

/** A directory person with the roles the mapping gives them. */
export const directoryPersonSchema = z.object({
  dn: z.string(),
  login: z.string(),
  email: z.string(),
  name: z.string(),
  groups: z.array(z.string()),
  roles: z.array(z.string()),
});
export const ldapTestSchema = z.object({
  ok: z.literal(true),
  tls: z.string(),
  users: z.number(),
  sample: z.array(z.string()),
});
export const ldapTestUserSchema = z.object({ person: directoryPersonSchema, passwordChecked: z.boolean() });
export const previewBody = z
  .strictObject({
    groupRoles: z.array(groupRoleSchema).max(500).optional(),
    defaultRoleId: id.nullable().optional(),
  })
  .meta({ id: "LdapPreviewRequest" });
export const previewSchema = z.object({
  people: z.array(directoryPersonSchema),
  total: z.number(),
  truncated: z.boolean(),
});

export const orgParams = z.strictObject({ org: slug });
export const loginQuery = z.strictObject({ returnTo: z.string().max(500).optional() });
export const logoutQuery = z.strictObject({ session: z.uuid() });
