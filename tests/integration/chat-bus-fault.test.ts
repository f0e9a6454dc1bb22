// Chat fan-out across two web nodes survives a bus restart: the nats-server between them is killed, its
// supervisor starts it again on the same port, both nodes reconnect by themselves, and a message posted on one
// node reaches a socket on the other again, with no restart of either server.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { getTestServer, type TestServer } from "../support/server.js";
import { testConfig } from "../support/config.js";
import { createMember, createTestOrg, type Client, type TestOrg } from "../support/identity.js";
import { startLocalNats } from "../../core/src/platform/bus/local-server.js";
import { startServer, type RunningServer } from "../../core/src/server.js";
import { silentLogger } from "../../core/src/platform/log.js";

type Data<T> = { data: T };
let nats: Awaited<ReturnType<typeof startLocalNats>>;
let srv: TestServer;
let node2: RunningServer;
let org: TestOrg;
let bob: { id: string; client: Client };

beforeAll(async () => {
  nats = await startLocalNats({
    dataDir: mkdtempSync(path.join(tmpdir(), "ws-chatbus-")),
    log: silentLogger(),
  });
  srv = await getTestServer({ env: { NATS_URL: nats.url } });
  node2 = await startServer(
    testConfig({
      DATABASE_URL: srv.pg.url,
      NATS_URL: nats.url,
      WORKSYNAPSE_NATS_PREFIX: srv.config.nats.prefix,
      WORKSYNAPSE_ROLES: "web",
    }),
    silentLogger(),
  );
  org = await createTestOrg(srv, "chatbus");
  bob = await createMember(org, ["member"], "bob");
});
afterAll(async () => {
  await node2?.stop();
  await srv?.close();
  await nats?.stop();
});

/** Bodies of the chat messages a socket receives. */
async function listen(base: string, who: Client): Promise<{ bodies: string[]; ws: WebSocket }> {
  const ws = new WebSocket(`${base.replace("http", "ws")}/ws`, {
    headers: { cookie: who.headers().cookie as string, origin: base },
  });
  const bodies: string[] = [];
  let ready = false;
  ws.on("message", (d) => {
    const e = JSON.parse(d.toString()) as { type: string; message?: { body: string } };
    if (e.type === "ready") ready = true;
    if (e.type === "message" && e.message) bodies.push(e.message.body);
  });
  const end = Date.now() + 5000;
  while (!ready) {
    if (Date.now() > end) throw new Error("the socket did not get ready");
    await new Promise((r) => setTimeout(r, 20));
  }
  return { bodies, ws };
}

const until = async (what: string, ok: () => boolean, ms = 15_000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe("chat across nodes", () => {
  it("delivers again after the bus between the nodes is killed and restarted", async () => {
    const channel = (
      await org.owner.json<Data<{ id: string }>>(
        "POST",
        "/api/chat/channels",
        { kind: "public", name: `bus-${org.marker.toLowerCase()}`, memberIds: [bob.id] },
        201,
      )
    ).data.id;
    const live = await listen(node2.url as string, bob.client);
    const say = (body: string) =>
      org.owner.json("POST", `/api/chat/channels/${channel}/messages`, { body }, 201);
    await say("before the outage");
    await until("the first message on the other node", () => live.bodies.includes("before the outage"));

    const pid = nats.pid as number;
    process.kill(pid, "SIGKILL");
    await until("the nats-server restarted", () => nats.restarts === 1 && nats.pid !== pid);
    // Posts keep being accepted meanwhile (stored first); fan-out resumes once both nodes have reconnected.
    let n = 0;
    const poster = setInterval(() => void say(`after the outage ${++n}`).catch(() => undefined), 500);
    try {
      await until("a message on the other node after the restart", () =>
        live.bodies.some((b) => b.startsWith("after the outage")),
      );
    } finally {
      clearInterval(poster);
    }
    live.ws.close();
    expect(live.bodies[0]).toBe("before the outage");
  });
});
