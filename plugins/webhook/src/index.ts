// The generic webhook / HTTP plugin: any system on the site can send events (signed with the connection's
// secret, HMAC over timestamp and body), and the assistant or a workflow can send a request to it.
import { definePlugin } from "@worksynapse/plugin-sdk";
import { z } from "zod";

const settings = z.object({
  /** Path requests are sent to when a call names none. */
  sendPath: z.string().max(500).default("/"),
  /** Field of an inbound JSON body that names its event type (default: the X-Webhook-Event header). */
  eventField: z.string().max(100).optional(),
});

/** A one-line summary of an inbound event for the event log. */
function summarize(event: string, payload: unknown): string {
  if (payload && typeof payload === "object") {
    const p = payload as Record<string, unknown>;
    for (const k of ["summary", "title", "message", "text", "name"])
      if (typeof p[k] === "string") return `${event}: ${p[k] as string}`.slice(0, 300);
  }
  return event;
}

export default definePlugin({
  id: "webhook",
  connection: {
    auth: ["none", "token", "basic", "oauth2", "client_credentials"],
    settings,
    webhook: { kind: "hmac" },
  },
  setup(ctx) {
    ctx.tool({
      name: "webhook.send",
      description:
        "Send a JSON request to a system connected through a webhook connection (changes that system: asks for approval).",
      permission: "webhook.send",
      effect: "external",
      input: z.strictObject({
        connection: z.string().max(100).optional().describe("Connection name; omit when there is one"),
        path: z.string().max(500).optional().describe("Path on the connection's base URL"),
        method: z.enum(["POST", "PUT", "PATCH"]).default("POST"),
        body: z.record(z.string(), z.unknown()).default({}),
      }),
      async run(caller, input) {
        const conn = await caller.connection(input.connection);
        const s = settings.parse(conn.settings);
        const res = await conn.http({
          method: input.method,
          url: input.path ?? s.sendPath,
          body: input.body,
        });
        const text = typeof res.body === "string" ? res.body : JSON.stringify(res.body);
        return { status: res.status, ok: res.status < 400, body: text.slice(0, 2000) };
      },
    });
    ctx.webhooks(async (delivery, scope) => {
      const s = settings.parse(scope.connection.settings);
      const p = delivery.payload as Record<string, unknown> | null;
      const event =
        s.eventField && p && typeof p[s.eventField] === "string"
          ? (p[s.eventField] as string)
          : delivery.event;
      await scope.record(event, summarize(event, delivery.payload), delivery.payload);
      await scope.publish("received", { event, deliveryId: delivery.id, payload: delivery.payload });
    });
  },
});
