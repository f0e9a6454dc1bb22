// npm run bench:chat — chat fan-out through WorkSynapse vs a bare `ws` broadcast loop, in the same run:
// N WebSocket clients (default 500) in M channels (default 10); K messages per round (default 1000) posted round robin
// over the channels, each by the channel's next member, 4 in flight: over the socket (as the web UI posts)
// and over HTTP (as integrations post). Figures: deliveries per CPU-second of the serving process (core, or
// the bare loop; PostgreSQL's and NATS's CPU are not counted) and delivery latency p50/p99 (post to receipt,
// measured by this process), each as ours / bare. Both servers stay up and are measured in alternating rounds
// (BENCH_CHAT_ROUNDS, default 5), so a noisy moment of the shared machine falls on both; the ratio reported is
// the median of the rounds' ratios, each round's shown.
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
// Enough per round for the bare loop's CPU time to span many 10 ms ticks of /proc/<pid>/stat.
const K = Number(process.env.BENCH_CHAT_MESSAGES ?? 1000);
const IN_FLIGHT = 4;
const ROUNDS = Number(process.env.BENCH_CHAT_ROUNDS ?? 5);
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

/** Routes every socket's "message" events to the measurement under way (one listener per socket, for all rounds). */
function track(sockets) {
  const state = { current: null };
  for (const ws of sockets) {
    ws.on("message", (d) => {
      const m = state.current;
      if (!m) return;
      const e = JSON.parse(d.toString());
      if (e.type !== "message") return;
      const tag = /#(\d+) t=([\d.]+)/.exec(e.message.body);
      if (!tag) return;
      m.latencies.push(performance.now() - Number(tag[2]));
      m.delivered++;
      const p = m.pending.get(tag[1]);
      if (p && --p.left === 0) {
        m.pending.delete(tag[1]);
        p.resolve();
      }
    });
  }
  return state;
}

/** Posts K messages round robin over the channels, IN_FLIGHT at a time; measures CPU of `pid` and latencies. */
async function measure(pid, tracked, post, perChannel) {
  const m = { latencies: [], delivered: 0, pending: new Map() };
  tracked.current = m;
  const c0 = cpu(pid);
  const t0 = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < K) {
      const i = next++;
      const done = new Promise((resolve) => m.pending.set(String(i), { left: perChannel, resolve }));
      await post(i % M, `message #${i} t=${performance.now()}`);
      await done;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = cpu(pid) - c0;
  tracked.current = null;
  return {
    delivered: m.delivered,
    cpuSeconds,
    seconds,
    p50: pct(m.latencies, 50),
    p99: pct(m.latencies, 99),
  };
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
  // Connecting everyone (as after a node went away): handshakes, and the presence each colleague hears.
  const connectStart = performance.now();
  const connectCpu = cpu(server.pid);
  const sockets = await connectAll(
    N,
    () => `${url.replace("http", "ws")}/ws`,
    (i) => ({ cookie: cookie(i), origin: url }),
    true,
  );
  await new Promise((r) => setTimeout(r, 500)); // presence is pushed within 200 ms
  const connect = {
    seconds: round((performance.now() - connectStart) / 1000 - 0.5, 2),
    coreCpuSeconds: round(cpu(server.pid) - connectCpu, 2),
  };
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
  const tracked = track(sockets);

  // ---------- bare ws, up at the same time: the two are measured in alternating rounds ----------
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
  const bareTracked = track(bareSockets);
  // The first client of each channel publishes for it (as the first member posts for ours).
  const postBare = async (channel, body) => bareSockets[channel].send(JSON.stringify({ channel, body }));
  await postBare(0, "warm-up");

  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const ours = await measure(server.pid, tracked, postWs, perChannel);
    const bareRaw = await measure(bare.pid, bareTracked, postBare, N / M);
    rounds.push({ ours, bare: bareRaw });
  }
  const oursHttp = await measure(server.pid, tracked, postHttp, perChannel);
  const bareHttp = await measure(bare.pid, bareTracked, postBare, N / M);
  for (const ws of [...sockets, ...bareSockets]) ws.terminate();

  const rate = (r) => r.delivered / r.cpuSeconds;
  const ratios = rounds.map((r) => rate(r.ours) / rate(r.bare));
  const median = [...ratios].sort((a, b) => a - b)[Math.floor(ratios.length / 2)];
  const mid = rounds[ratios.indexOf(median)];
  const figures = (r) => ({
    deliveriesPerCpuSecond: round(rate(r), 0),
    p50Ms: round(r.p50, 2),
    p99Ms: round(r.p99, 2),
    cpuSeconds: round(r.cpuSeconds, 2),
  });
  const result = {
    clients: N,
    channels: M,
    messagesPerRound: K,
    rounds: ROUNDS,
    connect,
    roundRatios: ratios.map((x) => round(x)),
    roundRates: rounds.map((r) => ({ ours: round(rate(r.ours), 0), bare: round(rate(r.bare), 0) })),
    deliveriesPerRound: mid.ours.delivered,
    // The median round:
    ours: figures(mid.ours),
    bare: figures(mid.bare),
    oursOverHttp: { ...figures(oursHttp), ratio: round(rate(oursHttp) / rate(bareHttp)) },
    ratio: {
      deliveriesPerCpuSecond: round(median),
      p50Latency: round(mid.ours.p50 / mid.bare.p50, 2),
      p99Latency: round(mid.ours.p99 / mid.bare.p99, 2),
    },
  };
  console.log(JSON.stringify(result, null, 2));
  console.log(
    `deliveries per CPU-second, ours / bare ws: ${result.ratio.deliveriesPerCpuSecond} (median of ${ROUNDS} rounds: ${result.roundRatios.join(", ")}; goal >= 0.5)`,
  );
} finally {
  server?.kill("SIGTERM");
  bare?.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 1500));
  execFileSync("psql", [PG_URL, "-qc", `drop database if exists ${dbName} with (force)`]);
}
