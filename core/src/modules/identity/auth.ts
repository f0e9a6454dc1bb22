import type { Context } from "koa";
import type { Knex } from "knex";
import { SignJWT, jwtVerify } from "jose";
import type { Config } from "../../config/schema.js";
import type { Caller } from "../../platform/auth/caller.js";
import { BUILTIN_ROLES, catalogOf, type BuiltinRole } from "../../platform/auth/permissions.js";
import { AppError } from "../../platform/http/errors.js";
import { apiKeyPrefix, sameHash, tokenHash } from "./tokens.js";

/** Header the web UI sends on every request; a cross-site form cannot set it. */
export const CSRF_HEADER = "x-requested-with";
export const CSRF_VALUE = "worksynapse";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** The session cookie's name: the `__Host-` prefix needs Secure, so it is used over TLS only. */
export const sessionCookieName = (secure: boolean) => (secure ? "__Host-ws_session" : "ws_session");

/** Sets the session cookie (HttpOnly, SameSite=Lax, Secure over TLS, host-only, path /). */
export function setSessionCookie(ctx: Context, token: string, expires: Date): void {
  ctx.cookies.set(sessionCookieName(ctx.secure), token, {
    httpOnly: true,
    sameSite: "lax",
    secure: ctx.secure,
    path: "/",
    expires,
    overwrite: true,
  });
}

/** Clears the session cookie. */
export function clearSessionCookie(ctx: Context): void {
  ctx.cookies.set(sessionCookieName(ctx.secure), "", {
    httpOnly: true,
    sameSite: "lax",
    secure: ctx.secure,
    path: "/",
    expires: new Date(0),
    overwrite: true,
  });
}

/** Rejects a cross-site state-changing request: the Origin must be ours and the UI's header present. */
export function checkCsrf(ctx: Context, config: Config): void {
  if (!UNSAFE.has(ctx.method)) return;
  const expected = config.auth.publicUrl
    ? new URL(config.auth.publicUrl).origin
    : `${ctx.protocol}://${ctx.host}`;
  const origin = ctx.get("origin");
  if (origin && origin !== expected) {
    throw new AppError(403, "csrf_rejected", "This request came from another site and was refused.");
  }
  if (ctx.get(CSRF_HEADER).toLowerCase() !== CSRF_VALUE) {
    throw new AppError(
      403,
      "csrf_rejected",
      `Requests made with the session cookie must send ${CSRF_HEADER}: ${CSRF_VALUE}.`,
    );
  }
}

/** Whom a request claims to be, before the organization's transaction opens. */
export interface Identity {
  orgId: string;
  /** Key for per-caller rate limits. */
  rateKey: string;
  via: Caller["via"];
  /**
   * Enters the organization in `trx` (row-level security) and loads and checks the caller, in one statement;
   * throws 401 when no longer valid.
   */
  load(trx: Knex.Transaction): Promise<Caller>;
}

interface RoleRow {
  key: string;
  builtin: boolean;
  permissions: string[];
}

/** The permissions a set of roles grants (built-in roles from code, custom roles from their rows). */
export function permissionsOf(db: object, roles: RoleRow[]): Set<string> {
  const catalog = catalogOf(db);
  const out = new Set<string>();
  for (const r of roles) {
    const perms =
      r.builtin && (BUILTIN_ROLES as readonly string[]).includes(r.key)
        ? catalog.ofBuiltinRole(r.key as BuiltinRole)
        : r.permissions;
    for (const p of perms) out.add(p);
  }
  return out;
}

/** Ids of the roles a user holds, directly and through groups: the one definition of "a user's roles". */
// user_role_ids() is defined in the notes migration, the one definition of "roles through groups too".
const ROLE_IDS_OF_USER = "select user_role_ids(:user)";

/** The roles a user holds directly and through groups. */
export async function rolesOfUser(trx: Knex.Transaction, userId: string): Promise<RoleRow[]> {
  return (
    await trx.raw(`select r.key, r.builtin, r.permissions from roles r where r.id in (${ROLE_IDS_OF_USER})`, {
      user: userId,
    })
  ).rows as RoleRow[];
}

interface CallerRow {
  id: string;
  email: string;
  status: string;
  system_admin: boolean;
  roles: RoleRow[];
  key_permissions?: string[];
}

/**
 * Runs one of the auth_*_caller functions (migration 20261204000000): it enters the organization for
 * row-level security, checks the credential, records its use and returns the caller, in one statement.
 */
async function callerRow(trx: Knex.Transaction, fn: string, args: unknown[]): Promise<CallerRow | undefined> {
  const placeholders = args.map(() => "?").join(", ");
  // A named statement: each connection parses and plans it once.
  const query = trx
    .raw(`select ${fn}(${placeholders}) as c`, args as Knex.RawBinding[])
    .options({ name: fn });
  const rows = (await query).rows as { c: CallerRow | null }[];
  return rows[0]?.c ?? undefined;
}

function activeUser(row: CallerRow | undefined, message: string): CallerRow {
  if (!row) throw AppError.unauthenticated(message);
  if (row.status !== "active") throw AppError.unauthenticated("Your account is not active.");
  return row;
}

/**
 * A bounded map of credential lookups (token hash or key prefix -> organization, user, row id). The mapping
 * never changes for a credential, and whether it is still valid is checked in the organization's transaction
 * on every request, so caching it cannot outlive a revocation.
 */
class LookupCache<T> {
  private readonly map = new Map<string, T>();
  constructor(private readonly max = 10_000) {}
  get(key: string): T | undefined {
    return this.map.get(key);
  }
  set(key: string, value: T): void {
    if (this.map.size >= this.max) this.map.delete(this.map.keys().next().value as string);
    this.map.set(key, value);
  }
}

/** Finds who is calling from API key, bearer token or session cookie; validates them in the org transaction. */
export class Authenticator {
  private readonly jwtKey: Uint8Array;
  private readonly sessions = new LookupCache<{ session_id: string; org_id: string; user_id: string }>();
  private readonly keys = new LookupCache<{ key_id: string; org_id: string; key_hash: string }>();

  constructor(
    private readonly knex: Knex,
    private readonly config: Config,
    masterKey: string,
  ) {
    this.jwtKey = new TextEncoder().encode(`worksynapse-access-token:${masterKey}`);
  }

  /** A short-lived access token (HS256, algorithm pinned) carrying a key's scope. */
  async issueToken(caller: Caller): Promise<{ token: string; expiresIn: number }> {
    const expiresIn = this.config.auth.accessTokenMinutes * 60;
    const token = await new SignJWT({
      org: caller.orgId,
      perms: [...caller.permissions],
      key: caller.apiKeyId,
    })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(caller.userId)
      .setIssuedAt()
      .setExpirationTime(`${expiresIn}s`)
      .setIssuer("worksynapse")
      .sign(this.jwtKey);
    return { token, expiresIn };
  }

  /** Null when the request carries no credentials; 401 when it carries bad ones. */
  async identify(ctx: Context): Promise<Identity | null> {
    const meta = { ip: ctx.ip, userAgent: ctx.get("user-agent").slice(0, 300) || undefined };
    const authz = ctx.get("authorization");
    const bearer = /^Bearer\s+(.+)$/i.exec(authz)?.[1]?.trim();
    const apiKey = ctx.get("x-api-key") || (bearer?.startsWith("wsk_") ? bearer : undefined);
    if (apiKey) return this.fromApiKey(apiKey, meta);
    if (bearer) return this.fromToken(bearer, meta);
    if (authz) throw AppError.unauthenticated("Unsupported Authorization header.");
    // Over TLS only the __Host- cookie counts: a sibling subdomain could plant a plain one.
    const cookie = ctx.cookies.get(sessionCookieName(ctx.secure));
    if (!cookie) return null;
    const id = await this.identifySession(cookie, meta);
    checkCsrf(ctx, this.config);
    return id;
  }

  /** Identifies a session token (also used right after sign-in to read the new session's profile). */
  async identifySession(token: string, meta: { ip?: string; userAgent?: string }): Promise<Identity> {
    const hash = tokenHash(token);
    let found = this.sessions.get(hash);
    if (!found) {
      found = (await this.knex.raw("select * from auth_find_session(?)", [hash])).rows[0] as
        { session_id: string; org_id: string; user_id: string } | undefined;
      if (!found) throw AppError.unauthenticated("Your session has ended. Sign in again.");
      this.sessions.set(hash, found);
    }
    const { session_id: sessionId, org_id: orgId, user_id: userId } = found;
    const idle = this.config.auth.sessionIdleMinutes;
    return {
      orgId,
      rateKey: `user:${userId}`,
      via: "session",
      load: async (trx) => {
        const row = await callerRow(trx, "auth_session_caller", [orgId, sessionId, idle]);
        const user = activeUser(row, "Your session has ended. Sign in again.");
        return {
          orgId,
          userId: user.id,
          email: user.email,
          systemAdmin: user.system_admin,
          permissions: permissionsOf(trx, user.roles),
          via: "session",
          sessionId,
          ...meta,
        };
      },
    };
  }

  private async fromApiKey(key: string, meta: { ip?: string; userAgent?: string }): Promise<Identity> {
    const prefix = apiKeyPrefix(key);
    let found = prefix ? this.keys.get(prefix) : undefined;
    if (prefix && !found) {
      found = (await this.knex.raw("select * from auth_find_api_key(?)", [prefix])).rows[0] as
        { key_id: string; org_id: string; key_hash: string } | undefined;
      if (found) this.keys.set(prefix, found);
    }
    if (!found || !sameHash(found.key_hash, tokenHash(key)))
      throw AppError.unauthenticated("The API key is not valid.");
    const { key_id: keyId, org_id: orgId } = found;
    return {
      orgId,
      rateKey: `key:${keyId}`,
      via: "api_key",
      load: async (trx) => {
        const user = activeUser(
          await callerRow(trx, "auth_key_caller", [orgId, keyId]),
          "The API key is revoked or expired.",
        );
        // A key never holds more than its owner holds now.
        const owner = permissionsOf(trx, user.roles);
        return {
          orgId,
          userId: user.id,
          email: user.email,
          systemAdmin: false,
          permissions: new Set((user.key_permissions ?? []).filter((p) => owner.has(p))),
          via: "api_key",
          apiKeyId: keyId,
          ...meta,
        };
      },
    };
  }

  private async fromToken(token: string, meta: { ip?: string; userAgent?: string }): Promise<Identity> {
    let claims: { sub?: string; org?: unknown; perms?: unknown; key?: unknown };
    try {
      ({ payload: claims } = await jwtVerify(token, this.jwtKey, {
        algorithms: ["HS256"],
        issuer: "worksynapse",
      }));
    } catch {
      throw AppError.unauthenticated("The access token is not valid or has expired.");
    }
    const { sub, org, perms, key } = claims;
    if (
      typeof sub !== "string" ||
      typeof org !== "string" ||
      !Array.isArray(perms) ||
      typeof key !== "string"
    ) {
      throw AppError.unauthenticated("The access token is not valid.");
    }
    return {
      orgId: org,
      rateKey: `key:${key}`,
      via: "token",
      load: async (trx) => {
        const user = activeUser(
          await callerRow(trx, "auth_token_caller", [org, key, sub]),
          "The API key behind this token was revoked.",
        );
        const owner = permissionsOf(trx, user.roles);
        return {
          orgId: org,
          userId: user.id,
          email: user.email,
          systemAdmin: false,
          permissions: new Set((perms as string[]).filter((p) => owner.has(p))),
          via: "token",
          apiKeyId: key,
          ...meta,
        };
      },
    };
  }
}

/**
 * A person of the organization as a caller, for work done on their behalf outside a request (a chat slash
 * command answered as them); their current roles apply. Null when no active person has this email.
 */
export async function callerOfUser(
  trx: Knex.Transaction,
  orgId: string,
  email: string,
): Promise<Caller | null> {
  const u = (await trx("users")
    .whereRaw("lower(email) = lower(?)", [email])
    .first("id", "email", "status", "system_admin")) as
    { id: string; email: string; status: string; system_admin: boolean } | undefined;
  if (!u || u.status !== "active") return null;
  return {
    orgId,
    userId: u.id,
    email: u.email,
    systemAdmin: u.system_admin,
    permissions: permissionsOf(trx, await rolesOfUser(trx, u.id)),
    via: "token",
  };
}
