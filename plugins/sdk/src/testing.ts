// The test kit: runs a plugin's setup with a context like the host's and gives its tools, connection test and
// webhook handler to a test. The connection's HTTP client is plain fetch to the base URL the test gives (a local
// server speaking the remote product's API); the host's gateway, credentials store and bus are not involved, so
// this tests the plugin's own logic and its use of the remote API. The host's side is tested in core.
import {
  parseBody,
  parseManifest,
  type Connection,
  type DeliveryScope,
  type PluginDefinition,
  type PluginHttpRequest,
  type PluginHttpResponse,
  type PluginTool,
  type TestReport,
  type WebhookAck,
  type WebhookDelivery,
} from "./index.js";

/** What the kit's connection is. */
export interface TestConnectionOptions {
  baseUrl: string;
  settings?: Record<string, unknown>;
  /** Headers every call carries (what the host would add for the credentials). */
  headers?: Record<string, string>;
  name?: string;
}

/** What processing a delivery did. */
export interface DeliveryOutcome {
  ack: WebhookAck | undefined;
  records: { type: string; summary: string; payload: unknown }[];
  published: { event: string; payload: unknown }[];
  asked: { email: string; question: string }[];
}

/** A plugin loaded for a test. */
export interface TestPlugin {
  tools: Map<string, PluginTool>;
  /** Runs a tool as a caller of a test organization; the input is validated by the tool's schema first. */
  call(name: string, input: unknown): Promise<unknown>;
  /** The connection test (the plugin's, else a GET of the base URL). */
  test(): Promise<TestReport>;
  /** Hands a delivery to the webhook handler, as the host does after verifying it. */
  deliver(
    payload: unknown,
    opts?: { event?: string; contentType?: string; headers?: Record<string, string> },
  ): Promise<DeliveryOutcome>;
}

/** fetch through the kit's connection: relative URLs against the base URL, JSON in and out. */
async function call(conn: TestConnectionOptions, req: PluginHttpRequest): Promise<PluginHttpResponse> {
  const url = /^https?:\/\//i.test(req.url)
    ? req.url
    : `${conn.baseUrl.replace(/\/+$/, "")}/${req.url.replace(/^\/+/, "")}`;
  const json = req.body !== undefined && typeof req.body !== "string";
  const res = await fetch(url, {
    method: req.method,
    headers: {
      accept: "application/json",
      ...(json ? { "content-type": "application/json" } : {}),
      ...(req.anonymous ? {} : (conn.headers ?? {})),
      ...(req.headers ?? {}),
      ...(req.idempotencyKey ? { "idempotency-key": req.idempotencyKey } : {}),
    },
    body: req.body === undefined ? undefined : json ? JSON.stringify(req.body) : (req.body as string),
    signal: AbortSignal.timeout(req.timeoutMs ?? 15_000),
  });
  const text = await res.text();
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => (headers[k] = v));
  return {
    status: res.status,
    headers,
    body: /json/i.test(headers["content-type"] ?? "") && text ? (JSON.parse(text) as unknown) : text,
  };
}

/**
 * Loads a plugin for a test: validates its manifest, runs setup, and wires one connection.
 * `ask` answers the assistant questions the plugin asks (default: echoes them).
 */
export async function loadPluginForTest(
  definition: PluginDefinition,
  manifestJson: unknown,
  connection: TestConnectionOptions,
  ask: (email: string, question: string) => Promise<string> = async (_e, q) => `answer to: ${q}`,
): Promise<TestPlugin> {
  const parsed = parseManifest(manifestJson);
  if (!parsed.ok) throw new Error(`plugin.json: ${parsed.problems.join("; ")}`);
  const manifest = parsed.manifest;
  if (definition.id !== manifest.id)
    throw new Error(`the code's id ${definition.id} is not the manifest's ${manifest.id}`);
  const settings = definition.connection.settings.parse(connection.settings ?? {}) as Record<string, unknown>;
  const conn: Connection = {
    id: "00000000-0000-4000-8000-000000000001",
    orgId: "00000000-0000-4000-8000-000000000002",
    name: connection.name ?? "test",
    baseUrl: connection.baseUrl,
    settings,
    http: (req) => call(connection, req),
  };
  const tools = new Map<string, PluginTool>();
  let check: ((c: Connection) => Promise<TestReport>) | undefined;
  let hooks:
    | {
        handle: (d: WebhookDelivery, s: DeliveryScope) => Promise<void>;
        ack?: (d: WebhookDelivery) => WebhookAck;
      }
    | undefined;
  const silent = () => undefined;
  await definition.setup({
    manifest,
    log: { debug: silent, info: silent, warn: silent, error: silent },
    tool: (t) => {
      if (!t.name.startsWith(`${manifest.id}.`))
        throw new Error(`tool ${t.name} must start with ${manifest.id}.`);
      if (!(t.permission in manifest.permissions))
        throw new Error(`tool ${t.name}: permission not in plugin.json`);
      tools.set(t.name, t as unknown as PluginTool);
    },
    test: (c) => (check = c),
    webhooks: (handle, ack) => (hooks = { handle, ack }),
  });
  let n = 0;
  return {
    tools,
    async call(name, input) {
      const tool = tools.get(name);
      if (!tool) throw new Error(`no tool ${name}`);
      return tool.run(
        { orgId: conn.orgId, userId: "00000000-0000-4000-8000-000000000003", connection: async () => conn },
        tool.input.parse(input),
      );
    },
    async test() {
      if (check) return check(conn);
      const res = await conn.http({ method: "GET", url: conn.baseUrl });
      const ok = res.status < 500 && res.status !== 401 && res.status !== 403;
      return { ok, checks: [{ name: "reach", ok, detail: `GET ${conn.baseUrl} answered ${res.status}` }] };
    },
    async deliver(payload, opts = {}) {
      if (!hooks) throw new Error("the plugin takes no webhooks");
      const contentType = opts.contentType ?? "application/json";
      const raw = typeof payload === "string" ? payload : JSON.stringify(payload);
      const delivery: WebhookDelivery = {
        id: `delivery-${++n}`,
        event: opts.event ?? "message",
        headers: { "content-type": contentType, ...(opts.headers ?? {}) },
        payload: parseBody(contentType, raw),
      };
      const out: DeliveryOutcome = { ack: hooks.ack?.(delivery), records: [], published: [], asked: [] };
      await hooks.handle(delivery, {
        connection: conn,
        publish: async (event, p) => void out.published.push({ event, payload: p }),
        record: async (type, summary, p) => void out.records.push({ type, summary, payload: p }),
        ask: async (email, question) => {
          out.asked.push({ email, question });
          return ask(email, question);
        },
      });
      return out;
    },
  };
}
