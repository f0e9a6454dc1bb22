import type { PermissionSpec } from "../../platform/auth/permissions.js";

/** The identity module's permissions. */
export const IDENTITY_PERMISSIONS: Record<string, PermissionSpec> = {
  "admin.users": {
    description: "Invite, create, deactivate users, reset passwords, assign roles",
    roles: ["admin"],
  },
  // Held by owners alone (owners hold every permission): it puts owners above administrators, so an
  // administrator can neither grant the Owner role nor act on an owner (the privilege ceiling).
  "admin.owners": {
    description: "Grant the Owner role and manage owners (held by owners only)",
    roles: [],
  },
  "admin.groups": { description: "Create groups, manage members and group roles", roles: ["admin"] },
  "admin.roles": { description: "Create and edit custom roles", roles: ["admin"] },
  "admin.settings": { description: "Change organization settings", roles: ["admin"] },
  "admin.sso": {
    description: "Configure single sign-on (SAML, LDAP / Active Directory), its role mapping and policy",
    roles: ["admin"],
  },
  "audit.read": { description: "Read the audit log", roles: ["admin", "auditor"] },
  "audit.export": { description: "Export the audit log", roles: ["admin", "auditor"] },
  "apikeys.manage": { description: "Create and revoke your own API keys", roles: ["admin", "member"] },
  "users.read": { description: "See the people of the organization", roles: ["admin", "member", "auditor"] },
  "org.read": {
    description: "See the organization, its plan and usage",
    roles: ["admin", "member", "guest", "auditor"],
  },
};
