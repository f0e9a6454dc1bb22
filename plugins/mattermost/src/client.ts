// Plain adapter over the Mattermost REST API v4 and the Slack-compatible incoming-webhook format
// (https://developers.mattermost.com/integrate/webhooks/incoming/): what the plugin sends and reads.
import type { Connection } from "@worksynapse/plugin-sdk";

/** A message in the Slack-compatible webhook format both products accept. */
export interface OutgoingMessage {
  text: string;
  channel?: string;
  username?: string;
  response_type?: "ephemeral" | "in_channel";
}

/** Posts through the connection's incoming webhook (a path on its server). */
export async function postToWebhook(conn: Connection, path: string, msg: OutgoingMessage) {
  const res = await conn.http({ method: "POST", url: path, body: msg, anonymous: true });
  if (res.status >= 400) throw new Error(`the chat server refused the message (${res.status})`);
  return res.status;
}

/** Answers a slash command through its response URL (on the chat server itself). */
export async function respond(conn: Connection, responseUrl: string, msg: OutgoingMessage) {
  const res = await conn.http({ method: "POST", url: responseUrl, body: msg, anonymous: true });
  if (res.status >= 400) throw new Error(`the chat server refused the answer (${res.status})`);
}

/** The account the connection's token belongs to (REST API v4). */
export async function me(conn: Connection): Promise<{ status: number; username?: string }> {
  const res = await conn.http({ method: "GET", url: "/api/v4/users/me" });
  const body = res.body as { username?: string } | string;
  return { status: res.status, username: typeof body === "object" ? body.username : undefined };
}
