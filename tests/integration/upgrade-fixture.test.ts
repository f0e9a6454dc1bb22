// Upgrading a database a previous release left: tests/fixtures/upgrade/ holds a populated database dumped at
// an earlier schema (scripts/make-upgrade-fixture.mjs; its manifest names the last migration it has). It is
// loaded into a fresh real PostgreSQL database, and this version's server starts on it: the newer migrations
// run, and what people had (notes, a project's task, chat, a webhook connection with its sealed secret and its
// processed delivery) is there and still works.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import path from "node:path";
import { fileURLToPath } from "node:url";
import knexFactory from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureAppRole } from "../../core/src/platform/db/database.js";
import { signGeneric } from "../../core/src/platform/gateway/webhooks.js";
import { signIn, type Client } from "../support/identity.js";
import { createTestDatabase, type TestDatabase } from "../support/pg.js";
import { getTestServer, type TestServer } from "../support/server.js";

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/upgrade");
const manifest = JSON.parse(readFileSync(path.join(dir, "manifest.json"), "utf8")) as {
  appRole: string;
  masterKey: string;
  lastMigration: string;
  migrations: number;
  signIn: { email: string; password: string };
  webhookSecret: string;
};

let pg: TestDatabase;
let srv: TestServer;
let ada: Client;
type Data<T> = { data: T };

beforeAll(async () => {
  pg = await createTestDatabase("upgfx");
  const owner = knexFactory({ client: "pg", connection: pg.url });
  try {
    await ensureAppRole(owner, manifest.appRole);
  } finally {
    await owner.destroy();
  }
  execFileSync("psql", [pg.url, "-q", "-v", "ON_ERROR_STOP=1"], {
    input: gunzipSync(readFileSync(path.join(dir, "database.sql.gz"))),
    stdio: ["pipe", "ignore", "pipe"],
  });
  srv = await getTestServer({
    pg,
    env: {
      WORKSYNAPSE_SECRETS_MASTER_KEY: manifest.masterKey,
      WORKSYNAPSE_INTEGRATIONS_ALLOW_LOOPBACK: "true",
    },
  });
  ada = await signIn(srv, manifest.signIn.email, manifest.signIn.password);
}, 120_000);

afterAll(async () => {
  // The server drops the database it was given.
  if (srv) await srv.close();
  else await pg?.drop();
});

describe("upgrade from the previous release's database", () => {
  it("runs the newer migrations on it", async () => {
    const names = execFileSync("psql", [pg.url, "-tAc", "select name from knex_migrations order by id"], {
      encoding: "utf8",
    })
      .trim()
      .split("\n");
    expect(names).toContain(manifest.lastMigration);
    expect(names.length, "the fixture is older than this version").toBeGreaterThan(manifest.migrations);
    // A table of a newer migration is there and usable.
    const backups = await ada.json<Data<{ available: boolean; runs: unknown[] }>>(
      "GET",
      "/api/system/backups",
    );
    expect(backups.data.runs).toEqual([]);
  });

  it("keeps what people had: notes, a project's task, chat", async () => {
    const notes = await ada.json<Data<{ title: string }[]>>("GET", "/api/notes");
    expect(notes.data.map((n) => n.title)).toContain("Ward rota");
    const projects = await ada.json<Data<{ id: string; name: string }[]>>("GET", "/api/projects");
    const move = projects.data.find((p) => p.name === "Clinic move");
    expect(move).toBeDefined();
    const tasks = await ada.json<Data<{ title: string }[]>>("GET", `/api/projects/${move?.id}/tasks`);
    expect(tasks.data.map((t) => t.title)).toContain("Book the movers");
    const channels = await ada.json<Data<{ id: string; name: string }[]>>("GET", "/api/chat/channels");
    const ops = channels.data.find((c) => c.name === "ops");
    const messages = await ada.json<Data<{ body: string }[]>>(
      "GET",
      `/api/chat/channels/${ops?.id}/messages`,
    );
    expect(messages.data.map((m) => m.body)).toContain("The new wing opens Monday.");
  });

  it("keeps the webhook connection: its sealed secret still checks a new delivery, which goes through the new ingest", async () => {
    const conns = await ada.json<Data<{ id: string; name: string; webhookUrl: string }[]>>(
      "GET",
      "/api/integrations/connections",
    );
    const lab = conns.data.find((c) => c.name === "lab");
    expect(lab).toBeDefined();
    const before = await ada.json<Data<{ status: string }[]>>(
      "GET",
      `/api/integrations/connections/${lab?.id}/deliveries`,
    );
    expect(before.data.map((d) => d.status)).toEqual(["processed"]);
    // Signed with the secret the connection was given before the upgrade: its sealed column still opens.
    const body = JSON.stringify({ summary: "after the upgrade" });
    const r = await srv.fetch(lab?.webhookUrl as string, {
      method: "POST",
      headers: { "content-type": "application/json", ...signGeneric(manifest.webhookSecret, body) },
      body,
    });
    expect(r.status).toBe(202);
    const end = Date.now() + 20_000;
    for (;;) {
      const after = await ada.json<Data<{ status: string }[]>>(
        "GET",
        `/api/integrations/connections/${lab?.id}/deliveries`,
      );
      if (after.data.length === 2 && after.data.every((d) => d.status === "processed")) break;
      if (Date.now() > end) throw new Error(`not processed: ${JSON.stringify(after.data)}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  });
});
