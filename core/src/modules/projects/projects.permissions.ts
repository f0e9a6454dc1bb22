import type { PermissionSpec } from "../../platform/auth/permissions.js";

/** The projects module's permissions; what a person may do inside one project also depends on their project role. */
export const PROJECTS_PERMISSIONS: Record<string, PermissionSpec> = {
  "projects.read": {
    description: "See the projects you are a member of, their tasks and dashboards; comment on tasks",
    roles: ["admin", "member", "guest"],
  },
  "projects.write": {
    description: "Create projects, and change tasks in projects where you are an editor or owner",
    roles: ["admin", "member"],
  },
  "projects.manage": {
    description: "See and manage every project of the organization, as its owner",
    roles: ["admin"],
  },
};
