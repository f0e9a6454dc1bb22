import { PermissionCatalog } from "../platform/auth/permissions.js";
import { IDENTITY_PERMISSIONS } from "./identity/identity.permissions.js";
import { AI_PERMISSIONS } from "./ai/ai.permissions.js";
import { NOTES_PERMISSIONS } from "./notes/notes.permissions.js";

/** Every module's permissions. A module adds its declaration here. */
export const PERMISSIONS = new PermissionCatalog({
  identity: IDENTITY_PERMISSIONS,
  ai: AI_PERMISSIONS,
  notes: NOTES_PERMISSIONS,
});
