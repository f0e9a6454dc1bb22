import type { IncomingMessage } from "node:http";
import type Koa from "koa";
import proxyaddr from "proxy-addr";
import type { Config } from "../../config/schema.js";

/** Where a request comes from, as far as the trusted proxies vouch for it. */
export interface ClientInfo {
  ip: string;
  protocol: "http" | "https";
}

type Trust = (addr: string, hop: number) => boolean;

/**
 * Which addresses are trusted proxies. X-Forwarded-For is read from the right: each proxy appends the address
 * it saw, so only the entries the trusted proxies added can be believed; anything to their left was written by
 * the client (the left-most entry is whatever a client chose to send).
 */
export function proxyTrust(http: Config["http"]): Trust {
  if (!http.trustProxy) return () => false;
  if (http.trustedProxies.length) {
    const inList = proxyaddr.compile(http.trustedProxies);
    return (addr, hop) => inList(addr, hop);
  }
  return (_addr, hop) => hop < http.proxyHops;
}

/** The client's address and scheme: the socket's, or what the trusted proxies in front of it forwarded. */
export function clientOf(req: IncomingMessage, trust: Trust): ClientInfo {
  const peer = req.socket.remoteAddress ?? "";
  const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
  if (!trust(peer, 0)) return { ip: peer, protocol: encrypted ? "https" : "http" };
  // The nearest proxy's word on the scheme: the right-most X-Forwarded-Proto entry.
  const forwarded = String(req.headers["x-forwarded-proto"] ?? "")
    .split(",")
    .map((v) => v.trim().toLowerCase())
    .filter(Boolean)
    .pop();
  const protocol = forwarded === "https" || (!forwarded && encrypted) ? "https" : "http";
  return { ip: proxyaddr(req, trust), protocol };
}

const CLIENT = Symbol("client");

/**
 * Makes `ctx.ip`, `ctx.protocol` and `ctx.secure` of every context the app creates (requests and WebSocket
 * handshakes alike) follow the trusted proxies, instead of Koa's left-most X-Forwarded-For entry.
 */
export function installClientInfo(app: Koa, http: Config["http"]): void {
  const trust = proxyTrust(http);
  type Req = { req: IncomingMessage; [CLIENT]?: ClientInfo };
  const info = (r: Req) => (r[CLIENT] ??= clientOf(r.req, trust));
  Object.defineProperties(app.request, {
    ip: {
      configurable: true,
      get(this: Req) {
        return info(this).ip;
      },
      set(this: Req, ip: string) {
        this[CLIENT] = { ...info(this), ip };
      },
    },
    protocol: {
      configurable: true,
      get(this: Req) {
        return info(this).protocol;
      },
    },
  });
}
