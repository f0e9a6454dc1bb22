// The directory client: LDAP / Active Directory through ldapts (ldapjs was decommissioned in 2024).
import { isIP } from "node:net";
import type { ConnectionOptions } from "node:tls";
import { Client, Filter, InvalidCredentialsError, type Entry } from "ldapts";
import { z } from "zod";

/** An organization's directory settings (the service password is stored sealed, apart from these). */
export const ldapConfigSchema = z
  .strictObject({
    url: z
      .string()
      .max(500)
      .regex(/^ldaps?:\/\/[^/\s?#]+\/?$/, "An LDAP URL such as ldaps://dc1.corp.example:636"),
    /** ldaps: TLS from the first byte; starttls: upgrade on ldap://, refused if the server cannot; none: plain. */
    security: z.enum(["ldaps", "starttls", "none"]),
    /** PEM of the CA that signed the directory's certificate; the system's CAs when empty. */
    caCert: z.string().max(50_000).default(""),
    bindDn: z.string().min(1).max(1000),
    userBase: z.string().min(1).max(1000),
    /** `{login}` is replaced by the escaped login name (RFC 4515). */
    userFilter: z
      .string()
      .max(1000)
      .refine((f) => f.includes("{login}") && f.startsWith("(") && f.endsWith(")"), {
        message: "A filter in parentheses containing {login}, e.g. (&(objectClass=person)(uid={login}))",
      }),
    loginAttribute: z.string().min(1).max(100).default("uid"),
    emailAttribute: z.string().min(1).max(100).default("mail"),
    nameAttribute: z.string().min(1).max(100).default("cn"),
    /** memberOf: read the user's memberOf attribute (AD, OpenLDAP with the overlay); member: search groups. */
    groupMode: z.enum(["memberOf", "member"]).default("member"),
    groupBase: z.string().max(1000).default(""),
    /** `{dn}` is replaced by the escaped user DN. */
    groupFilter: z
      .string()
      .max(1000)
      .default(
        "(|(&(objectClass=groupOfNames)(member={dn}))(&(objectClass=groupOfUniqueNames)(uniqueMember={dn})))",
      ),
    timeoutMs: z.number().int().min(500).max(60_000).default(8000),
  })
  .superRefine((c, ctx) => {
    const tlsUrl = c.url.startsWith("ldaps://");
    if (tlsUrl !== (c.security === "ldaps"))
      ctx.addIssue({
        code: "custom",
        path: ["security"],
        message: "ldaps:// URLs use security ldaps; ldap:// URLs use starttls or none",
      });
    if (c.groupMode === "member" && !c.groupBase)
      ctx.addIssue({ code: "custom", path: ["groupBase"], message: "Group search needs a base DN" });
    if (c.caCert && !/-----BEGIN CERTIFICATE-----/.test(c.caCert))
      ctx.addIssue({
        code: "custom",
        path: ["caCert"],
        message: "A PEM certificate (-----BEGIN CERTIFICATE-----)",
      });
  });

/** Directory settings as validated. */
export type LdapConfig = z.infer<typeof ldapConfigSchema>;

/** A person as the directory describes them. */
export interface DirectoryUser {
  dn: string;
  /** entryUUID (OpenLDAP), objectGUID (AD) or the DN: what links the account to the entry. */
  externalId: string;
  login: string;
  email: string;
  name: string;
  groups: string[];
}

/** Why a directory operation failed, in words an admin or a person can act on. */
export class DirectoryError extends Error {
  constructor(
    readonly reason:
      | "unreachable"
      | "tls_failed"
      | "service_bind_failed"
      | "not_found"
      | "ambiguous"
      | "wrong_password"
      | "blank_password"
      | "bad_login"
      | "search_failed",
    message: string,
  ) {
    super(message);
  }
}

/** The comparable form of a DN: lower case, no spaces around separators. */
export const normalizeDn = (dn: string) =>
  dn
    .trim()
    .toLowerCase()
    .replace(/\s*([,=+])\s*/g, "$1");

const first = (v: Entry[string] | undefined): string => {
  if (v === undefined) return "";
  const x = Array.isArray(v) ? v[0] : v;
  return x === undefined ? "" : Buffer.isBuffer(x) ? x.toString("hex") : String(x);
};
const all = (v: Entry[string] | undefined): string[] =>
  v === undefined
    ? []
    : (Array.isArray(v) ? v : [v]).map((x) => (Buffer.isBuffer(x) ? x.toString("utf8") : String(x)));

/** Talks to one organization's directory with its settings and service password. */
export class Directory {
  constructor(
    private readonly cfg: LdapConfig,
    private readonly servicePassword: string,
  ) {}

  private tlsOptions(): ConnectionOptions {
    const host = new URL(this.cfg.url.replace(/^ldaps?:/, "http:")).hostname.replace(/^\[|\]$/g, "");
    return {
      ca: this.cfg.caCert ? [this.cfg.caCert] : undefined,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
      host,
      servername: isIP(host) ? undefined : host,
    };
  }

  /** A connected client, TLS established as configured: never a silent fallback to plain LDAP. */
  private async open(): Promise<Client> {
    const client = new Client({
      url: this.cfg.url,
      timeout: this.cfg.timeoutMs,
      connectTimeout: this.cfg.timeoutMs,
      tlsOptions: this.cfg.security === "ldaps" ? this.tlsOptions() : undefined,
      strictDN: false,
    });
    if (this.cfg.security === "starttls") {
      try {
        await client.startTLS(this.tlsOptions());
      } catch (err) {
        await client.unbind().catch(() => undefined);
        throw new DirectoryError("tls_failed", `StartTLS failed: ${describe(err)}`);
      }
    }
    return client;
  }

  private async withServiceBind<T>(fn: (c: Client) => Promise<T>): Promise<T> {
    const client = await this.open();
    try {
      try {
        await client.bind(this.cfg.bindDn, this.servicePassword);
      } catch (err) {
        throw classify(err, "service_bind_failed", "The service account could not sign in to the directory");
      }
      return await fn(client);
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  private attributes(): string[] {
    const c = this.cfg;
    return [c.loginAttribute, c.emailAttribute, c.nameAttribute, "memberOf", "entryUUID", "objectGUID"];
  }

  private async groupsOf(client: Client, entry: Entry): Promise<string[]> {
    if (this.cfg.groupMode === "memberOf") return all(entry.memberOf);
    const filter = this.cfg.groupFilter.replaceAll("{dn}", Filter.escape(entry.dn));
    const { searchEntries } = await client.search(this.cfg.groupBase, {
      scope: "sub",
      filter,
      attributes: ["dn"],
      sizeLimit: 1000,
    });
    return searchEntries.map((g) => g.dn);
  }

  private toUser(entry: Entry, groups: string[]): DirectoryUser {
    const c = this.cfg;
    return {
      dn: entry.dn,
      externalId: first(entry.entryUUID) || first(entry.objectGUID) || normalizeDn(entry.dn),
      login: first(entry[c.loginAttribute]),
      email: first(entry[c.emailAttribute]),
      name: first(entry[c.nameAttribute]) || first(entry[c.loginAttribute]),
      groups,
    };
  }

  /** Looks a login name up as the service account: exactly one entry, or an error. */
  private async findEntry(client: Client, login: string): Promise<Entry> {
    const filter = this.cfg.userFilter.replaceAll("{login}", Filter.escape(login));
    let entries: Entry[];
    try {
      ({ searchEntries: entries } = await client.search(this.cfg.userBase, {
        scope: "sub",
        filter,
        attributes: this.attributes(),
        sizeLimit: 2,
      }));
    } catch (err) {
      if ((err as { code?: number }).code === 4)
        throw new DirectoryError("ambiguous", "More than one directory entry matches");
      throw classify(err, "search_failed", "The directory search failed");
    }
    if (entries.length === 0)
      throw new DirectoryError("not_found", "No directory entry matches this login name");
    if (entries.length > 1) throw new DirectoryError("ambiguous", "More than one directory entry matches");
    return entries[0] as Entry;
  }

  /**
   * Signs a person in: blank passwords are refused before any bind (an empty password would be an
   * anonymous bind that "succeeds"); search as the service account; bind as the one entry found.
   */
  async authenticate(login: string, password: string): Promise<DirectoryUser> {
    checkLogin(login);
    if (password.trim() === "") throw new DirectoryError("blank_password", "Enter your password");
    const entry = await this.withServiceBind((c) => this.findEntry(c, login));
    const userClient = await this.open();
    try {
      await userClient.bind(entry.dn, password);
    } catch (err) {
      if (err instanceof InvalidCredentialsError)
        throw new DirectoryError("wrong_password", "The login name or password is wrong");
      throw classify(err, "wrong_password", "The directory refused the sign-in");
    } finally {
      await userClient.unbind().catch(() => undefined);
    }
    // Groups are read as the service account: a person may not be allowed to read group entries.
    return this.withServiceBind(async (c) => this.toUser(entry, await this.groupsOf(c, entry)));
  }

  /** One person as the directory sees them now (for "test user"), without their password. */
  async lookup(login: string): Promise<DirectoryUser> {
    checkLogin(login);
    return this.withServiceBind(async (c) => {
      const entry = await this.findEntry(c, login);
      return this.toUser(entry, await this.groupsOf(c, entry));
    });
  }

  /** Every person the user filter matches (paged), with their groups: for sync and the mapping preview. */
  async listUsers(limit = 100_000): Promise<DirectoryUser[]> {
    return this.withServiceBind(async (c) => {
      const filter = this.cfg.userFilter.replaceAll("{login}", "*");
      const { searchEntries } = await c.search(this.cfg.userBase, {
        scope: "sub",
        filter,
        attributes: this.attributes(),
        paged: { pageSize: 500 },
        sizeLimit: limit,
      });
      const out: DirectoryUser[] = [];
      for (const e of searchEntries) out.push(this.toUser(e, await this.groupsOf(c, e)));
      return out;
    });
  }

  /** Connects, binds as the service account and counts the people the filter finds (the "test connection" action). */
  async test(): Promise<{ tls: string; users: number; sample: string[] }> {
    const users = await this.withServiceBind(async (c) => {
      const { searchEntries } = await c.search(this.cfg.userBase, {
        scope: "sub",
        filter: this.cfg.userFilter.replaceAll("{login}", "*"),
        attributes: [this.cfg.loginAttribute],
        sizeLimit: 1000,
      });
      return searchEntries;
    }).catch((err: unknown) => {
      if ((err as { code?: number }).code === 4) return null;
      throw err;
    });
    return {
      tls: this.cfg.security,
      users: users?.length ?? 1000,
      sample: (users ?? []).slice(0, 5).map((e) => first(e[this.cfg.loginAttribute])),
    };
  }
}

function checkLogin(login: string): void {
  // Control characters (NUL included) are never part of a login name; the filter would escape them anyway.
  // eslint-disable-next-line no-control-regex
  if (login.trim() === "" || login.length > 256 || /[\u0000-\u001f\u007f]/.test(login))
    throw new DirectoryError(
      "bad_login",
      "Enter your login name (at most 256 characters, no control characters)",
    );
}

function describe(err: unknown): string {
  const e = err as { code?: string | number; message?: string };
  return String(e.message ?? e.code ?? err).slice(0, 300);
}

/** Maps socket, TLS and LDAP errors to a DirectoryError. */
function classify(err: unknown, fallback: DirectoryError["reason"], text: string): DirectoryError {
  if (err instanceof DirectoryError) return err;
  const e = err as { code?: string | number; message?: string };
  const msg = describe(err);
  if (
    typeof e.code === "string" &&
    (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|HOSTNAME|ERR_SSL/.test(e.code) || /certificate/i.test(msg))
  )
    return new DirectoryError("tls_failed", `TLS failed: ${msg}`);
  if (
    typeof e.code === "string" &&
    /ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EHOSTUNREACH|ECONNRESET|ENETUNREACH/.test(e.code)
  )
    return new DirectoryError("unreachable", `The directory is unreachable: ${msg}`);
  if (/timeout|timed out/i.test(msg))
    return new DirectoryError("unreachable", `The directory did not answer: ${msg}`);
  if (/certificate|ssl|tls/i.test(msg)) return new DirectoryError("tls_failed", `TLS failed: ${msg}`);
  return new DirectoryError(fallback, `${text}: ${msg}`);
}
