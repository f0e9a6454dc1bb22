import type { PermissionSpec } from "../../platform/auth/permissions.js";

/** The notes module's permissions. */
export const NOTES_PERMISSIONS: Record<string, PermissionSpec> = {
  "notes.read": {
    description: "Read your own notes and the notes shared with you",
    roles: ["admin", "member", "guest"],
  },
  "notes.write": {
    description: "Write notes, organize them in folders and tags, and share them",
    roles: ["admin", "member"],
  },
};
