// npm run bench:chat — chat fan-out through WorkSynapse vs a bare `ws` broadcast loop, in the same run:
// N WebSocket clients (default 500) in M channels (default 10); K messages (default 300) posted round robin
// over the channels, each by the channel's next member, 4 in flight: over the socket (as the web UI posts)
// and, second, over HTTP (as integrations post). Figures: deliveries per CPU-second of the serving process (core, or
// the bare loop; PostgreSQL's and NATS's CPU are not counted) and delivery latency p50/p99 (post to receipt,
// measured by this process), each as ours / bare.
import { execFile, execFileSync, fork } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { forkCore } from "./bench/core.mjs";
import { createHash, randomBytes } from "node:crypto";
import pg from "pg";
import WebSocket from "ws";

const run = promisify(execFile);
const root = new URL("..", import.meta.url).pathname;
const N = Number(process.env.BENCH_CHAT_CLIENTS ?? 500);
const M = Number(process.env.BENCH_CHAT_CHANNELS ?? 10);
const K = Number(process.env.BENCH_CHAT_MESSAGES ?? 300);
const IN_FLIGHT = 4;
const PG_URL = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const NATS = process.env.BENCH_NATS_URL ?? "nats://127.0.0.1:4222";

const pct = (xs, p) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const round = (x, d = 3) => Number(x.toFixed(d));
/** User + system CPU seconds of a process so far (Linux). */
const cpu = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
};

/** Connects `count` sockets; `onMessage(i, event)` sees each event; resolves when all are open (and ready). */
async function connectAll(count, urlOf, headersOf, ready) {
  const sockets = [];
  for (let i = 0; i < count; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, count - i) }, (_, k) => {
        const idx = i + k;
        const ws = new WebSocket(urlOf(idx), { headers: headersOf(idx) });
        sockets[idx] = ws;
        return new Promise((resolve, reject) => {
          ws.once("error", reject);
          if (ready) ws.once("message", () => resolve());
          else ws.once("open", resolve);
        });
      }),
    );
  }
  return sockets;
}

/** Posts K messages round robin over the channels, IN_FLIGHT at a time; measures CPU of `pid` and latencies. */
async function measure(pid, sockets, post, perChannel) {
  const latencies = [];
  let delivered = 0;
  const pending = new Map();
  for (const ws of sockets) {
    ws.on("message", (d) => {
      const e = JSON.parse(d.toString());
      if (e.type !== "message") return;
      const tag = /#(\d+) t=([\d.]+)/.exec(e.message.body);
      if (!tag) return;
      latencies.push(performance.now() - Number(tag[2]));
      delivered++;
      const p = pending.get(tag[1]);
      if (p && --p.left === 0) {
        pending.delete(tag[1]);
        p.resolve();
      }
    });
  }
  const c0 = cpu(pid);
  const t0 = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < K) {
      const i = next++;
      const done = new Promise((resolve) => pending.set(String(i), { left: perChannel, resolve }));
      await post(i % M, `message #${i} t=${performance.now()}`);
      await done;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = cpu(pid) - c0;
  return { delivered, cpuSeconds, seconds, p50: pct(latencies, 50), p99: pct(latencies, 99) };
}

// ---------- WorkSynapse ----------
const dbName = `ws_benchchat_${randomBytes(4).toString("hex")}`;
const dbUrl = Object.assign(new URL(PG_URL), { pathname: `/${dbName}` }).toString();
execFileSync("psql", [PG_URL, "-qc", `create database ${dbName}`]);
const env = {
  ...process.env,
  WORKSYNAPSE_DATA_DIR: mkdtempSync(path.join(tmpdir(), "ws-benchchat-")),
  DATABASE_URL: dbUrl,
  NATS_URL: NATS,
  WORKSYNAPSE_NATS_PREFIX: `bc${randomBytes(3).toString("hex")}`,
  WORKSYNAPSE_AUTH_API_PER_MINUTE: "1000000",
  WORKSYNAPSE_HTTP_HOST: "127.0.0.1",
  WORKSYNAPSE_HTTP_PORT: "0",
  WORKSYNAPSE_LOG_LEVEL: "warn",
  WORKSYNAPSE_ROLES: "web",
};
let server;
let bare;
try {
  const cli = path.join(root, "installer/bin/worksynapse.mjs");
  await run(
    process.execPath,
    [cli, "admin", "create", "--org", "Bench", "--email", "bench@example.org", "--name", "Bench"],
    {
      env: { ...env, WORKSYNAPSE_ADMIN_PASSWORD: "violet-harbor-lantern-42" },
    },
  );
  // N people, each in one of M public channels, each with a session: made directly in the database.
  const db = new pg.Client({ connectionString: dbUrl });
  await db.connect();
  const org = (await db.query("select id from organizations limit 1")).rows[0].id;
  const member = (await db.query("select id from roles where org_id = $1 and key = 'member'", [org])).rows[0]
    .id;
  const channelIds = [];
  for (let j = 0; j < M; j++)
    channelIds.push(
      (
        await db.query(
          "insert into chat_channels (org_id, kind, name) values ($1, 'public', $2) returning id",
          [org, `bench-${j}`],
        )
      ).rows[0].id,
    );
  const tokens = [];
  for (let i = 0; i < N; i++) {
    const user = (
      await db.query("insert into users (org_id, email, display_name) values ($1, $2, $3) returning id", [
        org,
        `bench-${i}@example.org`,
        `Bench ${i}`,
      ])
    ).rows[0].id;
    await db.query("insert into user_roles (org_id, user_id, role_id) values ($1, $2, $3)", [
      org,
      user,
      member,
    ]);
    await db.query("insert into chat_members (org_id, channel_id, user_id) values ($1, $2, $3)", [
      org,
      channelIds[i % M],
      user,
    ]);
    const token = randomBytes(32).toString("base64url");
    await db.query(
      "insert into sessions (org_id, user_id, token_hash, expires_at) values ($1, $2, $3, now() + interval '12 hours')",
      [org, user, createHash("sha256").update(token).digest("hex")],
    );
    tokens.push(token);
  }
  await db.end();

  server = forkCore(env);
  const url = await server.url;
  const cookie = (i) => `ws_session=${tokens[i]}`;
  const sockets = await connectAll(
    N,
    () => `${url.replace("http", "ws")}/ws`,
    (i) => ({ cookie: cookie(i), origin: url }),
    true,
  );
  // Posts come from the channel's members in turn (member k of channel c is user c + M * k).
  const perChannel = N / M;
  const posterOf = (channel, i) => channel + M * (Math.floor(i / M) % perChannel);
  let sent = 0;
  // Over the socket, as the web UI posts: a "post" frame; the server answers "posted" (or an error).
  for (const ws of sockets)
    ws.on("message", (d) => {
      const e = JSON.parse(d.toString());
      if (e.type === "error") throw new Error(`post refused: ${JSON.stringify(e)}`);
    });
  const postWs = async (channel, body) => {
    sockets[posterOf(channel, sent++)].send(
      JSON.stringify({ type: "post", channelId: channelIds[channel], body }),
    );
  };
  // Over HTTP, as integrations and bots post: POST /api/chat/channels/{id}/messages.
  const postHttp = async (channel, body) => {
    const r = await fetch(`${url}/api/chat/channels/${channelIds[channel]}/messages`, {
      method: "POST",
      headers: {
        cookie: cookie(posterOf(channel, sent++)),
        origin: url,
        "x-requested-with": "worksynapse",
        "content-type": "application/json",
      },
      body: JSON.stringify({ body }),
    });
    if (r.status !== 201) throw new Error(`post ${r.status} ${await r.text()}`);
  };
  await postHttp(0, "warm-up"); // first request pays for lazy initialisation
  await postWs(0, "warm-up");
  const ours = await measure(server.pid, sockets, postWs, perChannel);
  const oursHttp = await measure(server.pid, sockets, postHttp, perChannel);
  for (const ws of sockets) ws.terminate();

  // ---------- bare ws ----------
  bare = fork(path.join(root, "scripts/bench/ws-bare.mjs"), [], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const port = await new Promise((resolve) => bare.once("message", (m) => resolve(m.port)));
  const bareSockets = await connectAll(
    N,
    (i) => `ws://127.0.0.1:${port}/?channel=${i % M}`,
    () => ({}),
    false,
  );
  // The first client of each channel publishes for it (as the first member posts for ours).
  const bareRaw = await measure(
    bare.pid,
    bareSockets,
    async (channel, body) => bareSockets[channel].send(JSON.stringify({ channel, body })),
    N / M,
  );
  for (const ws of bareSockets) ws.terminate();

  const rate = (r) => r.delivered / r.cpuSeconds;
  const result = {
    clients: N,
    channels: M,
    messages: K,
    deliveries: ours.delivered,
    ours: {
      deliveriesPerCpuSecond: round(rate(ours), 0),
      p50Ms: round(ours.p50, 2),
      p99Ms: round(ours.p99, 2),
      cpuSeconds: round(ours.cpuSeconds, 2),
    },
    bare: {
      deliveriesPerCpuSecond: round(rate(bareRaw), 0),
      p50Ms: round(bareRaw.p50, 2),
      p99Ms: round(bareRaw.p99, 2),
      cpuSeconds: round(bareRaw.cpuSeconds, 2),
    },
    oursOverHttp: {
      deliveriesPerCpuSecond: round(rate(oursHttp), 0),
      p50Ms: round(oursHttp.p50, 2),
      p99Ms: round(oursHttp.p99, 2),
      cpuSeconds: round(oursHttp.cpuSeconds, 2),
      ratio: round(rate(oursHttp) / rate(bareRaw)),
    },
    ratio: {
      deliveriesPerCpuSecond: round(rate(ours) / rate(bareRaw)),
      p50Latency: round(ours.p50 / bareRaw.p50, 2),
      p99Latency: round(ours.p99 / bareRaw.p99, 2),
    },
  };
  console.log(JSON.stringify(result, null, 2));
  console.log(
    `deliveries per CPU-second, ours / bare ws: ${result.ratio.deliveriesPerCpuSecond} (goal >= 0.5)`,
  );
} finally {
  server?.kill("SIGTERM");
  bare?.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 1500));
  execFileSync("psql", [PG_URL, "-qc", `drop database if exists ${dbName} with (force)`]);
}
