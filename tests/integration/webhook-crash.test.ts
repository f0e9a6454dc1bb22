// Exactly-once processing of webhook deliveries across a crash: 200 signed deliveries are acknowledged while
// their processing is held mid-transaction (the test locks the table processing writes to), the server is killed
// with SIGKILL, and a new server on the same database and bus processes each delivery exactly once.
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { apiAs, setUpInstallation, spawnCore, waitForOk, type CoreProcess } from "../support/process.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";
import { NATS_URL } from "../support/env.js";
import { signGeneric } from "../../core/src/platform/gateway/webhooks.js";

let db: TestDatabase | undefined;
const cores: CoreProcess[] = [];
afterAll(async () => {
  for (const c of cores)
    if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
  await db?.drop();
});

const until = async (what: string, ok: () => Promise<boolean>, ms = 60_000) => {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
};

describe("webhook deliveries across a crash", () => {
  it("kill -9 with 200 deliveries queued: after restart each is processed exactly once", async () => {
    db = await createTestDatabase("hookcrash");
    const env = {
      DATABASE_URL: db.url,
      NATS_URL,
      WORKSYNAPSE_NATS_PREFIX: `hookcrash${process.pid}`,
      WORKSYNAPSE_INTEGRATIONS_ALLOW_LOOPBACK: "true",
    };
    const first = spawnCore(env);
    cores.push(first);
    const url = await first.url;
    await waitForOk(`${url}/readyz`);
    const cookie = await setUpInstallation(url, {
      organizationName: "Hook Crash Clinic",
      name: "Ada",
      email: "ada@hookcrash.example",
      password: "lantern-harbor-violet-7",
    });
    const api = apiAs(url, cookie);
    await api("PUT", "/api/integrations/plugins/webhook", { enabled: true });
    const created = await api<{
      data: { connection: { id: string; webhookUrl: string }; webhookSecret: string };
    }>("POST", "/api/integrations/connections", {
      plugin: "webhook",
      name: "pager",
      baseUrl: "http://127.0.0.1:9",
      auth: { kind: "none" },
    });
    const { connection, webhookSecret } = created.data;

    // Processing writes integration_events: held here, every delivery's processing waits mid-transaction.
    const su = new pg.Client({ connectionString: db.url });
    await su.connect();
    await su.query("begin");
    await su.query("lock table integration_events in access exclusive mode");

    const send = async (i: number) => {
      const body = JSON.stringify({ summary: `page ${i}`, n: i });
      const r = await fetch(`${url}${connection.webhookUrl}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-webhook-id": `delivery-${i}`,
          ...signGeneric(webhookSecret, body),
        },
        body,
      });
      return r.status;
    };
    const statuses: number[] = [];
    for (let i = 0; i < 200; i += 20)
      statuses.push(...(await Promise.all(Array.from({ length: 20 }, (_, k) => send(i + k)))));
    expect(statuses.every((s) => s === 202)).toBe(true);
    // Replays of acknowledged deliveries are not stored again.
    expect(await send(7)).toBe(200);

    const count = async (sql: string) => Number((await su.query(sql)).rows[0].n);
    const processedAtKill = await count(
      "select count(*) as n from webhook_deliveries where status = 'processed'",
    );
    first.child.kill("SIGKILL");
    await first.exit;
    await su.query("rollback");
    expect(processedAtKill).toBe(0);
    expect(await count("select count(*) as n from webhook_deliveries")).toBe(200);

    const second = spawnCore(env);
    cores.push(second);
    await waitForOk(`${await second.url}/readyz`);
    await until(
      "every delivery processed",
      async () =>
        (await count("select count(*) as n from webhook_deliveries where status = 'processed'")) === 200,
    );
    // Give any duplicate redelivery time to show itself, then count effects per delivery.
    await new Promise((r) => setTimeout(r, 2000));
    const effects = await su.query(
      "select count(*) as n, count(distinct delivery_id) as d, max(c) as most from (select delivery_id, count(*) over (partition by delivery_id) as c from integration_events) e",
    );
    expect(Number(effects.rows[0].n)).toBe(200);
    expect(Number(effects.rows[0].d)).toBe(200);
    expect(Number(effects.rows[0].most)).toBe(1);
    await su.end();
    second.child.kill("SIGTERM");
    await second.exit;
  }, 180_000);
});
