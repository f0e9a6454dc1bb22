import { existsSync } from "node:fs";
import Koa from "koa";
import { bodyParser } from "@koa/bodyparser";
import type { Config } from "./config/schema.js";
import type { Logger } from "./platform/log.js";
import { Api } from "./platform/http/api.js";
import { errorMiddleware } from "./platform/http/errors.js";
import { createHttpMetrics } from "./platform/http/metrics.js";
import { requestId, securityHeaders } from "./platform/http/security.js";
import { serveUi } from "./platform/http/static.js";
import { DEFAULT_UI_DIR, VERSION } from "./platform/paths.js";
import { registerSystemRoutes, type Readiness } from "./modules/system/system.routes.js";

/** What the app needs from the process around it. */
export interface AppDeps {
  config: Config;
  log: Logger;
  readiness: Readiness;
  database: "postgres" | "pglite";
  /** Route registrations beyond the built-in modules. */
  routes?: ((api: Api) => void)[];
}

/** The built app: Koa instance (not listening), its API registry, and its metrics registry. */
export interface BuiltApp {
  app: Koa;
  api: Api;
  openapi: () => unknown;
}

/** Builds the Koa app with the full middleware stack and every module's routes; does not listen. */
export function buildApp(deps: AppDeps): BuiltApp {
  const { config, log } = deps;
  const app = new Koa({ proxy: config.http.trustProxy });
  app.silent = true; // errors are logged by our middleware, once, with the request id
  const metrics = createHttpMetrics();
  const api = new Api();
  let spec: unknown;
  const openapi = () => (spec ??= api.document({ title: "WorkSynapse", version: VERSION }));

  app.use(requestId);
  app.use(async (ctx, next) => {
    const reqLog = log.child({ reqId: ctx.state.requestId as string, module: "http" });
    ctx.state.log = reqLog;
    const start = performance.now();
    try {
      await next();
    } finally {
      const ms = Math.round((performance.now() - start) * 10) / 10;
      if (ctx.status >= 500)
        reqLog.error({ method: ctx.method, path: ctx.path, status: ctx.status, ms }, "request");
      else reqLog.debug({ method: ctx.method, path: ctx.path, status: ctx.status, ms }, "request");
    }
  });
  app.use(metrics.middleware);
  app.use(securityHeaders);
  app.use(
    errorMiddleware((err, ctx) => (ctx.state.log as Logger).error({ err }, "unhandled error in request")),
  );
  app.use(
    bodyParser({
      enableTypes: ["json"],
      jsonLimit: config.http.bodyLimit,
      // Scalars and arrays are parsed too, so the schema (not the parser) reports what is wrong.
      jsonStrict: false,
    }),
  );

  registerSystemRoutes(api, {
    readiness: deps.readiness,
    metrics: metrics.registry,
    info: { name: "WorkSynapse", version: VERSION, roles: config.roles, database: deps.database },
    openapi,
  });

  for (const register of deps.routes ?? []) register(api);
  app.use(api.router.routes());
  app.use(api.router.allowedMethods({ throw: true }));
  const uiDir = config.http.uiDir ?? DEFAULT_UI_DIR;
  if (existsSync(uiDir)) app.use(serveUi(uiDir));
  else log.warn({ uiDir }, "no built UI found; run `npm run build` to serve the web UI");
  return { app, api, openapi };
}
