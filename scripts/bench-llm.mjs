// npm run bench:llm — local inference through WorkSynapse vs raw node-llama-cpp on the same model and
// settings, each figure a ratio measured in the same run:
//   generation tokens/s through the SSE endpoint vs raw (goal >= 0.9), end to end and as a decode rate (after
//   the first token); time-to-first-token overhead (ms);
//   aggregate tokens/s of 4 concurrent clients vs 1 (goal >= 1.5); raw tokens/s with 2 threads vs 1;
//   the assistant's agent loop: wall time per step against the model calls (node-llama-cpp) inside it.
//   --remote: the same model through an inference process over NATS vs in the web process (goal >= 0.95).
// Uses ../shared/models/stories260K.gguf (or BENCH_MODEL). Server and raw runs use the same settings
// (1 inference thread, 4 sequences, context 2048, the sequences spread over as many contexts as the server's
// default makes) on the same, otherwise idle, cores; the 4-vs-1 figure is also given for raw on one context.
// Server and raw measurements alternate round by round, so that drift on a shared machine hits both.
import { execFile, execFileSync, fork } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { forkCore, POOL_ENV } from "./bench/core.mjs";
import { createHash, randomBytes } from "node:crypto";
import pg from "pg";

const run = promisify(execFile);
const root = new URL("..", import.meta.url).pathname;
// --production: a generated model sized like a small production one (scripts/make-tiny-model.ts
// PRODUCTION_LIKE, decoding at tens of tokens/s here), and only the figures asked of it: generation and decode
// through the API vs raw (goal >= 0.97) and the time-to-first-token overhead (goal p50 < 10 ms).
const PRODUCTION = process.argv.includes("--production");
const MODEL =
  process.env.BENCH_MODEL ??
  (PRODUCTION ? await productionModel() : path.resolve(root, "../shared/models/stories260K.gguf"));
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const MAX_TOKENS = PRODUCTION ? 128 : 200;

/** The production-like model, generated once into the temp folder (the generator is TypeScript: transpiled). */
async function productionModel() {
  const source = readFileSync(path.join(root, "scripts/make-tiny-model.ts"), "utf8");
  const id = createHash("sha256").update(source).digest("hex").slice(0, 12);
  const file = path.join(tmpdir(), `worksynapse-bench-production-like-${id}.gguf`);
  if (existsSync(file)) return file;
  const ts = (await import("typescript")).default;
  const js = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const gen = path.join(mkdtempSync(path.join(tmpdir(), "ws-gen-")), "make-model.mjs");
  writeFileSync(gen, js);
  const { makeTinyModel, PRODUCTION_LIKE } = await import(gen);
  makeTinyModel(`${file}.partial`, PRODUCTION_LIKE);
  renameSync(`${file}.partial`, file);
  return file;
}
// --remote: the same model served by a process with the inference role, used over NATS by a web process with
// ai.remote, against this web process with the model in it (goal >= 0.95); both alternate request by request.
const REMOTE = process.argv.includes("--remote");
const PROMPT = "Once upon a time";
const PG = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const NATS = process.env.BENCH_NATS_URL ?? "nats://127.0.0.1:4222";
if (!existsSync(MODEL)) throw new Error(`no model at ${MODEL}; set BENCH_MODEL`);

// Between alternating measurements: what one side does after its last token (the server's accounting, a
// child's clean-up) must not run into the other's.
const settle = () => new Promise((r) => setTimeout(r, 50));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/**
 * A raw node-llama-cpp child (bench/llm-raw.mjs) with its own model and contexts, kept up so that its rounds
 * alternate with the server's: `run(clients, runs)` gives per-round { tokens, ms, firstMs }. The pool size is
 * the server's (the launchers set it).
 */
async function raw(threads, contexts) {
  const child = fork(
    new URL("./bench/llm-raw.mjs", import.meta.url).pathname,
    [MODEL, String(threads), String(contexts), String(MAX_TOKENS), PROMPT],
    { stdio: ["ignore", "inherit", "inherit", "ipc"], env: { ...process.env, ...POOL_ENV } },
  );
  let pending;
  child.on("message", (m) => pending?.resolve(m));
  child.on("exit", (code) => code && pending?.reject(new Error(`raw run exited ${code}`)));
  const next = () => new Promise((resolve, reject) => (pending = { resolve, reject }));
  await next(); // ready (loaded and warm)
  return {
    run: (clients, runs = 1) => {
      const reply = next();
      child.send({ clients, runs });
      return reply;
    },
    close: () => child.disconnect(),
  };
}

/** One chat through the SSE endpoint: tokens, total ms, first- and last-token ms, measured by the client. */
async function viaServer(url, key) {
  const t0 = performance.now();
  const r = await fetch(`${url}/api/ai/chat`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": key },
    body: JSON.stringify({
      model: "bench",
      messages: [{ role: "user", content: PROMPT }],
      maxTokens: MAX_TOKENS,
    }),
  });
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let first = 0;
  let last = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const chunk = decoder.decode(value, { stream: true });
    text += chunk;
    if (chunk.includes("event: token")) {
      last = performance.now();
      first ||= last;
    }
  }
  const ms = performance.now() - t0;
  const done = JSON.parse(/event: done\ndata: (.*)\n/.exec(text)?.[1] ?? "null");
  if (!done) throw new Error(`no done event: ${text.slice(0, 300)}`);
  // The server's own timing of the generation (from the handler, after admission, to the last token).
  const serverDecodeTps =
    (done.usage.completionTokens - 1) / ((done.timing.ms - done.timing.firstTokenMs) / 1000);
  return {
    tokens: done.usage.completionTokens,
    ms,
    firstMs: first - t0,
    lastMs: last - t0,
    serverDecodeTps,
    serverFirstMs: done.timing.firstTokenMs,
  };
}

/** Remote inference (an inference process over NATS) against local, on the same model and settings. */
async function remoteVsLocal(localUrl, key) {
  const node = forkCore(env, ["--roles", "inference"]);
  const web = forkCore({ ...env, WORKSYNAPSE_AI_REMOTE: "true" }, ["--roles", "web"]);
  try {
    await node.inference;
    const remoteUrl = await web.url;
    for (let i = 0; i < 4; i++) await viaServer(remoteUrl, key); // loads the model on the node, warms up
    const local = [];
    const remote = [];
    for (let i = 0; i < 2 * ROUNDS; i++) {
      local.push(await viaServer(localUrl, key));
      await settle();
      remote.push(await viaServer(remoteUrl, key));
      await settle();
    }
    const tps = (r) => r.tokens / (r.ms / 1000);
    const decodeTps = (r) => (r.tokens - 1) / ((r.lastMs - r.firstMs) / 1000);
    const report = {
      model: PRODUCTION ? "generated, PRODUCTION_LIKE (scripts/make-tiny-model.ts)" : path.basename(MODEL),
      rounds: 2 * ROUNDS,
      maxTokens: MAX_TOKENS,
      tokensPerRequest: median(remote.map((r) => r.tokens)),
      generation: {
        localTokensPerSecond: median(local.map(tps)),
        remoteTokensPerSecond: median(remote.map(tps)),
        ratio: Number((median(remote.map(tps)) / median(local.map(tps))).toFixed(3)),
        goal: 0.95,
      },
      decode: {
        localTokensPerSecond: median(local.map(decodeTps)),
        remoteTokensPerSecond: median(remote.map(decodeTps)),
        ratio: Number((median(remote.map(decodeTps)) / median(local.map(decodeTps))).toFixed(3)),
      },
      timeToFirstToken: {
        localMs: median(local.map((r) => r.firstMs)),
        remoteMs: median(remote.map((r) => r.firstMs)),
        overheadMs: Number(
          (median(remote.map((r) => r.firstMs)) - median(local.map((r) => r.firstMs))).toFixed(2),
        ),
      },
    };
    mkdirSync("test-results", { recursive: true });
    writeFileSync(
      `test-results/bench-llm-remote${PRODUCTION ? "-production" : ""}.json`,
      JSON.stringify(report, null, 2),
    );
    console.log(JSON.stringify(report, null, 2));
  } finally {
    node.kill("SIGTERM");
    web.kill("SIGTERM");
  }
}

const dbName = `ws_benchllm_${randomBytes(4).toString("hex")}`;
const dbUrl = Object.assign(new URL(PG), { pathname: `/${dbName}` }).toString();
execFileSync("psql", [PG, "-qc", `create database ${dbName}`]);
const dataDir = mkdtempSync(path.join(tmpdir(), "ws-benchllm-"));
const env = {
  ...process.env,
  WORKSYNAPSE_DATA_DIR: dataDir,
  DATABASE_URL: dbUrl,
  NATS_URL: NATS,
  WORKSYNAPSE_NATS_PREFIX: `bl${randomBytes(3).toString("hex")}`,
  WORKSYNAPSE_AI_THREADS: "1",
  WORKSYNAPSE_AI_PARALLEL: "4",
  WORKSYNAPSE_AI_CONTEXT_SIZE: "2048",
  WORKSYNAPSE_AUTH_API_PER_MINUTE: "100000",
  WORKSYNAPSE_HTTP_HOST: "127.0.0.1",
  WORKSYNAPSE_HTTP_PORT: "0",
  WORKSYNAPSE_LOG_LEVEL: "info",
};
let server;
try {
  await run(
    process.execPath,
    [path.join(root, "installer/bin/worksynapse.mjs"), "models", "import", MODEL, "--name", "bench"],
    { env },
  );
  await run(
    process.execPath,
    [
      path.join(root, "installer/bin/worksynapse.mjs"),
      "admin",
      "create",
      "--org",
      "Bench",
      "--email",
      "bench@example.org",
      "--name",
      "Bench",
    ],
    {
      env: { ...env, WORKSYNAPSE_ADMIN_PASSWORD: "violet-harbor-lantern-42" },
    },
  );
  server = forkCore(env);
  const url = await server.url;
  const login = await fetch(`${url}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: url },
    body: JSON.stringify({ email: "bench@example.org", password: "violet-harbor-lantern-42" }),
  });
  const cookie = login.headers.getSetCookie()[0].split(";")[0];
  const keyRes = await fetch(`${url}/api/api-keys`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-requested-with": "worksynapse", origin: url, cookie },
    body: JSON.stringify({ name: "bench", permissions: ["ai.chat", "assistant.use"] }),
  });
  const key = (await keyRes.json()).data.key;
  await viaServer(url, key); // loads the model
  const listed = await (await fetch(`${url}/api/ai/models`, { headers: { cookie } })).json();
  // How many contexts the server spread its 4 sequences over (its default for these settings).
  const serverContexts = listed.data.models.find((m) => m.name === "bench").contexts;

  for (let i = 0; i < 3; i++) await viaServer(url, key); // warm-up, as the raw runs have
  against: {
    if (REMOTE) {
      await remoteVsLocal(url, key);
      break against;
    }
    const rawServer = await raw(1, serverContexts);
    // Alternating one server request with one raw round, so that drift on this shared machine hits both.
    const ours = [];
    const rawRuns = [];
    for (let i = 0; i < 2 * ROUNDS; i++) {
      ours.push(await viaServer(url, key));
      await settle();
      rawRuns.push(...(await rawServer.run(1)));
      await settle();
    }
    const tps = (r) => r.tokens / (r.ms / 1000);
    const oursTps = median(ours.map(tps));
    const rawTps = median(rawRuns.map(tps));
    const ttftOverhead = median(ours.map((r) => r.firstMs)) - median(rawRuns.map((r) => r.firstMs));
    // The decode rate, as llama.cpp reports "eval" apart from prompt processing: tokens after the first, over the
    // time from the first to the last (time to first token is its own figure).
    const decodeTps = (r) => (r.tokens - 1) / ((r.lastMs - r.firstMs) / 1000);
    const oursDecode = median(ours.map(decodeTps));
    const rawDecode = median(rawRuns.map(decodeTps));

    // One request at a time, ours against raw: the figures both modes report (goals: see the header).
    const single = {
      tokensPerRequest: median(ours.map((r) => r.tokens)),
      generation: {
        oursTokensPerSecond: oursTps,
        rawTokensPerSecond: rawTps,
        ratio: Number((oursTps / rawTps).toFixed(3)),
        goal: PRODUCTION ? 0.97 : 0.9,
      },
      decode: {
        oursTokensPerSecond: oursDecode,
        rawTokensPerSecond: rawDecode,
        ratio: Number((oursDecode / rawDecode).toFixed(3)),
        ...(PRODUCTION && { goal: 0.97 }),
        // As the server timed it (whole milliseconds): what of the gap is in generation, not HTTP.
        serverSideTokensPerSecond: median(ours.map((r) => r.serverDecodeTps)),
      },
      timeToFirstToken: {
        oursMs: median(ours.map((r) => r.firstMs)),
        rawMs: median(rawRuns.map((r) => r.firstMs)),
        overheadMs: Number(ttftOverhead.toFixed(2)),
        ...(PRODUCTION && { goalMs: 10 }),
        // As the server timed it, from its handler (after authentication and admission) to the first token.
        serverSideMs: median(ours.map((r) => r.serverFirstMs)),
      },
    };

    if (PRODUCTION) {
      rawServer.close();
      const report = {
        model: "generated, PRODUCTION_LIKE (scripts/make-tiny-model.ts)",
        rounds: ROUNDS,
        maxTokens: MAX_TOKENS,
        ...single,
      };
      mkdirSync("test-results", { recursive: true });
      writeFileSync("test-results/bench-llm-production.json", JSON.stringify(report, null, 2));
      console.log(JSON.stringify(report, null, 2));
    } else {
      const aggregate = async (clients) => {
        const t0 = performance.now();
        const results = await Promise.all(Array.from({ length: clients }, () => viaServer(url, key)));
        return results.reduce((n, r) => n + r.tokens, 0) / ((performance.now() - t0) / 1000);
      };
      // 1 vs 4 clients, alternating, through the server and on raw node-llama-cpp with the server's contexts; and
      // raw on one context of 4 sequences (batching only).
      const rawBatched = await raw(1, 1);
      const one = [];
      const four = [];
      const rawOne = [];
      const rawFour = [];
      const batchedOne = [];
      const batchedFour = [];
      for (let i = 0; i < ROUNDS; i++) {
        one.push(await aggregate(1));
        four.push(await aggregate(4));
        rawOne.push(tps((await rawServer.run(1))[0]));
        rawFour.push(tps((await rawServer.run(4))[0]));
        batchedOne.push(tps((await rawBatched.run(1))[0]));
        batchedFour.push(tps((await rawBatched.run(4))[0]));
      }
      rawServer.close();

      // Threads, 1 vs 2, on one context, alternating.
      const rawTwoThreads = await raw(2, 1);
      const t1 = [];
      const t2 = [];
      for (let i = 0; i < ROUNDS; i++) {
        t1.push(tps((await rawBatched.run(1))[0]));
        t2.push(tps((await rawTwoThreads.run(1))[0]));
      }
      rawBatched.close();
      rawTwoThreads.close();

      // The agent loop: runs through the assistant's streaming route, as the browser makes them. Each step's model
      // call (prompt evaluation, grammar-constrained generation) is timed inside the loop and logged; what the
      // client waits beyond those calls is the loop's own overhead: HTTP and authentication, the run and step
      // rows, tool calls, the event stream.
      const db = new pg.Client({ connectionString: dbUrl });
      await db.connect();
      const agent = [];
      for (let i = 0; i < ROUNDS + 1; i++) {
        const conv = await (
          await fetch(`${url}/api/assistant/conversations`, {
            method: "POST",
            headers: { "content-type": "application/json", "x-api-key": key },
            body: "{}",
          })
        ).json();
        const t0 = performance.now();
        const r = await fetch(`${url}/api/assistant/conversations/${conv.data.id}/messages`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-api-key": key },
          body: JSON.stringify({ content: "Once upon a time, what happened next?", grounded: false }),
        });
        const text = await r.text();
        const wallMs = performance.now() - t0;
        const runId = /"runId":"([0-9a-f-]+)"/.exec(text)?.[1];
        const steps = (
          await db.query(
            "select latency_ms, prompt_tokens, completion_tokens from ai_run_steps where run_id = $1 and kind <> 'retrieval'",
            [runId],
          )
        ).rows;
        const modelMs = steps.reduce((n, s) => n + s.latency_ms, 0);
        if (i > 0 && steps.length)
          agent.push({
            steps: steps.length,
            wallMs,
            modelMs,
            tokens: steps.reduce((n, s) => n + s.prompt_tokens + s.completion_tokens, 0),
          });
      }
      await db.end();
      const perStep = (f) => median(agent.map((a) => f(a) / a.steps));

      const report = {
        model: path.basename(MODEL),
        rounds: ROUNDS,
        maxTokens: MAX_TOKENS,
        ...single,
        concurrency: {
          oneClientTokensPerSecond: median(one),
          fourClientsTokensPerSecond: median(four),
          ratio: Number((median(four) / median(one)).toFixed(3)),
          goal: 1.5,
          contexts: serverContexts,
          rawRatio: Number((median(rawFour) / median(rawOne)).toFixed(3)),
          rawOneContextRatio: Number((median(batchedFour) / median(batchedOne)).toFixed(3)),
        },
        agent: {
          runs: agent.length,
          stepsPerRun: median(agent.map((a) => a.steps)),
          wallMsPerStep: Number(perStep((a) => a.wallMs).toFixed(1)),
          modelMsPerStep: Number(perStep((a) => a.modelMs).toFixed(1)),
          overheadMsPerStep: Number(perStep((a) => a.wallMs - a.modelMs).toFixed(1)),
          ratio: Number(median(agent.map((a) => a.wallMs / a.modelMs)).toFixed(3)),
          tokensPerStep: perStep((a) => a.tokens),
        },
        threads: {
          oneThreadTokensPerSecond: median(t1),
          twoThreadsTokensPerSecond: median(t2),
          ratio: Number((median(t2) / median(t1)).toFixed(3)),
        },
      };
      mkdirSync("test-results", { recursive: true });
      writeFileSync("test-results/bench-llm.json", JSON.stringify(report, null, 2));
      console.log(JSON.stringify(report, null, 2));
    }
  }
} finally {
  server?.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 1500));
  execFileSync("psql", [PG, "-qc", `drop database if exists ${dbName} with (force)`]);
}
