import { randomBytes } from "node:crypto";
import pg from "pg";
import type { TestServer } from "./server.js";
import { createOrganization } from "../../core/src/modules/identity/identity.service.js";

/** A good password for tests (12+ characters, not on the common list). */
export const PASSWORD = "violet-harbor-lantern-42";

/** An HTTP client for one signed-in person (session cookie + the UI's CSRF header), or an API key. */
export class Client {
  constructor(
    readonly srv: TestServer,
    private readonly auth: { cookie?: string; apiKey?: string; bearer?: string } = {},
  ) {}

  headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { ...extra };
    if (this.auth.cookie) {
      h.cookie = this.auth.cookie;
      h["x-requested-with"] = "worksynapse";
      h.origin = this.srv.url;
    }
    if (this.auth.apiKey) h["x-api-key"] = this.auth.apiKey;
    if (this.auth.bearer) h.authorization = `Bearer ${this.auth.bearer}`;
    return h;
  }

  request(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<Response> {
    return this.srv.fetch(path, {
      method,
      headers: this.headers(body === undefined ? {} : { "content-type": "application/json" }),
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      ...init,
    });
  }

  /** JSON of a request that must answer `status`. */
  async json<T = { data: unknown }>(method: string, path: string, body?: unknown, status = 200): Promise<T> {
    const r = await this.request(method, path, body);
    const text = await r.text();
    if (r.status !== status)
      throw new Error(`${method} ${path}: expected ${status}, got ${r.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }
}

/** Signs in through POST /api/auth/login and returns a client with the session cookie. */
export async function signIn(srv: TestServer, email: string, password = PASSWORD): Promise<Client> {
  const r = await srv.fetch("/api/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: srv.url },
    body: JSON.stringify({ email, password }),
  });
  if (r.status !== 200) throw new Error(`sign-in of ${email} failed: ${r.status} ${await r.text()}`);
  const cookie = r.headers.getSetCookie().find((c) => c.startsWith("ws_session="));
  if (!cookie) throw new Error("no session cookie");
  return new Client(srv, { cookie: cookie.split(";")[0] as string });
}

/** An organization with an owner, created directly through the service (as an admin's CLI would). */
export interface TestOrg {
  orgId: string;
  ownerId: string;
  ownerEmail: string;
  marker: string;
  owner: Client;
}

/**
 * Creates an organization whose names carry a unique marker string, and signs its owner in. `plan` sets its
 * plan as a system administrator would (the default, starter, does not include single sign-on).
 */
export async function createTestOrg(
  srv: TestServer,
  label = "org",
  opts: { plan?: "starter" | "professional" | "enterprise" } = {},
): Promise<TestOrg> {
  const marker = `MARK${randomBytes(4).toString("hex").toUpperCase()}`;
  const ownerEmail = `owner-${marker.toLowerCase()}@${label}.example`;
  const { orgId, ownerId } = await createOrganization(
    srv.db.knex,
    {
      name: `${label} ${marker}`,
      ownerEmail,
      ownerName: `Owner ${marker}`,
      ownerPassword: PASSWORD,
      systemAdmin: false,
    },
    { actorType: "system", actorId: "test" },
  );
  if (opts.plan) {
    const su = new pg.Client({ connectionString: srv.pg.url });
    await su.connect();
    try {
      await su.query("update organizations set plan = $2 where id = $1", [orgId, opts.plan]);
    } finally {
      await su.end();
    }
  }
  return { orgId, ownerId, ownerEmail, marker, owner: await signIn(srv, ownerEmail) };
}

/** Creates a user with the given built-in role keys through the API and signs them in. */
export async function createMember(
  org: TestOrg,
  roleKeys: string[],
  name = "member",
): Promise<{ id: string; email: string; client: Client }> {
  const roles = (await org.owner.json<{ data: { id: string; key: string }[] }>("GET", "/api/roles")).data;
  const email = `${name}-${randomBytes(3).toString("hex")}-${org.marker.toLowerCase()}@example.org`;
  const created = await org.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/users",
    {
      email,
      displayName: `${name} ${org.marker}`,
      password: PASSWORD,
      roleIds: roles.filter((r) => roleKeys.includes(r.key)).map((r) => r.id),
    },
    201,
  );
  return { id: created.data.id, email, client: await signIn(org.owner.srv, email) };
}
