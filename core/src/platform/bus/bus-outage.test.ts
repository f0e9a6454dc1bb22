// A queue consumer across a bus outage of several seconds: the nats-server is killed and comes back on the
// same port (as after a restart of the web process that supervises it). The consumer must neither crash the
// process nor stop: a job enqueued after the outage is handled.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { silentLogger } from "../log.js";
import { findNatsServer } from "./local-server.js";
import { connectBus, type Bus } from "./bus.js";
import { defineQueue } from "./topology.js";
import { freePort } from "../../../../tests/support/slapd.js";

const dir = mkdtempSync(path.join(tmpdir(), "ws-bus-outage-"));
let nats: ChildProcess | undefined;
let bus: Bus | undefined;
const conf = path.join(dir, "nats.conf");

async function startNats(port: number): Promise<void> {
  writeFileSync(
    conf,
    `listen: 127.0.0.1:${port}\njetstream { store_dir: ${JSON.stringify(path.join(dir, "js"))} }\n`,
  );
  nats = spawn(findNatsServer() as string, ["-c", conf], { stdio: "ignore" });
  const end = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = new net.Socket();
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
      s.connect(port, "127.0.0.1");
    }).catch(() => false);
    if (ok) return;
    if (Date.now() > end) throw new Error("nats-server did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
}

afterAll(async () => {
  await bus?.close().catch(() => undefined);
  nats?.kill("SIGKILL");
});

describe("a queue consumer across a bus outage", () => {
  it("keeps the process up and handles jobs again once the server is back", async () => {
    const rejections: unknown[] = [];
    const onRejection = (r: unknown) => rejections.push(r);
    process.on("unhandledRejection", onRejection);
    try {
      const port = await freePort();
      await startNats(port);
      const q = defineQueue("outage", z.object({ n: z.number() }), { ackWaitMs: 2000, concurrency: 1 });
      bus = await connectBus({
        url: `nats://127.0.0.1:${port}`,
        prefix: `t${randomBytes(4).toString("hex")}`,
        name: "outage-test",
        log: silentLogger(),
        deadLetters: async () => undefined,
        extraQueues: [q],
      });
      const seen: number[] = [];
      await bus.work(q, async (job) => {
        seen.push(job.payload.n);
      });
      await bus.enqueue(q, { n: 1 }, randomUUID());
      const until = async (ok: () => boolean, ms: number) => {
        const end = Date.now() + ms;
        while (!ok()) {
          if (Date.now() > end) throw new Error(`not in time; seen ${JSON.stringify(seen)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      await until(() => seen.includes(1), 10_000);
      nats?.kill("SIGKILL");
      await new Promise((r) => setTimeout(r, 8000));
      await startNats(port);
      const deadline = Date.now() + 20_000;
      // Enqueued once the client is back (a publish while it reconnects may time out and is retried here).
      for (;;) {
        try {
          await bus.enqueue(q, { n: 2 }, "after-outage");
          break;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      await until(() => seen.includes(2), 30_000);
      expect(rejections).toEqual([]);
    } finally {
      process.off("unhandledRejection", onRejection);
    }
  }, 90_000);
});
