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

/** Delays between restarts of a nats-server that exited: growing, capped, reset after a minute up. */
const RESTART_DELAYS_MS = [250, 500, 1000, 2000, 5000, 10000];

/**
 * The command that runs nats-server: under `setpriv --pdeathsig KILL` where util-linux has it, so the kernel
 * kills nats-server when the process that started it dies, even by SIGKILL (no orphan holding the port and
 * the JetStream store). Elsewhere the pid file lets the next start stop a leftover one.
 */
function command(bin: string, args: string[]): [string, string[]] {
  const setpriv = findExecutable("setpriv");
  return setpriv ? [setpriv, ["--pdeathsig", "KILL", "--", bin, ...args]] : [bin, args];
}

function findExecutable(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? "").split(path.delimiter).filter(Boolean), "/usr/bin", "/bin"]) {
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      return path.join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Starts nats-server bound to loopback with JetStream in <dataDir>/nats, waits until it listens, and supervises
 * it: when it exits unexpectedly its exit is logged and it is started again on the same port (the bus clients
 * reconnect to it), with growing delays while it keeps failing.
 */
export async function startLocalNats(opts: {
  bin?: string;
  dataDir: string;
  log: Logger;
  /** 0: any free port. */
  port?: number;
}): Promise<LocalNats & { readonly pid: number | undefined; readonly restarts: number }> {
  const bin = findNatsServer(opts.bin);
  if (!bin) throw new NatsBinaryMissing();
  const version = natsServerVersion(bin);
  const dir = path.join(opts.dataDir, "nats");
  const portsDir = path.join(dir, "ports");
  mkdirSync(portsDir, { recursive: true });
  const pidFile = path.join(dir, "nats-server.pid");
  killStale(pidFile, opts.log);

  // sync_interval arrived in 2.10: with it every acknowledged message is fsynced before the ack.
  const syncAlways = atLeast(version, 2, 10);
  if (!syncAlways) {
    opts.log.warn(
      { version },
      "nats-server < 2.10 cannot fsync every write: a killed process loses nothing, but a power cut may lose the last seconds of bus messages (the outbox in the database is re-relayed)",
    );
  }
  const confFile = path.join(dir, "nats-server.conf");
  const writeConf = (listen: string) =>
    writeFileSync(
      confFile,
      [
        `listen: ${listen}`,
        `ports_file_dir: ${JSON.stringify(portsDir)}`,
        `pid_file: ${JSON.stringify(pidFile)}`,
        "jetstream {",
        `  store_dir: ${JSON.stringify(path.join(dir, "jetstream"))}`,
        ...(syncAlways ? ["  sync_interval: always"] : []),
        "}",
      ].join("\n") + "\n",
    );

  let child: ChildProcess | undefined;
  let stopping = false;
  let restarts = 0;
  let failures = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  let exitPromise: Promise<void> = Promise.resolve();

  /** Spawns nats-server and resolves with its client URL once it listens. */
  const spawnOnce = async (): Promise<string> => {
    for (const f of readdirSync(portsDir)) rmSync(path.join(portsDir, f), { force: true });
    const [cmd, args] = command(bin, ["-c", confFile]);
    const proc: ChildProcess = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    child = proc;
    let stderr = "";
    proc.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    const startedAt = Date.now();
    exitPromise = new Promise<void>((resolve) =>
      proc.once("exit", (code, signal) => {
        exited = { code, signal };
        resolve();
        if (stopping || child !== proc) return;
        // Up for a minute: the next failure starts the delays again.
        if (Date.now() - startedAt > 60_000) failures = 0;
        const delay = RESTART_DELAYS_MS[Math.min(failures, RESTART_DELAYS_MS.length - 1)] as number;
        failures += 1;
        opts.log.error(
          {
            pid: proc.pid,
            code,
            signal,
            stderr: stderr.trim().split("\n").slice(-3).join(" | "),
            restartInMs: delay,
          },
          "local nats-server exited; restarting it",
        );
        restartTimer = setTimeout(() => void restart(), delay);
      }),
    );
    const deadline = Date.now() + 15000;
    for (;;) {
      if (exited) {
        const e = exited as { code: number | null; signal: NodeJS.Signals | null };
        throw new Error(`nats-server exited with ${e.code ?? e.signal}: ${stderr.trim().split("\n").pop()}`);
      }
      if (Date.now() > deadline) {
        proc.kill("SIGKILL");
        throw new Error("nats-server did not start within 15 s");
      }
      const file = readdirSync(portsDir).find((f) => f.endsWith(".ports"));
      if (file) {
        const ports = JSON.parse(readFileSync(path.join(portsDir, file), "utf8")) as { nats?: string[] };
        if (ports.nats?.[0]) return ports.nats[0];
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const restart = async () => {
    restartTimer = undefined;
    if (stopping) return;
    try {
      await spawnOnce();
      restarts += 1;
      opts.log.info({ pid: child?.pid, restarts }, "local nats-server restarted");
    } catch (err) {
      // Its exit handler has scheduled the next try already, unless it never started at all.
      if (!restartTimer && !stopping) {
        const delay = RESTART_DELAYS_MS[Math.min(failures++, RESTART_DELAYS_MS.length - 1)] as number;
        opts.log.error({ err, restartInMs: delay }, "local nats-server did not restart");
        restartTimer = setTimeout(() => void restart(), delay);
      }
    }
  };

  writeConf(`127.0.0.1:${opts.port || -1}`);
  const url = await spawnOnce();
  // Restarts listen on the same port, so every client's reconnect finds the new process.
  writeConf(new URL(url).host);
  opts.log.info({ url, version, pid: child?.pid }, "started local nats-server");
  return {
    url,
    version,
    get pid() {
      return child?.pid;
    },
    get restarts() {
      return restarts;
    },
    stop: async () => {
      stopping = true;
      if (restartTimer) clearTimeout(restartTimer);
      const proc = child;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10000);
      await exitPromise;
      clearTimeout(timer);
      rmSync(pidFile, { force: true });
    },
  };
}
