import { AppError } from "../http/errors.js";

/** Who is asking: the user (or the user's API key) and what they may do, in one organization. */
export interface Caller {
  orgId: string;
  userId: string;
  email: string;
  permissions: ReadonlySet<string>;
  systemAdmin: boolean;
  via: "session" | "api_key" | "token";
  sessionId?: string;
  apiKeyId?: string;
  ip?: string;
  userAgent?: string;
}

/** The one permission check: route guards, services and the AI tool registry all call it. */
export function can(caller: Caller, permission: string): boolean {
  return caller.permissions.has(permission);
}

/** Throws 403 unless the caller holds the permission. */
export function requirePermission(caller: Caller, permission: string): void {
  if (!can(caller, permission)) throw AppError.forbidden(`This needs the ${permission} permission.`);
}
