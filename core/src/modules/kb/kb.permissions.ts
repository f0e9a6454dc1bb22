import type { PermissionSpec } from "../../platform/auth/permissions.js";

/** The knowledge base's permissions. Access to each collection is granted on top of these. */
export const KB_PERMISSIONS: Record<string, PermissionSpec> = {
  "kb.read": {
    description: "Search and read the knowledge-base collections shared with you",
    roles: ["admin", "member", "guest"],
  },
  "kb.write": {
    description: "Create collections and upload documents to the collections you manage",
    roles: ["admin", "member"],
  },
  "kb.admin": {
    description: "Manage every collection of the organization and re-index the knowledge base",
    roles: ["admin"],
  },
};
