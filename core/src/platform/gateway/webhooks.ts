// Verification of inbound webhooks, per provider, over the raw bytes of the request body (a re-serialised JSON
// body would not match its signature). Comparisons take constant time. What a delivery is identified by is
// returned too, so the receiver can refuse a replay (same delivery id) besides a stale timestamp.
import { createHmac } from "node:crypto";
import { sameSecret } from "../crypto.js";

/** How a connection's webhooks prove they come from the remote side. */
export type WebhookScheme =
  /** GitHub and GitHub Enterprise Server: X-Hub-Signature-256 = "sha256=" + HMAC-SHA256(secret, body). */
  | { kind: "github"; secret: string }
  /** GitLab: X-Gitlab-Token carries the secret token as configured on the hook. */
  | { kind: "gitlab"; token: string }
  /** Jira Data Center and Azure DevOps Server service hooks: HTTP basic authentication. */
  | { kind: "basic"; username: string; password: string }
  /** A header that carries a shared secret as it is (Azure DevOps custom header, Jira with a secret header). */
  | { kind: "shared-secret"; header: string; secret: string }
  /**
   * Generic: X-Webhook-Timestamp (Unix seconds) and X-Webhook-Signature = "v1=" + HMAC-SHA256(secret,
   * timestamp + "." + body); the timestamp must be within `toleranceSeconds` (default 300) of now.
   */
  | { kind: "hmac"; secret: string; toleranceSeconds?: number }
  /**
   * Mattermost: slash commands send `Authorization: Token <token>`; outgoing webhooks put `token` in the JSON
   * or form body. The token is the one Mattermost generated for the command or hook.
   */
  | { kind: "mattermost"; token: string }
  /**
   * Slack and Slack-compatible servers: X-Slack-Signature = "v0=" + HMAC-SHA256(signing secret,
   * "v0:" + X-Slack-Request-Timestamp + ":" + body), the timestamp within `toleranceSeconds` (default 300).
   */
  | { kind: "slack"; secret: string; toleranceSeconds?: number };

/** What identifies a delivery, for replay protection. */
export interface Delivery {
  /** The provider's delivery id, when it sends one. */
  id: string | null;
  /** When the sender signed it (generic scheme), in ms. */
  signedAt: number | null;
}

/** Why a delivery was refused. */
export type WebhookRefusal = "missing_signature" | "bad_signature" | "stale";

type Headers = Record<string, string | string[] | undefined>;

const header = (h: Headers, name: string): string | undefined => {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
};

/** One constant-time comparison for the whole server (it hides lengths too). */
const same = sameSecret;

const hmacHex = (secret: string, data: Buffer | string) =>
  createHmac("sha256", secret).update(data).digest("hex");

/** The delivery id a provider sends, whatever the scheme. */
function deliveryId(h: Headers): string | null {
  for (const name of [
    "x-github-delivery",
    "x-gitlab-event-uuid",
    "x-atlassian-webhook-identifier",
    "x-webhook-id",
    "idempotency-key",
  ]) {
    const v = header(h, name);
    if (v) return v.slice(0, 200);
  }
  return null;
}

/** Checks one delivery against its connection's scheme. */
export function verifyWebhook(
  scheme: WebhookScheme,
  headers: Headers,
  rawBody: Buffer,
  now = Date.now(),
): { ok: true; delivery: Delivery } | { ok: false; reason: WebhookRefusal } {
  const id = deliveryId(headers);
  const accept = (signedAt: number | null = null) => ({ ok: true as const, delivery: { id, signedAt } });
  const refuse = (reason: WebhookRefusal) => ({ ok: false as const, reason });
  switch (scheme.kind) {
    case "github": {
      const sig = header(headers, "x-hub-signature-256");
      if (!sig) return refuse("missing_signature");
      return same(sig, `sha256=${hmacHex(scheme.secret, rawBody)}`) ? accept() : refuse("bad_signature");
    }
    case "gitlab": {
      const token = header(headers, "x-gitlab-token");
      if (!token) return refuse("missing_signature");
      return same(token, scheme.token) ? accept() : refuse("bad_signature");
    }
    case "basic": {
      const auth = header(headers, "authorization");
      if (!auth?.toLowerCase().startsWith("basic ")) return refuse("missing_signature");
      const expected = Buffer.from(`${scheme.username}:${scheme.password}`).toString("base64");
      return same(auth.slice(6).trim(), expected) ? accept() : refuse("bad_signature");
    }
    case "shared-secret": {
      const value = header(headers, scheme.header);
      if (!value) return refuse("missing_signature");
      return same(value, scheme.secret) ? accept() : refuse("bad_signature");
    }
    case "hmac": {
      const ts = header(headers, "x-webhook-timestamp");
      const sig = header(headers, "x-webhook-signature");
      if (!ts || !sig || !/^\d{1,12}$/.test(ts)) return refuse("missing_signature");
      const expected = `v1=${hmacHex(scheme.secret, Buffer.concat([Buffer.from(`${ts}.`), rawBody]))}`;
      // The signature is checked first: an attacker learns nothing about the window from a forged one.
      if (!sig.split(",").some((s) => same(s.trim(), expected))) return refuse("bad_signature");
      const signedAt = Number(ts) * 1000;
      if (Math.abs(now - signedAt) > (scheme.toleranceSeconds ?? 300) * 1000) return refuse("stale");
      return accept(signedAt);
    }
    case "mattermost": {
      const auth = header(headers, "authorization");
      const token = auth?.toLowerCase().startsWith("token ")
        ? auth.slice(6).trim()
        : bodyToken(headers, rawBody);
      if (!token) return refuse("missing_signature");
      return same(token, scheme.token) ? accept() : refuse("bad_signature");
    }
    case "slack": {
      const ts = header(headers, "x-slack-request-timestamp");
      const sig = header(headers, "x-slack-signature");
      if (!ts || !sig || !/^\d{1,12}$/.test(ts)) return refuse("missing_signature");
      const expected = `v0=${hmacHex(scheme.secret, Buffer.concat([Buffer.from(`v0:${ts}:`), rawBody]))}`;
      if (!same(sig.trim(), expected)) return refuse("bad_signature");
      const signedAt = Number(ts) * 1000;
      if (Math.abs(now - signedAt) > (scheme.toleranceSeconds ?? 300) * 1000) return refuse("stale");
      return accept(signedAt);
    }
  }
}

/** The `token` field of a JSON or form body (Mattermost outgoing webhooks). */
function bodyToken(headers: Headers, rawBody: Buffer): string | undefined {
  const type = header(headers, "content-type") ?? "";
  const text = rawBody.toString("utf8");
  if (/json/i.test(type)) {
    try {
      const v = (JSON.parse(text) as { token?: unknown }).token;
      return typeof v === "string" ? v : undefined;
    } catch {
      return undefined;
    }
  }
  if (/x-www-form-urlencoded/i.test(type)) return new URLSearchParams(text).get("token") ?? undefined;
  return undefined;
}

/** Signs a body the generic way (for senders on the site, and tests). */
export function signGeneric(secret: string, rawBody: Buffer | string, at = Date.now()) {
  const ts = String(Math.floor(at / 1000));
  return {
    "x-webhook-timestamp": ts,
    "x-webhook-signature": `v1=${hmacHex(secret, Buffer.concat([Buffer.from(`${ts}.`), Buffer.from(rawBody)]))}`,
  };
}
