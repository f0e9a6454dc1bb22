import type { PermissionSpec } from "../../platform/auth/permissions.js";

/** The assistant's permissions. */
export const ASSISTANT_PERMISSIONS: Record<string, PermissionSpec> = {
  "assistant.use": {
    description: "Talk to the AI assistant, keep conversations and memory facts, approve its actions",
    roles: ["admin", "member"],
  },
  "assistant.runs.read": {
    description: "Browse the assistant's execution log: every run, step, tool call and approval",
    roles: ["admin", "auditor"],
  },
};
