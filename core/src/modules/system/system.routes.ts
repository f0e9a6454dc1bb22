import { createRequire } from "node:module";
import path from "node:path";
import { send } from "@koa/send";
import type { HttpMetrics } from "../../platform/http/metrics.js";
import { z } from "zod";
import type { Api } from "../../platform/http/api.js";
import { dataOf } from "../../platform/http/api.js";
import { ASSETS_DIR } from "../../platform/paths.js";
import { AppError } from "../../platform/http/errors.js";
import { sameSecret } from "../../platform/crypto.js";
import { livenessSchema, readinessSchema, systemInfoSchema } from "./system.schemas.js";

/** Readiness state shared with the process lifecycle. */
export interface Readiness {
  /** True once shutdown began: /readyz answers 503 so load balancers stop sending traffic. */
  draining: boolean;
  checks: Record<string, () => Promise<void>>;
}

/** How long /readyz waits for a check before reporting it failed. */
const CHECK_DEADLINE_MS = 2000;

const require = createRequire(import.meta.url);
const SWAGGER_DIR = path.dirname(require.resolve("swagger-ui-dist/package.json"));
const DOCS_DIR = path.join(ASSETS_DIR, "api-docs");
const SWAGGER_FILES = new Set(["swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"]);

/** Registers health, readiness, metrics, system info and the API documentation routes. */
export function registerSystemRoutes(
  api: Api,
  deps: {
    readiness: Readiness;
    metrics: HttpMetrics;
    info: z.infer<typeof systemInfoSchema>;
    openapi: () => unknown;
    /** The bearer token /metrics asks for; unset: metrics are refused to everyone. */
    metricsToken?: string;
  },
): void {
  api.publicRoute({
    method: "get",
    path: "/livez",
    operationId: "liveness",
    summary: "The process is alive (checks nothing else)",
    tags: ["system"],
    response: livenessSchema,
    handler: async () => ({ status: "ok" }),
  });

  // One run of each check at a time: probes arriving while it runs share it, so a stalled dependency never
  // piles up checks; each answer comes within CHECK_DEADLINE_MS.
  const running = new Map<string, Promise<{ ok: boolean; error?: string }>>();
  const runCheck = (name: string) => {
    let run = running.get(name);
    if (!run) {
      const check = deps.readiness.checks[name] as () => Promise<void>;
      run = check().then(
        () => ({ ok: true }),
        (err: unknown) => ({ ok: false, error: err instanceof Error ? err.message.slice(0, 200) : "failed" }),
      );
      running.set(name, run);
      void run.finally(() => running.delete(name));
    }
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      run,
      new Promise<{ ok: boolean; error: string }>((resolve) => {
        timer = setTimeout(
          () => resolve({ ok: false, error: `no answer within ${CHECK_DEADLINE_MS} ms` }),
          CHECK_DEADLINE_MS,
        );
      }),
    ]).finally(() => clearTimeout(timer));
  };

  api.publicRoute({
    method: "get",
    path: "/readyz",
    operationId: "readiness",
    summary: "Database and bus are reachable and the process is not draining",
    tags: ["system"],
    response: readinessSchema,
    errors: [503],
    handler: async (ctx) => {
      const checks: Record<string, { ok: boolean; error?: string }> = {};
      await Promise.all(
        Object.keys(deps.readiness.checks).map(async (name) => {
          checks[name] = await runCheck(name);
        }),
      );
      const ok = Object.values(checks).every((c) => c.ok);
      const status = deps.readiness.draining ? "draining" : ok ? "ready" : "not_ready";
      if (status !== "ready") ctx.status = 503;
      return { status, checks };
    },
  });

  api.publicRoute({
    method: "get",
    path: "/metrics",
    operationId: "metrics",
    summary: "Prometheus metrics",
    tags: ["system"],
    response: z.string(),
    responseType: "text/plain; version=0.0.4",
    errors: [401],
    handler: async (ctx) => {
      // Metrics tell an outsider a lot (routes, load, versions): Prometheus sends the configured bearer token.
      const token = deps.metricsToken;
      const sent = /^Bearer (.+)$/i.exec(ctx.get("authorization"))?.[1] ?? "";
      if (!token || !sameSecret(sent, token)) {
        ctx.set("WWW-Authenticate", 'Bearer realm="metrics"');
        throw new AppError(
          401,
          "unauthenticated",
          token
            ? "Send the metrics token as a bearer token."
            : "Metrics are off: set metrics.token (WORKSYNAPSE_METRICS_TOKEN) and give Prometheus the same token.",
        );
      }
      return deps.metrics.render();
    },
  });

  api.publicRoute({
    method: "get",
    path: "/api/system/info",
    operationId: "getSystemInfo",
    summary: "Name, version and roles of this installation",
    tags: ["system"],
    response: dataOf(systemInfoSchema),
    handler: async () => ({ data: deps.info }),
  });

  api.get("/api/openapi.json", (ctx) => {
    ctx.body = deps.openapi();
  });
  // The docs page is bundled (swagger-ui-dist): no CDN, no validator calls.
  api.get("/api/docs", (ctx) => ctx.redirect("/api/docs/index.html"));
  api.get("/api/docs/:file", async (ctx) => {
    const file = ctx.params.file as string;
    if (SWAGGER_FILES.has(file)) await send(ctx, file, { root: SWAGGER_DIR, maxage: 86400000 });
    else if (file === "index.html" || file === "init.js") await send(ctx, file, { root: DOCS_DIR });
  });
}
