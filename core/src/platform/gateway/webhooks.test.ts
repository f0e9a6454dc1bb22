// Webhook verification on real example payloads: GitHub's published examples (@octokit/webhooks-examples),
// signed as GitHub signs them (HMAC-SHA256 of the exact bytes sent), then altered, unsigned, replayed late.
import { createHmac } from "node:crypto";
import examples from "@octokit/webhooks-examples";
import { describe, expect, it } from "vitest";
import { signGeneric, verifyWebhook } from "./webhooks.js";

const push = (examples as unknown as { name: string; examples: unknown[] }[]).find((e) => e.name === "push")
  ?.examples[0];
const body = Buffer.from(JSON.stringify(push));
const SECRET = "it-is-a-secret-to-everybody";
const githubSig = (b: Buffer, secret = SECRET) =>
  `sha256=${createHmac("sha256", secret).update(b).digest("hex")}`;

describe("webhook verification", () => {
  it("accepts GitHub's push example signed with the hook's secret, and names the delivery", () => {
    expect(push).toBeDefined();
    const r = verifyWebhook(
      { kind: "github", secret: SECRET },
      { "x-hub-signature-256": githubSig(body), "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958" },
      body,
    );
    expect(r).toEqual({ ok: true, delivery: { id: "72d3162e-cc78-11e3-81ab-4c9367dc0958", signedAt: null } });
  });

  it("refuses a GitHub delivery altered by one byte, signed with another secret, or unsigned", () => {
    const altered = Buffer.from(body);
    altered[10] = altered[10] === 0x61 ? 0x62 : 0x61;
    const scheme = { kind: "github" as const, secret: SECRET };
    expect(verifyWebhook(scheme, { "x-hub-signature-256": githubSig(body) }, altered)).toEqual({
      ok: false,
      reason: "bad_signature",
    });
    expect(verifyWebhook(scheme, { "x-hub-signature-256": githubSig(body, "wrong") }, body)).toEqual({
      ok: false,
      reason: "bad_signature",
    });
    expect(verifyWebhook(scheme, {}, body)).toEqual({ ok: false, reason: "missing_signature" });
    // The body re-serialised (other spacing) does not match: verification is over the raw bytes.
    const reformatted = Buffer.from(JSON.stringify(push, null, 2));
    expect(verifyWebhook(scheme, { "x-hub-signature-256": githubSig(body) }, reformatted).ok).toBe(false);
  });

  it("checks GitLab's token, basic authentication and a shared-secret header", () => {
    expect(verifyWebhook({ kind: "gitlab", token: "glt" }, { "x-gitlab-token": "glt" }, body).ok).toBe(true);
    expect(verifyWebhook({ kind: "gitlab", token: "glt" }, { "x-gitlab-token": "nope" }, body).ok).toBe(
      false,
    );
    const basic = { kind: "basic" as const, username: "jira", password: "p@ss:word" };
    const auth = `Basic ${Buffer.from("jira:p@ss:word").toString("base64")}`;
    expect(verifyWebhook(basic, { authorization: auth }, body).ok).toBe(true);
    expect(verifyWebhook(basic, { authorization: "Basic amlyYTp3cm9uZw==" }, body).ok).toBe(false);
    const shared = { kind: "shared-secret" as const, header: "X-Azure-Secret", secret: "s3" };
    expect(verifyWebhook(shared, { "x-azure-secret": "s3" }, body).ok).toBe(true);
    expect(verifyWebhook(shared, { "x-azure-secret": "s4" }, body).ok).toBe(false);
  });

  it("the generic scheme: signed with a timestamp, refused when stale or when the timestamp was changed", () => {
    const scheme = { kind: "hmac" as const, secret: SECRET, toleranceSeconds: 300 };
    const now = Date.now();
    const headers = signGeneric(SECRET, body, now);
    const ok = verifyWebhook(scheme, { ...headers, "x-webhook-id": "d-1" }, body, now + 10_000);
    expect(ok).toEqual({ ok: true, delivery: { id: "d-1", signedAt: Math.floor(now / 1000) * 1000 } });
    // Replayed ten minutes later: stale.
    expect(verifyWebhook(scheme, headers, body, now + 600_000)).toEqual({ ok: false, reason: "stale" });
    // A fresh timestamp on the old signature: the signature covers the timestamp.
    const moved = { ...headers, "x-webhook-timestamp": String(Math.floor(now / 1000) + 600) };
    expect(verifyWebhook(scheme, moved, body, now + 600_000)).toEqual({ ok: false, reason: "bad_signature" });
    expect(verifyWebhook(scheme, { "x-webhook-signature": headers["x-webhook-signature"] }, body)).toEqual({
      ok: false,
      reason: "missing_signature",
    });
  });
});
