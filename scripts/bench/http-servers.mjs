// Child process for bench-http: serves either a bare Koa app with one route or the full WorkSynapse app.
import http from "node:http";
import Koa from "koa";
import Router from "@koa/router";
import { buildApp, loadConfig, silentLogger } from "../../core/dist/src/index.js";

const kind = process.argv[2];
let app;
if (kind === "bare") {
  // Koa with one route through @koa/router: the usual shape of a Koa server.
  app = new Koa();
  const router = new Router();
  router.get("/livez", (ctx) => {
    ctx.body = { status: "ok" };
  });
  app.use(router.routes());
} else if (kind === "minimal") {
  // Koa with no router at all: the floor.
  app = new Koa();
  app.use(async (ctx) => {
    if (ctx.path === "/livez") ctx.body = { status: "ok" };
  });
} else {
  const config = loadConfig({
    env: { WORKSYNAPSE_DATA_DIR: "/nonexistent-bench", WORKSYNAPSE_LOG_LEVEL: "silent" },
  });
  app = buildApp({
    config,
    log: silentLogger(),
    readiness: { draining: false, checks: {} },
    database: "postgres",
    knex: null,
  }).app;
}
const server = http.createServer(app.callback());
server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
process.on("message", (m) => m === "stop" && server.close(() => process.exit(0)));
