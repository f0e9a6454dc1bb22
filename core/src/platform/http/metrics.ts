import type { Context, Next } from "koa";
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The Prometheus registry of one app and the HTTP instruments in it. */
export interface HttpMetrics {
  registry: Registry;
  middleware: (ctx: Context, next: Next) => Promise<void>;
}

/** Creates a registry with process metrics and per-route HTTP counters (route templates as labels). */
export function createHttpMetrics(): HttpMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const labelNames = ["method", "route", "status"] as const;
  const requests = new Counter({
    name: "http_requests_total",
    help: "HTTP requests by route template and status",
    labelNames,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "http_request_duration_seconds",
    help: "HTTP request duration by route template",
    labelNames,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return {
    registry,
    middleware: async (ctx, next) => {
      const start = process.hrtime.bigint();
      try {
        await next();
      } finally {
        // Templates, never raw paths: ids in paths would explode the label set.
        const route =
          (ctx as Context & { _matchedRoute?: string })._matchedRoute ??
          (ctx.path.startsWith("/api/") ? "unmatched" : "static");
        const labels = { method: ctx.method, route: String(route), status: String(ctx.status) };
        requests.inc(labels);
        duration.observe(labels, Number(process.hrtime.bigint() - start) / 1e9);
      }
    },
  };
}
