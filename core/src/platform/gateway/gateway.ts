// The integration gateway: the one way anything in the server calls out of the building. Each call names its
// target (a connection an admin configured, or a plugin's manifest) and may reach only that target's hosts; the
// gateway resolves DNS itself and checks every address before a connection is made (and again on each
// redirect), bounds time and response size, retries what is safe to retry, paces each target, stops calling a
// target that keeps failing, and logs each call without its bodies, query strings or headers.
import { lookup as dnsLookup } from "node:dns/promises";
import net from "node:net";
import { Agent, request as undiciRequest, type Dispatcher } from "undici";
import type { Logger } from "../log.js";

/** What a call may reach. */
export interface EgressTarget {
  /** The connection or plugin calling: in logs, and the key of its pacing and circuit breaker. */
  id: string;
  /** Hosts it may reach: `gitlab.corp.example`, `*.corp.example`, `10.1.2.3`, each optionally `:port`. */
  hosts: string[];
  /** Calls per second at most (a token bucket of that size); unset: unpaced. */
  ratePerSecond?: number;
}

/** One outbound call. */
export interface GatewayRequest {
  method: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS";
  url: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Whole call, redirects and retries included (default 15 s). */
  timeoutMs?: number;
  /** Largest response body read (default 10 MB). */
  maxBytes?: number;
  /** Sent as Idempotency-Key, and makes a call that changes data safe to retry. */
  idempotencyKey?: string;
}

/** An answer (any status: the caller decides what a 4xx means). */
export interface GatewayResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** The URL that answered (after redirects). */
  url: string;
}

/** Why the gateway refused or gave up on a call; nothing about the remote side's own errors. */
export type EgressCode =
  | "egress_off"
  | "bad_url"
  | "host_not_allowed"
  | "address_not_allowed"
  | "too_many_redirects"
  | "circuit_open"
  | "too_large"
  | "timeout"
  | "unreachable";

/** A call the gateway refused (before connecting) or could not complete. */
export class EgressError extends Error {
  constructor(
    readonly code: EgressCode,
    message: string,
  ) {
    super(message);
    this.name = "EgressError";
  }
}

/** How the gateway behaves. */
export interface GatewayOptions {
  /** The installation's switch: false refuses every call. */
  enabled: boolean;
  /** Loopback addresses are refused unless this is on (an integration on the same host; tests). */
  allowLoopback?: boolean;
  /** DNS resolution (default: the system resolver, every address). */
  resolve?: (host: string) => Promise<{ address: string; family: number }[]>;
  log: Pick<Logger, "info" | "warn">;
  maxRedirects?: number;
  /** Retries of a failed idempotent call (default 3). */
  retries?: number;
  /** First backoff step and the longest wait, in ms (defaults 250 and 30,000). */
  backoffMs?: number;
  maxWaitMs?: number;
  /** Consecutive failures that open a target's circuit, and how long it stays open (defaults 5 and 30 s). */
  breakerFailures?: number;
  breakerCooldownMs?: number;
}

/** A target's health as the admin page shows it. */
export interface TargetState {
  failures: number;
  /** Set while the circuit is open: calls are refused until then. */
  openUntil: Date | null;
}

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);
const RETRY_STATUS = new Set([429, 502, 503, 504]);

/** Addresses no integration is ever reached at (cloud metadata, link-local, multicast, unspecified). */
const NEVER = new net.BlockList();
NEVER.addSubnet("0.0.0.0", 8, "ipv4");
NEVER.addSubnet("169.254.0.0", 16, "ipv4");
NEVER.addSubnet("224.0.0.0", 4, "ipv4");
NEVER.addSubnet("240.0.0.0", 4, "ipv4");
NEVER.addAddress("::", "ipv6");
NEVER.addSubnet("fe80::", 10, "ipv6");
NEVER.addSubnet("ff00::", 8, "ipv6");
const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** Whether `host:port` (from a URL) matches one of a target's host patterns. */
export function hostAllowed(patterns: string[], hostname: string, port: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return patterns.some((p) => {
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(p.trim().toLowerCase());
    if (!m) return false;
    const name = (m[1] as string).replace(/^\[|\]$/g, "");
    if (m[2] && m[2] !== port) return false;
    if (name.startsWith("*.")) return host.endsWith(name.slice(1)) && host.length > name.length - 1;
    return host === name;
  });
}

/** Waits `ms`, or less when the call's deadline comes first. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The wait a 429 or 503 asks for: Retry-After (seconds or a date), else the rate-limit reset headers. */
export function retryAfterMs(headers: Record<string, string>, now = Date.now()): number | null {
  const ra = headers["retry-after"];
  if (ra) {
    if (/^\d+$/.test(ra.trim())) return Number(ra) * 1000;
    const at = Date.parse(ra);
    if (!Number.isNaN(at)) return Math.max(0, at - now);
  }
  const reset = headers["ratelimit-reset"] ?? headers["x-ratelimit-reset"];
  if (reset && /^\d+$/.test(reset.trim())) {
    const n = Number(reset);
    // Epoch seconds (GitHub, GitLab) or seconds from now (the IETF draft).
    return n > 1_000_000_000 ? Math.max(0, n * 1000 - now) : n * 1000;
  }
  return null;
}

/** The gateway. One per process; targets are passed per call. */
export class Gateway {
  private readonly agents = new Map<string, Agent>();
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly health = new Map<string, { failures: number; openUntil: number }>();

  constructor(private readonly opts: GatewayOptions) {}

  /** A target's failures and whether its circuit is open. */
  state(targetId: string): TargetState {
    const h = this.health.get(targetId);
    return {
      failures: h?.failures ?? 0,
      openUntil: h && h.openUntil > Date.now() ? new Date(h.openUntil) : null,
    };
  }

  /** Makes one call, following allowed redirects and retrying what is safe to retry. */
  async request(target: EgressTarget, req: GatewayRequest): Promise<GatewayResponse> {
    if (!this.opts.enabled)
      throw new EgressError("egress_off", "Outbound calls are turned off for this installation.");
    const h = this.health.get(target.id);
    if (h && h.openUntil > Date.now())
      throw new EgressError(
        "circuit_open",
        `Calls to ${target.id} are paused after repeated failures until ${new Date(h.openUntil).toISOString()}.`,
      );
    const deadline = Date.now() + (req.timeoutMs ?? 15_000);
    const retryable = IDEMPOTENT.has(req.method) || !!req.idempotencyKey;
    const attempts = 1 + (retryable ? (this.opts.retries ?? 3) : 0);
    for (let attempt = 1; ; attempt++) {
      await this.pace(target, deadline);
      let res: GatewayResponse | undefined;
      let failure: unknown;
      try {
        res = await this.follow(target, req, deadline, attempt);
      } catch (err) {
        failure = err;
      }
      // Refusals are final and say nothing about the remote side's health; each is logged (no connection was made).
      if (failure instanceof EgressError && failure.code !== "unreachable" && failure.code !== "timeout") {
        this.opts.log.warn(
          { target: target.id, code: failure.code, reason: failure.message },
          "outbound call refused",
        );
        throw failure;
      }
      const transient = failure !== undefined || (res !== undefined && RETRY_STATUS.has(res.status));
      if (!transient) {
        this.health.delete(target.id);
        return res as GatewayResponse;
      }
      const asked = res ? retryAfterMs(res.headers) : null;
      const backoff = Math.min(
        this.opts.maxWaitMs ?? 30_000,
        asked ?? Math.random() * (this.opts.backoffMs ?? 250) * 2 ** (attempt - 1),
      );
      if (attempt >= attempts || Date.now() + backoff >= deadline) {
        this.fail(target.id);
        if (res) return res;
        throw failure;
      }
      this.opts.log.warn(
        { target: target.id, attempt, waitMs: Math.round(backoff), status: res?.status },
        "outbound call failed; retrying",
      );
      await sleep(backoff);
    }
  }

  private fail(targetId: string) {
    const h = this.health.get(targetId) ?? { failures: 0, openUntil: 0 };
    h.failures += 1;
    if (h.failures >= (this.opts.breakerFailures ?? 5)) {
      h.openUntil = Date.now() + (this.opts.breakerCooldownMs ?? 30_000);
      // Half-open after the cool-down: the next failure opens it again at once.
      h.failures = (this.opts.breakerFailures ?? 5) - 1;
      this.opts.log.warn({ target: targetId, until: new Date(h.openUntil) }, "outbound circuit opened");
    }
    this.health.set(targetId, h);
  }

  /** Token bucket per target: waits for a token (never past the call's deadline). */
  private async pace(target: EgressTarget, deadline: number) {
    const rate = target.ratePerSecond;
    if (!rate) return;
    for (;;) {
      const now = Date.now();
      const b = this.buckets.get(target.id) ?? { tokens: rate, at: now };
      b.tokens = Math.min(rate, b.tokens + ((now - b.at) / 1000) * rate);
      b.at = now;
      this.buckets.set(target.id, b);
      if (b.tokens >= 1) {
        b.tokens -= 1;
        return;
      }
      const wait = ((1 - b.tokens) / rate) * 1000;
      if (now + wait >= deadline)
        throw new EgressError("timeout", `Calls to ${target.id} are paced; no slot in time.`);
      await sleep(wait);
    }
  }

  /** One attempt: the request and the redirects it leads to, each checked before it is sent. */
  private async follow(target: EgressTarget, req: GatewayRequest, deadline: number, attempt: number) {
    let url = req.url;
    let method = req.method;
    let body = req.body;
    for (let hop = 0; ; hop++) {
      const u = this.check(target, url);
      const t0 = Date.now();
      const res = await this.send(target, u, method, req, body, deadline);
      this.opts.log.info(
        {
          target: target.id,
          method,
          host: u.host,
          path: u.pathname,
          status: res.status,
          ms: Date.now() - t0,
          attempt,
        },
        "outbound call",
      );
      const location = res.headers.location;
      if (res.status < 300 || res.status >= 400 || !location) return { ...res, url: u.toString() };
      if (hop >= (this.opts.maxRedirects ?? 5))
        throw new EgressError("too_many_redirects", `More than ${this.opts.maxRedirects ?? 5} redirects.`);
      url = new URL(location, u).toString();
      // 303, and 301/302 after a POST, become a GET without a body (as browsers do).
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === "POST")) {
        method = "GET";
        body = undefined;
      }
    }
  }

  /** The URL if the target may reach it (scheme and host); the address is checked when connecting. */
  private check(target: EgressTarget, raw: string): URL {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new EgressError("bad_url", "Not a valid URL.");
    }
    if (u.protocol !== "https:" && u.protocol !== "http:")
      throw new EgressError("bad_url", `Only http and https are allowed, not ${u.protocol}`);
    if (u.username || u.password)
      throw new EgressError("bad_url", "Credentials go in headers, not in the URL.");
    const port = u.port || (u.protocol === "https:" ? "443" : "80");
    if (!hostAllowed(target.hosts, u.hostname, port))
      throw new EgressError("host_not_allowed", `${u.host} is not a host ${target.id} may reach.`);
    return u;
  }

  /** Whether an address may be connected to. */
  private addressAllowed(address: string, family: number): boolean {
    const type = family === 6 ? "ipv6" : "ipv4";
    if (NEVER.check(address, type)) return false;
    if (LOOPBACK.check(address, type)) return !!this.opts.allowLoopback;
    return true;
  }

  /** Resolves and checks a host's addresses (an IP literal is checked as it is). */
  private async addressesOf(host: string): Promise<{ address: string; family: number }[]> {
    const bare = host.replace(/^\[|\]$/g, "");
    const family = net.isIP(bare);
    const found = family
      ? [{ address: bare, family }]
      : await (this.opts.resolve ?? ((h: string) => dnsLookup(h, { all: true })))(bare).catch(() => {
          throw new EgressError("unreachable", `${bare} does not resolve.`);
        });
    const allowed = found.filter((a) => this.addressAllowed(a.address, a.family));
    if (!allowed.length)
      throw new EgressError(
        "address_not_allowed",
        `${bare} resolves to an address outbound calls may not reach (${found.map((a) => a.address).join(", ")}).`,
      );
    return allowed;
  }

  private async send(
    target: EgressTarget,
    u: URL,
    method: string,
    req: GatewayRequest,
    body: string | Uint8Array | undefined,
    deadline: number,
  ): Promise<Omit<GatewayResponse, "url">> {
    // Resolved and checked here, before any connection; the connection then goes to exactly these addresses
    // (the agent's lookup answers from them), so a second DNS answer cannot send it elsewhere.
    const addresses = await this.addressesOf(u.hostname);
    const left = deadline - Date.now();
    if (left <= 0) throw new EgressError("timeout", "The call ran out of time.");
    const signal = AbortSignal.timeout(left);
    let res: Dispatcher.ResponseData;
    try {
      res = await undiciRequest(u, {
        method: method as Dispatcher.HttpMethod,
        headers: {
          ...(req.headers ?? {}),
          ...(req.idempotencyKey ? { "idempotency-key": req.idempotencyKey } : {}),
        },
        body,
        signal,
        dispatcher: this.agentFor(target.id, u.hostname, addresses),
        headersTimeout: left,
        bodyTimeout: left,
      });
    } catch (err) {
      if (signal.aborted) throw new EgressError("timeout", "The remote side did not answer in time.");
      throw new EgressError(
        "unreachable",
        `Could not reach ${u.host}: ${(err as Error).message}`.slice(0, 300),
      );
    }
    const max = req.maxBytes ?? 10 * 1024 * 1024;
    const declared = Number(res.headers["content-length"] ?? 0);
    if (declared > max) {
      res.body.destroy();
      throw new EgressError("too_large", `The answer is larger than ${max} bytes.`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > max) {
          res.body.destroy();
          throw new EgressError("too_large", `The answer is larger than ${max} bytes.`);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (err) {
      if (err instanceof EgressError) throw err;
      if (signal.aborted)
        throw new EgressError("timeout", "The remote side did not finish its answer in time.");
      throw new EgressError("unreachable", `The answer from ${u.host} broke off.`);
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers))
      if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : String(v);
    return { status: res.statusCode, headers, body: Buffer.concat(chunks) };
  }

  /** A keep-alive agent per target and host whose connections go only to the checked addresses. */
  private agentFor(targetId: string, host: string, addresses: { address: string; family: number }[]): Agent {
    const key = `${targetId}\u0000${host}\u0000${addresses.map((a) => a.address).join(",")}`;
    let agent = this.agents.get(key);
    if (!agent) {
      agent = new Agent({
        connect: {
          lookup: (_hostname, options, cb) => {
            const all = (options as { all?: boolean }).all;
            const first = addresses[0] as { address: string; family: number };
            if (all) (cb as (e: null, a: { address: string; family: number }[]) => void)(null, addresses);
            else (cb as (e: null, a: string, f: number) => void)(null, first.address, first.family);
          },
        },
      });
      this.agents.set(key, agent);
    }
    return agent;
  }

  /** Closes the keep-alive connections. */
  async close(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.close()));
    this.agents.clear();
  }
}
