import type { MessageKey } from "$lib/i18n";

/** A module of the product as the navigation shows it. */
export interface ModuleEntry {
  id: string;
  label: MessageKey;
  description: MessageKey;
  section: "work" | "ai" | "admin";
  /** Where it lives when built (else the empty state at /<id>). */
  href?: string;
  /** Shown only to people holding this permission. */
  permission?: string;
}

/** Every module of the product, in navigation order. */
export const MODULES: ModuleEntry[] = [
  {
    id: "assistant",
    label: "module.assistant",
    description: "module.assistant.desc",
    section: "ai",
    href: "/assistant",
    permission: "assistant.use",
  },
  {
    id: "kb",
    label: "module.kb",
    description: "module.kb.desc",
    section: "ai",
    href: "/kb",
    permission: "kb.read",
  },
  {
    id: "projects",
    label: "module.projects",
    description: "module.projects.desc",
    section: "work",
    href: "/projects",
    permission: "projects.read",
  },
  {
    id: "chat",
    label: "module.chat",
    description: "module.chat.desc",
    section: "work",
    href: "/chat",
    permission: "chat.read",
  },
  {
    id: "notes",
    label: "module.notes",
    description: "module.notes.desc",
    section: "work",
    href: "/notes",
    permission: "notes.read",
  },
  { id: "calendar", label: "module.calendar", description: "module.calendar.desc", section: "work" },
  { id: "workflows", label: "module.workflows", description: "module.workflows.desc", section: "work" },
  {
    id: "integrations",
    label: "module.integrations",
    description: "module.integrations.desc",
    section: "admin",
    href: "/admin/integrations",
    permission: "integrations.manage",
  },
  {
    id: "productivity",
    label: "module.productivity",
    description: "module.productivity.desc",
    section: "work",
  },
  { id: "analytics", label: "module.analytics", description: "module.analytics.desc", section: "work" },
  {
    id: "admin",
    label: "module.admin",
    description: "module.admin.desc",
    section: "admin",
    href: "/admin/users",
    permission: "users.read",
  },
  {
    id: "models",
    label: "module.models",
    description: "module.models.desc",
    section: "admin",
    permission: "admin.settings",
  },
  {
    id: "audit",
    label: "module.audit",
    description: "module.audit.desc",
    section: "admin",
    href: "/admin/audit",
    permission: "audit.read",
  },
];
