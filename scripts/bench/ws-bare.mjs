// The baseline of bench:chat: a bare `ws` broadcast loop. Clients connect with ?channel=N; a frame
// {"channel":N,...} from any client is sent, serialized once, to every socket of that channel.
import { WebSocketServer } from "ws";

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
const channels = new Map();
wss.on("connection", (ws, req) => {
  const channel = new URL(req.url, "http://x").searchParams.get("channel");
  if (!channels.has(channel)) channels.set(channel, new Set());
  channels.get(channel).add(ws);
  ws.on("close", () => channels.get(channel).delete(ws));
  ws.on("message", (data) => {
    const msg = JSON.parse(data.toString());
    const text = JSON.stringify({ type: "message", channelId: String(msg.channel), message: msg });
    for (const peer of channels.get(String(msg.channel)) ?? []) peer.send(text);
  });
});
wss.on("listening", () => process.send?.({ port: wss.address().port }));
process.on("message", (m) => m === "stop" && process.exit(0));
