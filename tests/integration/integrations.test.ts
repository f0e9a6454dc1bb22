// The plugin host and integration gateway against real servers on loopback: the shipped plugins (webhook,
// mattermost) loaded from plugins/, a local HTTP server standing in for the remote system (it signs webhooks,
// answers 429 with Retry-After and 503 bursts, and redirects), and a real OAuth 2.0 authorization server
// (oidc-provider) for the authorization code + PKCE + refresh flow. The Mattermost side is a local server that
// speaks the documented incoming-webhook and slash-command formats (no Mattermost package runs here).
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import Provider from "oidc-provider";
import { getTestServer, type TestServer } from "../support/server.js";
import { createMember, createTestOrg, type Client, type TestOrg } from "../support/identity.js";
import { signGeneric } from "../../core/src/platform/gateway/webhooks.js";
import { PluginHost } from "../../core/src/plugin-host/host.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";
import { silentLogger } from "../../core/src/platform/log.js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { ScriptedEngine } from "../support/scripted-engine.js";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { importModel } from "../../core/src/modules/ai/models.service.js";

type Data<T> = { data: T };
interface Conn {
  id: string;
  webhookUrl: string;
  auth: { authorized: boolean | null; secretSet: boolean };
  health: { failures: number; pausedUntil: string | null };
}

/** A remote system: records requests and answers from a script. */
function remote() {
  const seen: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
  let script:
    | ((
        req: http.IncomingMessage,
        body: string,
      ) => { status: number; headers?: Record<string, string>; body?: string })
    | null = null;
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const r = script?.(req, body) ?? { status: 200, body: "{}" };
      res.writeHead(r.status, { "content-type": "application/json", ...(r.headers ?? {}) });
      res.end(r.body ?? "{}");
    });
  });
  return {
    seen,
    server,
    set: (s: typeof script) => (script = s),
    async start() {
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    },
  };
}

let srv: TestServer;
let org: TestOrg;
let member: { id: string; email: string; client: Client };
const site = remote();
let siteUrl: string;

const until = async (check: () => Promise<boolean>, ms = 20_000) => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("timed out waiting");
};

const hook = (url: string, body: string, headers: Record<string, string>) =>
  srv.fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });

// Slash commands ask the real agent loop; a scripted engine stands in for the model's decisions.
const engine = new ScriptedEngine();

beforeAll(async () => {
  srv = await getTestServer({
    assistantEngine: engine,
    env: { WORKSYNAPSE_INTEGRATIONS_ALLOW_LOOPBACK: "true", WORKSYNAPSE_AI_THREADS: "1" },
  });
  const tiny = path.join(mkdtempSync(path.join(tmpdir(), "ws-int-")), "tiny.gguf");
  makeTinyModel(tiny);
  await importModel(srv.db.knex, await srv.ai!.llama(), srv.config, {
    file: tiny,
    name: "tiny",
    role: "chat",
  });
  org = await createTestOrg(srv, "integrations", { plan: "professional" });
  member = await createMember(org, ["member"]);
  siteUrl = await site.start();
}, 60_000);

afterAll(async () => {
  site.server.close();
  await srv?.close();
});

describe("plugins", () => {
  it("lists the shipped plugins, running, to administrators only; enabling is per organization", async () => {
    const r = await member.client.request("GET", "/api/integrations/plugins");
    expect(r.status).toBe(403);
    const list = (
      await org.owner.json<Data<{ id: string; status: string; enabled: boolean; settingsSchema: unknown }[]>>(
        "GET",
        "/api/integrations/plugins",
      )
    ).data;
    const ids = list.map((p) => p.id);
    expect(ids).toEqual(expect.arrayContaining(["webhook", "mattermost"]));
    expect(list.every((p) => p.status === "running" && !p.enabled && p.settingsSchema)).toBe(true);
    // A connection of a plugin the organization has not enabled is refused.
    const refused = await org.owner.request("POST", "/api/integrations/connections", {
      plugin: "webhook",
      name: "site",
      baseUrl: siteUrl,
      auth: { kind: "none" },
    });
    expect(refused.status).toBe(409);
    await org.owner.json("PUT", "/api/integrations/plugins/webhook", { enabled: true });
    await org.owner.json("PUT", "/api/integrations/plugins/mattermost", { enabled: true });
    expect((await org.owner.request("PUT", "/api/integrations/plugins/nope", { enabled: true })).status).toBe(
      404,
    );
  });

  it("a plugin whose setup throws, or whose manifest is invalid, is disabled and reported; the others start", async () => {
    const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/plugins");
    const host = await PluginHost.load(dir, silentLogger());
    const byId = Object.fromEntries(host.list().map((p) => [p.id, p]));
    expect(byId.thrower?.status).toBe("failed");
    expect(byId.thrower?.error).toMatch(/setup failed: boom/);
    expect(byId.badmanifest?.status).toBe("invalid");
    expect(byId.fine?.status).toBe("running");
    expect(host.running().map((p) => p.id)).toEqual(["fine"]);
  });
});

describe("connections and webhooks", () => {
  let conn: Conn;
  let secret: string;

  it("creates a connection; its secrets are never returned", async () => {
    const r = await org.owner.json<Data<{ connection: Conn; webhookSecret: string }>>(
      "POST",
      "/api/integrations/connections",
      { plugin: "webhook", name: "site", baseUrl: siteUrl, auth: { kind: "token", token: "tok-SECRET-123" } },
      201,
    );
    conn = r.data.connection;
    secret = r.data.webhookSecret;
    expect(secret).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const again = await org.owner.request("GET", `/api/integrations/connections/${conn.id}`);
    const text = await again.text();
    expect(text).not.toContain("tok-SECRET-123");
    expect(text).not.toContain(secret);
    expect(JSON.parse(text).data.auth.secretSet).toBe(true);
    // The token is sealed in the database too.
    const raw = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("integration_connections").where({ id: conn.id }).first("credentials", "webhook_secret"),
    );
    expect(raw.credentials).not.toContain("tok-SECRET-123");
    expect(raw.webhook_secret).not.toContain(secret);
    // Bad input: clear 400s.
    const bad = await org.owner.request("POST", "/api/integrations/connections", {
      plugin: "webhook",
      name: "x",
      baseUrl: "ftp://files",
      auth: { kind: "none" },
    });
    expect(bad.status).toBe(400);
    const dup = await org.owner.request("POST", "/api/integrations/connections", {
      plugin: "webhook",
      name: "SITE",
      baseUrl: siteUrl,
      auth: { kind: "none" },
    });
    expect(dup.status).toBe(409);
  });

  it("verifies signed deliveries: good is stored and processed once; bad, missing, stale and replayed are not", async () => {
    const body = JSON.stringify({ summary: "deploy finished", build: 41 });
    const signed = { ...signGeneric(secret, body), "x-webhook-event": "deploy" };
    const good = await hook(conn.webhookUrl, body, signed);
    expect(good.status).toBe(202);
    const id = ((await good.json()) as Data<{ id: string }>).data.id;
    // The same signed request again (a replay): acknowledged, not stored or processed again.
    const replay = await hook(conn.webhookUrl, body, signed);
    expect(replay.status).toBe(200);
    expect(await replay.json()).toEqual({ data: { duplicate: true } });
    const wrong = await hook(conn.webhookUrl, body, signGeneric("not-the-secret", body));
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: { code: string } }).error.code).toBe("webhook_bad_signature");
    const stale = await hook(conn.webhookUrl, body, signGeneric(secret, body, Date.now() - 10 * 60_000));
    expect(((await stale.json()) as { error: { code: string } }).error.code).toBe("webhook_stale");
    const missing = await hook(conn.webhookUrl, body, {});
    expect(missing.status).toBe(401);
    expect((await hook("/api/hooks/00000000-0000-0000-0000-000000000000", body, {})).status).toBe(404);
    expect((await hook("/api/hooks/not-a-uuid", body, {})).status).toBe(404);

    await until(async () => {
      const d = await org.owner.json<Data<{ status: string }>>(
        "GET",
        `/api/integrations/connections/${conn.id}/deliveries/${id}`,
      );
      return d.data.status === "processed";
    });
    const detail = (
      await org.owner.json<
        Data<{ payload: { summary: string }; events: { summary: string }[]; headers: Record<string, string> }>
      >("GET", `/api/integrations/connections/${conn.id}/deliveries/${id}`)
    ).data;
    expect(detail.payload.summary).toBe("deploy finished");
    expect(detail.events).toEqual([{ type: "deploy", summary: "deploy: deploy finished" }]);
    expect(Object.keys(detail.headers)).not.toContain("x-webhook-signature");
    const list = (
      await org.owner.json<Data<unknown[]>>("GET", `/api/integrations/connections/${conn.id}/deliveries`)
    ).data;
    expect(list).toHaveLength(1);

    // "Process again" runs it once more, on purpose.
    await org.owner.json(
      "POST",
      `/api/integrations/connections/${conn.id}/deliveries/${id}/redeliver`,
      undefined,
      202,
    );
    await until(async () => {
      const ev = (
        await org.owner.json<Data<unknown[]>>("GET", `/api/integrations/connections/${conn.id}/events`)
      ).data;
      return ev.length === 2;
    });
  });

  it("another organization's connection is not found", async () => {
    const other = await createTestOrg(srv, "integrations-other");
    expect((await other.owner.request("GET", `/api/integrations/connections/${conn.id}`)).status).toBe(404);
    for (const p of ["deliveries", "events"])
      expect((await other.owner.request("GET", `/api/integrations/connections/${conn.id}/${p}`)).status).toBe(
        404,
      );
    expect((await other.owner.request("POST", `/api/integrations/connections/${conn.id}/test`)).status).toBe(
      404,
    );
    // Nor one of its deliveries.
    const hook = await other.owner.request(
      "GET",
      `/api/integrations/connections/${conn.id}/deliveries/${conn.id}`,
    );
    expect(hook.status).toBe(404);
  });

  it("outbound: retries 429 (Retry-After) and 503 bursts, then succeeds; credentials go in the header", async () => {
    let n = 0;
    site.set(() => {
      n += 1;
      if (n === 1) return { status: 429, headers: { "retry-after": "1" } };
      if (n <= 3) return { status: 503 };
      return { status: 200, body: '{"ok":true}' };
    });
    const before = site.seen.length;
    const t0 = Date.now();
    const report = (
      await org.owner.json<Data<{ ok: boolean; checks: { detail: string }[] }>>(
        "POST",
        `/api/integrations/connections/${conn.id}/test`,
      )
    ).data;
    expect(report.ok).toBe(true);
    expect(site.seen.length - before).toBe(4);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(site.seen.at(-1)?.headers.authorization).toBe("Bearer tok-SECRET-123");
    site.set(null);
  });

  it("outbound: a host the connection may not reach, or a redirect to one, is refused before connecting", async () => {
    const { tools } = srv;
    const caller = await withOrg(srv.db.knex, org.orgId, async (trx) => {
      const { callerOfUser } = await import("../../core/src/modules/identity/auth.js");
      return callerOfUser(trx, org.orgId, org.ownerEmail);
    });
    if (!tools || !caller) throw new Error("no tools");
    const direct = await tools.invoke(
      srv.db.knex,
      caller,
      "webhook.send",
      { path: "http://10.9.8.7/steal", body: { a: 1 } },
      { approved: true },
    );
    expect(direct).toMatchObject({ status: "error" });
    expect((direct as { error: string }).error).toMatch(/10\.9\.8\.7 is not a host/);
    site.set(() => ({ status: 302, headers: { location: "http://metadata.internal.example/latest" } }));
    const before = site.seen.length;
    const redirected = await tools.invoke(
      srv.db.knex,
      caller,
      "webhook.send",
      { path: "/go", body: {} },
      { approved: true },
    );
    expect((redirected as { error: string }).error).toMatch(/metadata\.internal\.example is not a host/);
    expect(site.seen.length - before).toBe(1);
    // The plugin's own call, allowed: reaches the site with the connection's token.
    site.set(null);
    const ok = await tools.invoke(
      srv.db.knex,
      caller,
      "webhook.send",
      { path: "/events", body: { hello: "world" } },
      { approved: true },
    );
    expect(ok).toMatchObject({ status: "ok", output: { status: 200 } });
    expect(site.seen.at(-1)).toMatchObject({ method: "POST", url: "/events", body: '{"hello":"world"}' });
    // An external tool needs approval first.
    const unapproved = await tools.invoke(srv.db.knex, caller, "webhook.send", { path: "/events", body: {} });
    expect(unapproved.status).toBe("approval_required");
  });

  it("deliveries arriving together are processed as a group, each once; one that cannot be stored fails alone", async () => {
    await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("webhook_deliveries").where({ connection_id: conn.id }).delete(),
    );
    await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("integration_events").where({ connection_id: conn.id }).delete(),
    );
    // 30 at once: the receiver writes them in a few groups (one queue job each); number 7's payload holds a
    // NUL character (escaped in the JSON), which the event log's jsonb cannot keep.
    const sent = await Promise.all(
      Array.from({ length: 30 }, (_, i) => {
        const body =
          i === 7 ? `{"summary":"bad\\u0000byte","n":${i}}` : JSON.stringify({ summary: `build ${i}`, n: i });
        return hook(conn.webhookUrl, body, { ...signGeneric(secret, body), "x-webhook-event": "build" });
      }),
    );
    expect(sent.map((r) => r.status)).toEqual(Array(30).fill(202));
    const deliveries = () =>
      withOrg(srv.db.knex, org.orgId, (trx) =>
        trx("webhook_deliveries")
          .where({ connection_id: conn.id })
          .select("body", "status", "error", "attempts"),
      );
    await until(async () => (await deliveries()).every((d) => d.status !== "queued"));
    const rows = await deliveries();
    expect(rows).toHaveLength(30);
    const bad = rows.filter((d) => d.status !== "processed");
    expect(bad).toHaveLength(1);
    expect(bad[0]).toMatchObject({ status: "failed", body: expect.stringContaining("bad") });
    expect(bad[0]?.error).toMatch(/unicode|\\u0000/i);
    expect(rows.filter((d) => d.status === "processed").every((d) => d.attempts === 1)).toBe(true);
    // Each processed delivery has its one event (none twice, none for the failed one).
    const events = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("integration_events").where({ connection_id: conn.id }).select("summary"),
    );
    expect(events).toHaveLength(29);
    expect(new Set(events.map((e) => e.summary)).size).toBe(29);
    // The receiver grouped them: fewer queue jobs than deliveries.
    const jobs = (
      await srv.db.knex("outbox").where("subject", "like", "%.jobs.integration-webhooks").select("payload")
    )
      .map((r) => (r.payload as { deliveryIds: string[] }).deliveryIds)
      .filter((ids) => ids.length > 1);
    expect(jobs.length).toBeGreaterThan(0);
  });

  it("processed deliveries and events past the retention are removed; queued and failed ones stay", async () => {
    const { pruneDeliveries } = await import("../../core/src/modules/integrations/integrations.ingest.js");
    const old = new Date(Date.now() - 40 * 86_400_000);
    const ids = await withOrg(srv.db.knex, org.orgId, async (trx) => {
      const rows = (await trx("webhook_deliveries")
        .insert(
          ["processed", "failed", "queued"].map((status, i) => ({
            org_id: org.orgId,
            connection_id: conn.id,
            delivery_key: `old-${i}`,
            event: "old",
            headers: "{}",
            content_type: "application/json",
            body: "{}",
            status,
            received_at: old,
          })),
        )
        .returning(["id", "status"])) as { id: string; status: string }[];
      return rows;
    });
    expect(await pruneDeliveries(srv.db.knex, 30)).toBeGreaterThanOrEqual(1);
    const left = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("webhook_deliveries")
        .whereIn(
          "id",
          ids.map((r) => r.id),
        )
        .pluck("status"),
    );
    expect(left.sort()).toEqual(["failed", "queued"]);
    // Recent deliveries are kept.
    expect(
      (await org.owner.json<Data<unknown[]>>("GET", `/api/integrations/connections/${conn.id}/deliveries`))
        .data.length,
    ).toBeGreaterThanOrEqual(1);
  });

  it("the plan's integrations limit is enforced", async () => {
    const small = await createTestOrg(srv, "integrations-small");
    await small.owner.json("PUT", "/api/integrations/plugins/webhook", { enabled: true });
    for (const name of ["a", "b"])
      await small.owner.json(
        "POST",
        "/api/integrations/connections",
        { plugin: "webhook", name, baseUrl: siteUrl, auth: { kind: "none" } },
        201,
      );
    const third = await small.owner.request("POST", "/api/integrations/connections", {
      plugin: "webhook",
      name: "c",
      baseUrl: siteUrl,
      auth: { kind: "none" },
    });
    expect(third.status).toBe(403);
    expect(((await third.json()) as { error: { code: string } }).error.code).toBe("plan_limit");
  });
});

describe("mattermost", () => {
  it("slash commands are acknowledged at once; outgoing webhooks are recorded; posts go to the incoming webhook", async () => {
    const chat = remote();
    const chatUrl = await chat.start();
    try {
      const c = (
        await org.owner.json<Data<{ connection: Conn }>>(
          "POST",
          "/api/integrations/connections",
          {
            plugin: "mattermost",
            name: "chat",
            baseUrl: chatUrl,
            auth: { kind: "none" },
            settings: { incomingWebhookPath: "/hooks/abc123", defaultChannel: "town-square" },
            webhookSecret: "mm-generated-token-xyz",
          },
          201,
        )
      ).data.connection;
      // A slash command, as Mattermost sends it (form fields, Authorization: Token).
      const form = new URLSearchParams({
        token: "mm-generated-token-xyz",
        command: "/ask",
        text: "What is our VPN policy?",
        user_name: "alice",
        channel_name: "town-square",
        response_url: `${chatUrl}/hooks/commands/resp1`,
        trigger_id: "t1",
      }).toString();
      const ack = await srv.fetch(c.webhookUrl, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: "Token mm-generated-token-xyz",
        },
        body: form,
      });
      expect(ack.status).toBe(200);
      expect(await ack.json()).toEqual({ response_type: "ephemeral", text: "Asking the assistant…" });
      // Not set up to ask: the answer through the response URL says so.
      await until(async () => chat.seen.some((s) => s.url === "/hooks/commands/resp1"));
      expect(JSON.parse(chat.seen.find((s) => s.url === "/hooks/commands/resp1")?.body ?? "{}").text).toMatch(
        /not set up/,
      );
      const badToken = await srv.fetch(c.webhookUrl, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", authorization: "Token wrong" },
        body: form,
      });
      expect(badToken.status).toBe(401);
      // Set up to ask as <user>@<domain>: the answer comes from the assistant's loop, as that person.
      engine.script = () => ({ action: "answer", answer: "The VPN policy is in the handbook." });
      await org.owner.json("PATCH", `/api/integrations/connections/${c.id}`, {
        settings: {
          incomingWebhookPath: "/hooks/abc123",
          defaultChannel: "town-square",
          userDomain: org.ownerEmail.split("@")[1],
        },
      });
      const asked = new URLSearchParams({
        command: "/ask",
        text: "What is our VPN policy?",
        user_name: org.ownerEmail.split("@")[0] as string,
        channel_name: "town-square",
        response_url: `${chatUrl}/hooks/commands/resp2`,
        trigger_id: "t2",
      }).toString();
      const ack2 = await srv.fetch(c.webhookUrl, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: "Token mm-generated-token-xyz",
        },
        body: asked,
      });
      expect(ack2.status).toBe(200);
      await until(async () => chat.seen.some((s) => s.url === "/hooks/commands/resp2"));
      expect(JSON.parse(chat.seen.find((s) => s.url === "/hooks/commands/resp2")?.body ?? "{}")).toEqual({
        response_type: "in_channel",
        text: "The VPN policy is in the handbook.",
      });
      // The question and answer are in the person's assistant conversations, like any other run.
      const convs = await withOrg(srv.db.knex, org.orgId, (trx) =>
        trx("ai_conversations").where({ user_id: org.ownerId }).pluck("title"),
      );
      expect(convs).toContain("Mattermost / Slack-compatible chat: What is our VPN policy?");
      // An outgoing webhook (token in the JSON body).
      const out = await hook(
        c.webhookUrl,
        JSON.stringify({
          token: "mm-generated-token-xyz",
          text: "deploy now",
          user_name: "bob",
          channel_name: "ops",
          trigger_word: "deploy",
        }),
        {},
      );
      expect(out.status).toBe(200);
      await until(async () => {
        const ev = (
          await org.owner.json<Data<{ type: string }[]>>(
            "GET",
            `/api/integrations/connections/${c.id}/events`,
          )
        ).data;
        return ev.some((e) => e.type === "message");
      });
      // The AI tool posts through the incoming webhook.
      const caller = await withOrg(srv.db.knex, org.orgId, async (trx) => {
        const { callerOfUser } = await import("../../core/src/modules/identity/auth.js");
        return callerOfUser(trx, org.orgId, member.email);
      });
      const posted = await srv.tools?.invoke(
        srv.db.knex,
        caller!,
        "mattermost.post_message",
        { text: "Build 41 is green" },
        { approved: true },
      );
      expect(posted).toMatchObject({ status: "ok" });
      const post = chat.seen.find((s) => s.url === "/hooks/abc123");
      expect(JSON.parse(post?.body ?? "{}")).toEqual({ text: "Build 41 is green", channel: "town-square" });
    } finally {
      chat.server.close();
    }
  });
});

describe("OAuth 2.0 against a real authorization server", () => {
  it("authorization code with PKCE, then refresh with rotation, tokens sealed and never returned", async () => {
    // The OP's client must know WorkSynapse's callback before the OP starts.
    const opServer = http.createServer();
    await new Promise<void>((r) => opServer.listen(0, "127.0.0.1", () => r()));
    const issuer = `http://127.0.0.1:${(opServer.address() as AddressInfo).port}`;
    const provider = new Provider(issuer, {
      clients: [
        {
          client_id: "worksynapse",
          client_secret: "op-client-secret-0123456789",
          redirect_uris: [`${srv.url}/api/integrations/oauth/callback`],
          token_endpoint_auth_method: "client_secret_post",
          grant_types: ["authorization_code", "refresh_token"],
        },
      ],
      pkce: { required: () => true },
      issueRefreshToken: async () => true,
      rotateRefreshToken: true,
      ttl: {
        AccessToken: 3600,
        AuthorizationCode: 60,
        RefreshToken: 86400,
        Grant: 86400,
        Interaction: 600,
        Session: 600,
      },
      findAccount: async (_ctx: unknown, sub: string) => ({ accountId: sub, claims: async () => ({ sub }) }),
      cookies: { keys: ["test-cookie-key-0123456789"] },
    });
    opServer.on("request", provider.callback());
    try {
      const c = (
        await org.owner.json<Data<{ connection: Conn }>>(
          "POST",
          "/api/integrations/connections",
          {
            plugin: "webhook",
            name: "oauth-site",
            // The OP's userinfo endpoint stands for the remote API: it answers 200 only to a valid access token.
            baseUrl: `${issuer}/me`,
            auth: {
              kind: "oauth2",
              clientId: "worksynapse",
              clientSecret: "op-client-secret-0123456789",
              authorizeUrl: `${issuer}/auth`,
              tokenUrl: `${issuer}/token`,
              scopes: "openid",
            },
          },
          201,
        )
      ).data.connection;
      expect(c.auth.authorized).toBe(false);
      const { url } = (
        await org.owner.json<Data<{ url: string }>>(
          "POST",
          `/api/integrations/connections/${c.id}/oauth/start`,
        )
      ).data;
      const u = new URL(url);
      expect(u.searchParams.get("code_challenge_method")).toBe("S256");
      expect(u.searchParams.get("code_challenge")).toBeTruthy();
      // The administrator's browser: sign in and consent at the OP (its development forms), with cookies.
      const callback = await browse(url, `${srv.url}/api/integrations/oauth/callback`);
      const done = await srv.fetch(callback.replace(srv.url, ""), { redirect: "manual" });
      expect(done.status).toBe(302);
      expect(done.headers.get("location")).toContain(`connection=${c.id}&authorized=1`);
      // The state is used once.
      expect((await srv.fetch(callback.replace(srv.url, ""), { redirect: "manual" })).status).toBe(400);
      const authorized = (
        await org.owner.json<Data<Conn & { auth: { expiresAt: string } }>>(
          "GET",
          `/api/integrations/connections/${c.id}`,
        )
      ).data;
      expect(authorized.auth.authorized).toBe(true);
      const sealed1 = await withOrg(srv.db.knex, org.orgId, (trx) =>
        trx("integration_connections").where({ id: c.id }).first("credentials"),
      );
      // The access token works against the OP's userinfo endpoint, through the gateway (the test button).
      const test = async () =>
        (
          await org.owner.json<Data<{ ok: boolean; checks: { detail: string }[] }>>(
            "POST",
            `/api/integrations/connections/${c.id}/test`,
          )
        ).data;
      const first = await test();
      expect(first.ok).toBe(true);
      expect(first.checks[0]?.detail).toMatch(/answered 200/);
      // Expired: the next call refreshes first; the refresh token rotates (the sealed text changes).
      await withOrg(srv.db.knex, org.orgId, (trx) =>
        trx("integration_connections")
          .where({ id: c.id })
          .update({
            auth_info: trx.raw("jsonb_set(auth_info, '{expiresAt}', to_jsonb(?::text))", [
              new Date(Date.now() - 60_000).toISOString(),
            ]),
          }),
      );
      const second = await test();
      expect(second, JSON.stringify(second)).toMatchObject({ ok: true });
      const sealed2 = await withOrg(srv.db.knex, org.orgId, (trx) =>
        trx("integration_connections").where({ id: c.id }).first("credentials", "auth_info"),
      );
      expect(sealed2.credentials).not.toBe(sealed1.credentials);
      expect(Date.parse(sealed2.auth_info.expiresAt)).toBeGreaterThan(Date.now());
      const text = await (await org.owner.request("GET", `/api/integrations/connections/${c.id}`)).text();
      expect(text).not.toMatch(/op-client-secret|access_?token|refresh_?token/i);
    } finally {
      opServer.close();
    }
  });
});

/** Follows an authorization through the OP's development login and consent forms, until the redirect URI. */
async function browse(start: string, redirectUri: string): Promise<string> {
  const jar = new Map<string, string>();
  const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
  const keep = (r: Response) => {
    for (const c of r.headers.getSetCookie()) {
      const [kv] = c.split(";");
      const i = (kv ?? "").indexOf("=");
      jar.set((kv ?? "").slice(0, i), (kv ?? "").slice(i + 1));
    }
  };
  let url = start;
  let init: RequestInit = {};
  for (let i = 0; i < 20; i++) {
    if (url.startsWith(redirectUri)) return url;
    const r = await fetch(url, {
      ...init,
      redirect: "manual",
      headers: { ...(init.headers ?? {}), cookie: cookie() },
    });
    keep(r);
    const loc = r.headers.get("location");
    if (loc) {
      url = new URL(loc, url).href;
      init = {};
      continue;
    }
    const html = await r.text();
    const form = /<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
    if (!form) throw new Error(`no form at ${url}: ${html.slice(0, 300)}`);
    const fields = new URLSearchParams();
    for (const [tag] of (form[2] ?? "").matchAll(/<input[^>]*>/gi)) {
      const name = /name="([^"]+)"/.exec(tag)?.[1];
      if (name) fields.set(name, /value="([^"]*)"/.exec(tag)?.[1] ?? "");
    }
    if (fields.has("login")) fields.set("login", "alice");
    if (fields.has("password")) fields.set("password", "any");
    url = new URL(form[1] as string, url).href;
    init = {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: fields.toString(),
    };
  }
  throw new Error("the authorization did not finish");
}
