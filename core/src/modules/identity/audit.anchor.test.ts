import { createSocket } from "node:dgram";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  checkpointKeys,
  checkpointMessage,
  checkpointValid,
  readCheckpoints,
  sinkOf,
  type Checkpoint,
} from "./audit.anchor.js";
import { sign } from "node:crypto";

const MASTER = "m".repeat(48);
const keys = checkpointKeys(MASTER);
const body = {
  org: "0b5e6f1c-9a53-4d6c-9d4e-6c1f3e1b2a10",
  seq: 42,
  hash: "ab".repeat(32),
  at: new Date().toISOString(),
};
const cp: Checkpoint = {
  v: 1,
  ...body,
  sig: sign(null, Buffer.from(checkpointMessage(body)), keys.privateKey).toString("base64"),
};

describe("audit checkpoints", () => {
  it("are signed with a key derived from the master key and fail when any field changes", () => {
    expect(checkpointValid(checkpointKeys(MASTER).publicKey, cp)).toBe(true);
    expect(checkpointValid(keys.publicKey, { ...cp, seq: 41 })).toBe(false);
    expect(checkpointValid(keys.publicKey, { ...cp, hash: "cd".repeat(32) })).toBe(false);
    expect(checkpointValid(checkpointKeys("x".repeat(48)).publicKey, cp)).toBe(false);
  });

  it("reach a syslog collector over UDP as RFC 5424 messages", async () => {
    const server = createSocket("udp4");
    const got = new Promise<string>((resolve) => server.once("message", (m) => resolve(m.toString())));
    await new Promise<void>((r) => server.bind(0, "127.0.0.1", () => r()));
    const sink = sinkOf(`syslog://127.0.0.1:${server.address().port}`);
    await sink?.(cp);
    const msg = await got;
    server.close();
    expect(msg).toMatch(/^<110>1 \S+Z \S+ worksynapse \d+ audit-checkpoint - \{/);
    expect(JSON.parse(msg.slice(msg.indexOf("{")))).toEqual(cp);
  });

  it("reach a syslog collector over TCP with octet-counting framing", async () => {
    let data = "";
    const server = net.createServer((s) => s.on("data", (d) => (data += d.toString())));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as net.AddressInfo).port;
    await sinkOf(`syslog+tcp://127.0.0.1:${port}`)?.(cp);
    await new Promise((r) => setTimeout(r, 100));
    server.close();
    const [len, ...rest] = data.split(" ");
    expect(Number(len)).toBe(Buffer.byteLength(rest.join(" ")));
    expect(rest.join(" ")).toContain(cp.sig);
  });

  it("a last line cut off by a crash is not taken for a checkpoint nor for tampering; an edited one is", () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), "ws-cp-")), "checkpoints.jsonl");
    const line = JSON.stringify(cp);
    writeFileSync(file, `${line}\n${line.slice(0, 40)}`);
    expect(readCheckpoints(file, keys.publicKey)).toMatchObject({ count: 1, invalid: 0 });
    writeFileSync(file, `${line}\n${JSON.stringify({ ...cp, seq: 43 })}\n`);
    expect(readCheckpoints(file, keys.publicKey)).toMatchObject({ count: 1, invalid: 1 });
  });

  it("are appended to a file sink as JSON lines", async () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), "ws-sink-")), "audit.jsonl");
    await sinkOf(file)?.(cp);
    await sinkOf(file)?.(cp);
    expect(
      readFileSync(file, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l)),
    ).toEqual([cp, cp]);
  });
});
