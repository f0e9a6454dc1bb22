import type { PermissionSpec } from "../../platform/auth/permissions.js";

/** The chat module's permissions. */
export const CHAT_PERMISSIONS: Record<string, PermissionSpec> = {
  "chat.read": {
    description: "Read the channels and direct conversations you belong to, and public channels",
    roles: ["admin", "member", "guest"],
  },
  "chat.write": {
    description: "Post messages, start channels and direct conversations",
    roles: ["admin", "member"],
  },
};
