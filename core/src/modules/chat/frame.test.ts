import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { textFrame } from "./chat.socket.js";

// Frames made once and written to the socket as they are must read as ordinary text messages to a real ws
// client, at every payload length encoding (7, 16 and 64 bits), between frames ws itself sends.
describe("textFrame", () => {
  const server = http.createServer();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20 });
  let url = "";
  beforeAll(async () => {
    server.on("upgrade", (req, socket: Duplex, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.on("message", (data) => {
          const sizes = JSON.parse(data.toString()) as number[];
          ws.send("ws-first");
          for (const n of sizes) socket.write(textFrame("é".repeat(n / 2) + "x".repeat(n % 2)));
          ws.send("ws-last");
        });
      }),
    );
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    wss.close();
    server.close();
  });

  it("reads as text messages of the right content at every length encoding", async () => {
    const sizes = [0, 1, 124, 125, 126, 127, 65_534, 65_535, 65_536, 70_001];
    const client = new WebSocket(url);
    await new Promise((r) => client.once("open", r));
    const got: string[] = [];
    const done = new Promise<void>((resolve) =>
      client.on("message", (data, binary) => {
        expect(binary).toBe(false);
        got.push(data.toString());
        if (got.length === sizes.length + 2) resolve();
      }),
    );
    client.send(JSON.stringify(sizes));
    await done;
    client.close();
    expect(got[0]).toBe("ws-first");
    expect(got.at(-1)).toBe("ws-last");
    expect(got.slice(1, -1).map((s) => Buffer.byteLength(s))).toEqual(sizes);
    expect(got[3]).toBe("é".repeat(62));
  });
});
