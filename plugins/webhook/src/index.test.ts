// The generic webhook plugin with the SDK's test kit, against a local HTTP server.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadPluginForTest } from "@worksynapse/plugin-sdk/testing";
import plugin from "./index.js";

const manifest = JSON.parse(readFileSync(new URL("../plugin.json", import.meta.url), "utf8")) as unknown;
const seen: { method: string; url: string; body: string; auth: string }[] = [];
const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c: Buffer) => (body += c.toString()));
  req.on("end", () => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", body, auth: req.headers.authorization ?? "" });
    res.writeHead(201, { "content-type": "application/json" });
    res.end('{"accepted":true}');
  });
});
let base: string;
beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => void server.close());

describe("webhook plugin", () => {
  it("sends JSON to the settings' path or the one given, with the connection's credentials", async () => {
    const p = await loadPluginForTest(plugin, manifest, {
      baseUrl: base,
      headers: { authorization: "Bearer t0k" },
      settings: { sendPath: "/in" },
    });
    expect(await p.call("webhook.send", { body: { a: 1 } })).toEqual({
      status: 201,
      ok: true,
      body: '{"accepted":true}',
    });
    await p.call("webhook.send", { path: "/other", method: "PUT", body: { b: 2 } });
    expect(seen.map((s) => `${s.method} ${s.url} ${s.body} ${s.auth}`)).toEqual([
      'POST /in {"a":1} Bearer t0k',
      'PUT /other {"b":2} Bearer t0k',
    ]);
  });

  it("records inbound events under the payload's own event field when configured", async () => {
    const p = await loadPluginForTest(plugin, manifest, { baseUrl: base, settings: { eventField: "kind" } });
    const out = await p.deliver({ kind: "alarm", title: "Freezer 3 above -70°C" }, { event: "message" });
    expect(out.records).toEqual([
      {
        type: "alarm",
        summary: "alarm: Freezer 3 above -70°C",
        payload: { kind: "alarm", title: "Freezer 3 above -70°C" },
      },
    ]);
    expect(out.published[0]?.event).toBe("received");
  });
});
