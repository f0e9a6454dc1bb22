// Mattermost and Slack-compatible chat: messages out through an incoming webhook, outgoing webhooks and slash
// commands in (verified with the token the chat server generated), and slash commands answered by the assistant
// as the person who typed them.
import { definePlugin } from "@worksynapse/plugin-sdk";
import { z } from "zod";
import { me, postToWebhook, respond } from "./client.js";

const settings = z.object({
  /** The incoming webhook's path on the chat server, e.g. /hooks/xxx-generatedkey-xxx. */
  incomingWebhookPath: z.string().max(500).optional(),
  defaultChannel: z.string().max(100).optional(),
  /** Slash commands ask as <user_name>@<userDomain> (the person who typed them)... */
  userDomain: z.string().max(200).optional(),
  /** ...or, without a domain, as this one account (its permissions apply to everyone's questions). */
  askAs: z.email().optional(),
});
type Settings = z.infer<typeof settings>;

/** A slash command or outgoing webhook as Mattermost (and Slack) send it, as form fields or JSON. */
const inbound = z
  .object({
    command: z.string().optional(),
    text: z.string().default(""),
    user_name: z.string().optional(),
    channel_name: z.string().optional(),
    response_url: z.string().optional(),
    trigger_word: z.string().optional(),
  })
  .loose();

/** Who a slash command is answered as. */
function askerOf(s: Settings, userName?: string): string | null {
  if (s.userDomain && userName && /^[a-z0-9._-]+$/i.test(userName)) return `${userName}@${s.userDomain}`;
  return s.askAs ?? null;
}

export default definePlugin({
  id: "mattermost",
  connection: {
    auth: ["none", "token"],
    settings,
    webhook: { kind: "mattermost" },
  },
  setup(ctx) {
    ctx.tool({
      name: "mattermost.post_message",
      description: "Post a message to a Mattermost or Slack-compatible channel (asks for approval first).",
      permission: "mattermost.post",
      effect: "external",
      input: z.strictObject({
        text: z.string().min(1).max(4000),
        channel: z
          .string()
          .max(100)
          .optional()
          .describe("Channel name; the connection's default when omitted"),
        connection: z.string().max(100).optional(),
      }),
      async run(caller, input) {
        const conn = await caller.connection(input.connection);
        const s = settings.parse(conn.settings);
        if (!s.incomingWebhookPath) throw new Error("the connection has no incoming webhook configured");
        await postToWebhook(conn, s.incomingWebhookPath, {
          text: input.text,
          channel: input.channel ?? s.defaultChannel,
        });
        return { posted: true, channel: input.channel ?? s.defaultChannel ?? null };
      },
    });

    ctx.test(async (conn) => {
      const s = settings.parse(conn.settings);
      const checks: { name: string; ok: boolean; detail: string }[] = [];
      const who = await me(conn);
      checks.push({
        name: "api",
        ok: who.status === 200,
        detail:
          who.status === 200
            ? `signed in to the REST API as ${who.username ?? "?"}`
            : `GET /api/v4/users/me answered ${who.status} (a token is needed for the REST API)`,
      });
      checks.push({
        name: "incoming webhook",
        ok: !!s.incomingWebhookPath,
        detail: s.incomingWebhookPath
          ? `posts go to ${s.incomingWebhookPath}`
          : "no incoming webhook path set",
      });
      checks.push({
        name: "slash commands",
        ok: !!(s.userDomain || s.askAs),
        detail: s.userDomain
          ? `answered as <user>@${s.userDomain}`
          : s.askAs
            ? `answered as ${s.askAs}`
            : "set a user domain or an account to answer slash commands",
      });
      return { ok: checks.every((c) => c.ok || c.name === "api"), checks };
    });

    ctx.webhooks(
      async (delivery, scope) => {
        const m = inbound.parse(typeof delivery.payload === "object" ? delivery.payload : {});
        const s = settings.parse(scope.connection.settings);
        if (m.command) {
          const asker = askerOf(s, m.user_name);
          const question = m.text.trim();
          await scope.record(
            "slash_command",
            `${m.user_name ?? "?"}: ${m.command} ${question}`.slice(0, 300),
            {
              command: m.command,
              user: m.user_name,
              channel: m.channel_name,
            },
          );
          const answer = !question
            ? `Ask a question after ${m.command}.`
            : asker
              ? await scope.ask(asker, question)
              : "This chat server is not set up to ask the assistant (no user domain or account).";
          if (m.response_url)
            await respond(scope.connection, m.response_url, { response_type: "in_channel", text: answer });
          return;
        }
        await scope.record(
          "message",
          `${m.user_name ?? "?"} in ${m.channel_name ?? "?"}: ${m.text}`.slice(0, 300),
          {
            user: m.user_name,
            channel: m.channel_name,
            text: m.text,
            triggerWord: m.trigger_word,
          },
        );
        await scope.publish("message", { user: m.user_name, channel: m.channel_name, text: m.text });
      },
      (delivery) => {
        const m = inbound.safeParse(typeof delivery.payload === "object" ? delivery.payload : {});
        // A slash command shows this at once; the answer follows through the response URL.
        if (m.success && m.data.command)
          return { status: 200, body: { response_type: "ephemeral", text: "Asking the assistant…" } };
        return { status: 200, body: {} };
      },
    );
  },
});
