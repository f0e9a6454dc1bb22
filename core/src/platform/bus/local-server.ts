import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
  accessSync,
  constants,
} from "node:fs";
import path from "node:path";
import type { Logger } from "../log.js";

/** A nats-server process started and supervised by core. */
export interface LocalNats {
  url: string;
  version: string;
  stop(): Promise<void>;
}

/** Raised when no nats-server binary can be found; the message says how to fix it. */
export class NatsBinaryMissing extends Error {
  constructor() {
    super(
      "No nats-server binary found. Install one (Debian: `apt-get install nats-server`), " +
        "point NATS_SERVER_BIN at it, or set NATS_URL to an external NATS server with JetStream.",
    );
    this.name = "NatsBinaryMissing";
  }
}

/** Finds nats-server: the configured path, else PATH, else the usual system folders. */
export function findNatsServer(configured?: string): string | undefined {
  const candidates = configured
    ? [configured]
    : [
        ...(process.env.PATH ?? "").split(path.delimiter).filter(Boolean),
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/bin",
      ].map((dir) => path.join(dir, "nats-server"));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here; try the next
    }
  }
  return undefined;
}

/** Version of a nats-server binary, e.g. "2.9.10". */
export function natsServerVersion(bin: string): string {
  const out = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 5000 });
  const m = /v?(\d+\.\d+\.\d+)/.exec(`${out.stdout}${out.stderr}`);
  if (!m?.[1]) throw new Error(`cannot read the version of ${bin}`);
  return m[1];
}

const atLeast = (v: string, major: number, minor: number) => {
  const [a = 0, b = 0] = v.split(".").map(Number);
  return a > major || (a === major && b >= minor);
};

function killStale(pidFile: string, log: Logger): void {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8"));
  rmSync(pidFile, { force: true });
  if (!(pid > 0)) return;
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (!cmd.includes("nats-server")) return;
    process.kill(pid, "SIGKILL");
    log.warn({ pid }, "stopped a nats-server left over by a previous run");
  } catch {
    // not running any more
  }
}

/** Starts nats-server bound to loopback with JetStream in <dataDir>/nats, waits until it listens. */
export async function startLocalNats(opts: {
  bin?: string;
  dataDir: string;
  log: Logger;
}): Promise<LocalNats> {
  const bin = findNatsServer(opts.bin);
  if (!bin) throw new NatsBinaryMissing();
  const version = natsServerVersion(bin);
  const dir = path.join(opts.dataDir, "nats");
  const portsDir = path.join(dir, "ports");
  mkdirSync(portsDir, { recursive: true });
  const pidFile = path.join(dir, "nats-server.pid");
  killStale(pidFile, opts.log);
  for (const f of readdirSync(portsDir)) rmSync(path.join(portsDir, f), { force: true });

  // sync_interval arrived in 2.10: with it every acknowledged message is fsynced before the ack.
  const syncAlways = atLeast(version, 2, 10);
  if (!syncAlways) {
    opts.log.warn(
      { version },
      "nats-server < 2.10 cannot fsync every write: a killed process loses nothing, but a power cut may lose the last seconds of bus messages (the outbox in the database is re-relayed)",
    );
  }
  const conf = [
    "listen: 127.0.0.1:-1",
    `ports_file_dir: ${JSON.stringify(portsDir)}`,
    `pid_file: ${JSON.stringify(pidFile)}`,
    "jetstream {",
    `  store_dir: ${JSON.stringify(path.join(dir, "jetstream"))}`,
    ...(syncAlways ? ["  sync_interval: always"] : []),
    "}",
  ].join("\n");
  const confFile = path.join(dir, "nats-server.conf");
  writeFileSync(confFile, conf + "\n");

  const child: ChildProcess = spawn(bin, ["-c", confFile], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  let exited: number | null = null;
  const exitPromise = new Promise<void>((resolve) =>
    child.once("exit", (code) => {
      exited = code ?? -1;
      resolve();
    }),
  );

  const deadline = Date.now() + 15000;
  let url: string | undefined;
  while (!url) {
    if (exited !== null)
      throw new Error(`nats-server exited with ${exited}: ${stderr.trim().split("\n").pop()}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error("nats-server did not start within 15 s");
    }
    const file = readdirSync(portsDir).find((f) => f.endsWith(".ports"));
    if (file) {
      const ports = JSON.parse(readFileSync(path.join(portsDir, file), "utf8")) as { nats?: string[] };
      url = ports.nats?.[0];
    }
    if (!url) await new Promise((r) => setTimeout(r, 50));
  }
  opts.log.info({ url, version, pid: child.pid }, "started local nats-server");
  return {
    url,
    version,
    stop: async () => {
      if (exited !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10000);
      await exitPromise;
      clearTimeout(timer);
      rmSync(pidFile, { force: true });
    },
  };
}
