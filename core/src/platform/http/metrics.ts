import { Registry, collectDefaultMetrics } from "prom-client";

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const NAME = "http_request_duration_seconds";

interface Series {
  labels: string;
  counts: number[];
  sum: number;
  count: number;
}

/** The Prometheus registry of one app and its HTTP request histogram. */
export interface HttpMetrics {
  registry: Registry;
  /** Records one finished request (route template, never the raw path). */
  observe(method: string, route: string, status: number, seconds: number): void;
  /** Prometheus text of every metric: the registry's and the HTTP histogram. */
  render(): Promise<string>;
}

const escape = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

/**
 * Process metrics come from prom-client; the HTTP histogram is kept here as plain counters because
 * prom-client re-hashes the label object on every observation, a measurable share of a fast request.
 * Its `_count` series is the request counter.
 */
export function createHttpMetrics(): HttpMetrics {
  const registry = new Registry();
  // The event-loop delay histogram samples every 100 ms, not prom-client's default 10: an idle server's main
  // thread woke 102 times a second with the default and 15 with this, and a stall of 100 ms or more is still seen.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  const series = new Map<string, Series>();

  const observe = (method: string, route: string, status: number, seconds: number) => {
    const key = `${method} ${status} ${route}`;
    let s = series.get(key);
    if (!s) {
      s = {
        labels: `method="${escape(method)}",route="${escape(route)}",status="${status}"`,
        counts: BUCKETS.map(() => 0),
        sum: 0,
        count: 0,
      };
      series.set(key, s);
    }
    s.count += 1;
    s.sum += seconds;
    for (let i = 0; i < BUCKETS.length; i++) {
      if (seconds <= (BUCKETS[i] as number)) {
        (s.counts[i] as number) += 1;
        break;
      }
    }
  };

  const renderHistogram = () => {
    const lines = [
      `# HELP ${NAME} HTTP requests by route template, method and status; _count counts requests`,
      `# TYPE ${NAME} histogram`,
    ];
    for (const s of series.values()) {
      let cumulative = 0;
      BUCKETS.forEach((le, i) => {
        cumulative += s.counts[i] as number;
        lines.push(`${NAME}_bucket{le="${le}",${s.labels}} ${cumulative}`);
      });
      lines.push(`${NAME}_bucket{le="+Inf",${s.labels}} ${s.count}`);
      lines.push(`${NAME}_sum{${s.labels}} ${s.sum}`);
      lines.push(`${NAME}_count{${s.labels}} ${s.count}`);
    }
    return lines.join("\n") + "\n";
  };

  return {
    registry,
    observe,
    render: async () => `${await registry.metrics()}\n${renderHistogram()}`,
  };
}
