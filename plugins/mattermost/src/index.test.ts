// The Mattermost plugin with the SDK's test kit, against a local server that speaks Mattermost's documented
// formats (incoming webhooks take {"text", "channel"}; slash commands post answers to their response_url;
// GET /api/v4/users/me returns the token's user). No Mattermost package runs here.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadPluginForTest } from "@worksynapse/plugin-sdk/testing";
import plugin from "./index.js";

const manifest = JSON.parse(readFileSync(new URL("../plugin.json", import.meta.url), "utf8")) as unknown;
const seen: { method: string; url: string; auth: string; body: string }[] = [];
const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c: Buffer) => (body += c.toString()));
  req.on("end", () => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", auth: req.headers.authorization ?? "", body });
    if (req.url === "/api/v4/users/me") {
      const ok = req.headers.authorization === "Bearer bot-token";
      res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
      res.end(ok ? JSON.stringify({ id: "u1", username: "worksynapse-bot" }) : '{"message":"invalid token"}');
      return;
    }
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  });
});
let base: string;
beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => void server.close());

describe("mattermost plugin", () => {
  it("posts through the incoming webhook, to the default channel unless one is named", async () => {
    const p = await loadPluginForTest(plugin, manifest, {
      baseUrl: base,
      settings: { incomingWebhookPath: "/hooks/xyz", defaultChannel: "ops" },
    });
    expect([...p.tools.keys()]).toEqual(["mattermost.post_message"]);
    expect(p.tools.get("mattermost.post_message")?.effect).toBe("external");
    await p.call("mattermost.post_message", { text: "deploy done" });
    await p.call("mattermost.post_message", { text: "to town", channel: "town-square" });
    const posts = seen.filter((s) => s.url === "/hooks/xyz").map((s) => JSON.parse(s.body) as unknown);
    expect(posts).toEqual([
      { text: "deploy done", channel: "ops" },
      { text: "to town", channel: "town-square" },
    ]);
    expect(() => p.tools.get("mattermost.post_message")?.input.parse({ text: "" })).toThrow();
  });

  it("answers a slash command as <user>@<domain> through the response URL, and acks at once", async () => {
    const p = await loadPluginForTest(
      plugin,
      manifest,
      { baseUrl: base, settings: { userDomain: "hospital.example" } },
      async (email, q) => `${email} asked ${q}`,
    );
    const form = new URLSearchParams({
      command: "/ask",
      text: "Where is the on-call rota?",
      user_name: "alice",
      channel_name: "ops",
      response_url: `${base}/hooks/commands/r1`,
    }).toString();
    const out = await p.deliver(form, { contentType: "application/x-www-form-urlencoded", event: "/ask" });
    expect(out.ack).toEqual({
      status: 200,
      body: { response_type: "ephemeral", text: "Asking the assistant…" },
    });
    expect(out.asked).toEqual([{ email: "alice@hospital.example", question: "Where is the on-call rota?" }]);
    const answer = seen.find((s) => s.url === "/hooks/commands/r1");
    expect(JSON.parse(answer?.body ?? "{}")).toEqual({
      response_type: "in_channel",
      text: "alice@hospital.example asked Where is the on-call rota?",
    });
    expect(out.records.map((r) => r.type)).toEqual(["slash_command"]);
  });

  it("records and publishes outgoing-webhook messages; the test reports the API account", async () => {
    const p = await loadPluginForTest(plugin, manifest, {
      baseUrl: base,
      headers: { authorization: "Bearer bot-token" },
      settings: { incomingWebhookPath: "/hooks/xyz", askAs: "bot@hospital.example" },
    });
    const out = await p.deliver({
      text: "release 4.2",
      user_name: "bob",
      channel_name: "releases",
      trigger_word: "release",
    });
    expect(out.published).toEqual([
      { event: "message", payload: { user: "bob", channel: "releases", text: "release 4.2" } },
    ]);
    const report = await p.test();
    expect(report.ok).toBe(true);
    expect(report.checks[0]?.detail).toContain("worksynapse-bot");
  });
});
