import type { PermissionSpec } from "../../platform/auth/permissions.js";

/** The AI runtime's permissions. */
export const AI_PERMISSIONS: Record<string, PermissionSpec> = {
  "ai.chat": {
    description: "Use the local AI models (chat, embeddings, the OpenAI-compatible API)",
    roles: ["admin", "member"],
  },
};
