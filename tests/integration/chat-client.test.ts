// The web UI's chat connection (ui/src/lib/services/messaging.ts) against a real WebSocket server that plays
// the part of core: a message that arrives after a gap is not shown out of order or lost; the client asks for a
// resume from the last message it has and shows what comes back in order, each message once.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";

/** What this test uses of ChatSocket (imported at run time: the UI's code is type-checked by svelte-check). */
interface ChatSocketLike {
  start(): void;
  stop(): void;
  readonly seen: Map<string, number>;
}
type ChatEvent = { type: string; message: { seq: number } };
const { ChatSocket } = (await import(
  /* @vite-ignore */ new URL("../../ui/src/lib/services/messaging.ts", import.meta.url).href
)) as { ChatSocket: new (onEvent: (e: ChatEvent) => void, onState: (v: boolean) => void) => ChatSocketLike };

const CH = "7f1c2a9e-3b4d-4c5e-8f60-718293a4b5c6";
const msg = (seq: number) => ({
  type: "message",
  channelId: CH,
  message: { id: `m${seq}`, channelId: CH, seq, body: `#${seq}` },
});

describe("ChatSocket (the web UI's connection)", () => {
  const server = http.createServer();
  const wss = new WebSocketServer({ server });
  const frames: unknown[] = [];
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    Object.assign(globalThis, { location: { protocol: "http:", host: `127.0.0.1:${port}` }, WebSocket });
    wss.on("connection", (ws) => {
      ws.send(JSON.stringify({ type: "ready", channels: [{ id: CH, lastSeq: 0 }], online: [] }));
      // 1, then 3: number 2 was lost on the way (or is late); 3 again, as live and resume overlap.
      for (const n of [1, 3]) ws.send(JSON.stringify(msg(n)));
      let resumes = 0;
      ws.on("message", (data) => {
        const f = JSON.parse(data.toString()) as { type: string; cursors?: Record<string, number> };
        frames.push(f);
        if (f.type !== "resume") return;
        // The first resume reads up to 4; message 5, committed meanwhile, comes live before its answer.
        const upTo = ++resumes === 1 ? 4 : 5;
        if (resumes === 1) ws.send(JSON.stringify(msg(5)));
        for (let n = (f.cursors?.[CH] ?? 0) + 1; n <= upTo; n++) ws.send(JSON.stringify(msg(n)));
        ws.send(JSON.stringify({ type: "resumed" }));
      });
    });
  });
  afterAll(() => {
    wss.close();
    server.close();
  });

  it("on a gap asks for a resume from the last message it has, then shows each message once, in order", async () => {
    const shown: number[] = [];
    const socket = new ChatSocket(
      (e: ChatEvent) => e.type === "message" && shown.push(e.message.seq),
      () => undefined,
    );
    socket.start();
    for (let i = 0; i < 200 && shown.length < 5; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    socket.stop();
    expect(shown).toEqual([1, 2, 3, 4, 5]);
    // One resume for the gap, from message 1, however many gapped messages came meanwhile; then one more for
    // the message that came live while it was answered but that it did not bring.
    expect(frames.filter((f) => (f as { type: string }).type === "resume")).toEqual([
      { type: "resume", cursors: { [CH]: 1 } },
      { type: "resume", cursors: { [CH]: 4 } },
    ]);
    expect(socket.seen.get(CH)).toBe(5);
  });
});
