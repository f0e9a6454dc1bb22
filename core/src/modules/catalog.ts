import { PermissionCatalog } from "../platform/auth/permissions.js";
import { IDENTITY_PERMISSIONS } from "./identity/identity.permissions.js";
import { AI_PERMISSIONS } from "./ai/ai.permissions.js";
import { NOTES_PERMISSIONS } from "./notes/notes.permissions.js";
import { KB_PERMISSIONS } from "./kb/kb.permissions.js";
import { CHAT_PERMISSIONS } from "./chat/chat.permissions.js";
import { ASSISTANT_PERMISSIONS } from "./assistant/assistant.permissions.js";
import { PROJECTS_PERMISSIONS } from "./projects/projects.permissions.js";
import { KB_INDEX_QUEUE } from "./kb/kb.events.js";
import { SSO_SYNC_QUEUE } from "./sso/sso.sync.js";
import type { QueueDef } from "../platform/bus/topology.js";

/** Every module's permissions. A module adds its declaration here. */
export const PERMISSIONS = new PermissionCatalog({
  identity: IDENTITY_PERMISSIONS,
  ai: AI_PERMISSIONS,
  notes: NOTES_PERMISSIONS,
  kb: KB_PERMISSIONS,
  chat: CHAT_PERMISSIONS,
  assistant: ASSISTANT_PERMISSIONS,
  projects: PROJECTS_PERMISSIONS,
});

/** Every module's work queues (the bus creates a durable consumer for each). */
export const MODULE_QUEUES: QueueDef[] = [KB_INDEX_QUEUE, SSO_SYNC_QUEUE];
