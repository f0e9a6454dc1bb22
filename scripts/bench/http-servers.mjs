// Child process for bench-http: serves bare Koa, the full WorkSynapse app, or the app with a database
// (for the authenticated endpoint); or runs a raw pool.query loop. Reports its port (or counts) over IPC.
import http from "node:http";
import Koa from "koa";
import Router from "@koa/router";
import pg from "pg";
import { z } from "zod";
import {
  buildApp,
  createOrganization,
  loadConfig,
  openDatabase,
  silentLogger,
  withOrg,
} from "../../core/dist/src/index.js";
import { createSession } from "../../core/dist/src/modules/identity/identity.service.js";
import { newApiKey } from "../../core/dist/src/modules/identity/tokens.js";

const kind = process.argv[2];
const log = silentLogger();
const readiness = { draining: false, checks: {} };

/** The benchmark's authenticated endpoint: the whole pipeline plus one indexed query. */
const benchRoute = (api) =>
  api.route({
    method: "get",
    path: "/api/bench/users/:id",
    operationId: "benchUser",
    summary: "one indexed query",
    tags: ["bench"],
    permission: "users.read",
    params: z.object({ id: z.uuid() }),
    handler: async (_ctx, { params }, { trx }) => ({
      data: await trx("users").select("id", "email").where({ id: params.id }).first(),
    }),
  });

async function serve(app, extra = {}) {
  const server = http.createServer(app.callback());
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port, ...extra }));
  process.on("message", (m) => m === "stop" && server.close(() => process.exit(0)));
}

if (kind === "bare") {
  // Koa with one route through @koa/router: the usual shape of a Koa server.
  const app = new Koa();
  const router = new Router();
  router.get("/livez", (ctx) => {
    ctx.body = { status: "ok" };
  });
  app.use(router.routes());
  await serve(app);
} else if (kind === "minimal") {
  // Koa with no router at all: the floor.
  const app = new Koa();
  app.use(async (ctx) => {
    if (ctx.path === "/livez") ctx.body = { status: "ok" };
  });
  await serve(app);
} else if (kind === "full") {
  const config = loadConfig({
    env: { WORKSYNAPSE_DATA_DIR: "/nonexistent-bench", WORKSYNAPSE_LOG_LEVEL: "silent" },
  });
  await serve(buildApp({ config, log, readiness, database: "postgres", knex: null }).app);
} else if (kind === "auth") {
  const config = loadConfig({
    env: {
      WORKSYNAPSE_DATA_DIR: "/nonexistent-bench",
      WORKSYNAPSE_LOG_LEVEL: "silent",
      DATABASE_URL: process.env.BENCH_DATABASE_URL,
      WORKSYNAPSE_AUTH_API_PER_MINUTE: "100000000",
    },
  });
  const db = await openDatabase(config, { migrate: true, log });
  const { orgId, ownerId } = await createOrganization(
    db.knex,
    {
      name: "Bench",
      ownerEmail: `bench-${process.pid}@example.org`,
      ownerName: "Bench",
      ownerPassword: "bench-password-long-1",
      systemAdmin: false,
    },
    { actorType: "system" },
  );
  const { token } = await withOrg(db.knex, orgId, (trx) => createSession(trx, config, orgId, ownerId, {}));
  const key = newApiKey();
  await withOrg(db.knex, orgId, (trx) =>
    trx("api_keys").insert({
      org_id: orgId,
      user_id: ownerId,
      name: "bench",
      prefix: key.prefix,
      key_hash: key.hash,
      permissions: ["users.read"],
    }),
  );
  const app = buildApp({
    config,
    log,
    readiness,
    database: "postgres",
    knex: db.knex,
    masterKey: "b".repeat(48),
    routes: [benchRoute],
  }).app;
  await serve(app, { cookie: `ws_session=${token}`, apiKey: key.key, userId: ownerId });
} else if (kind === "raw") {
  // The floor for the same query: a pg pool of the app's size, 32 loops, for the given seconds.
  const [, , , url, id, seconds] = process.argv;
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  const end = Date.now() + Number(seconds) * 1000;
  let count = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (Date.now() < end) {
        await pool.query("select id, email from users where id = $1", [id]);
        count += 1;
      }
    }),
  );
  await pool.end();
  process.send({ qps: count / Number(seconds) });
  process.exit(0);
}
