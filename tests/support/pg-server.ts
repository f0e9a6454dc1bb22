// A PostgreSQL server of a test's own (not the machine's, which other tests share): initdb in a temporary
// directory, on a free loopback port, so a fault test can restart or stop it. Debian's server binaries run as
// the postgres user (initdb refuses root).
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "./slapd.js";
import { APP_ROLE } from "./env.js";

/** A running private PostgreSQL. */
export interface PgServer {
  /** Superuser URL of database `postgres`. */
  url: string;
  port: number;
  /** Restarts it (fast shutdown: sessions are cut, as in a failover). */
  restart(): void;
  stop(): void;
}

const binDir = () => {
  const root = "/usr/lib/postgresql";
  const version = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, "bin", "pg_ctl")))
    .sort((a, b) => Number(b) - Number(a))[0];
  if (!version) throw new Error("no PostgreSQL server binaries under /usr/lib/postgresql");
  return path.join(root, version, "bin");
};

/** Runs a PostgreSQL binary as the postgres user. */
const asPostgres = (bin: string, args: string[]) =>
  execFileSync("runuser", ["-u", "postgres", "--", path.join(binDir(), bin), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 60_000,
  });

/** Initialises and starts a private PostgreSQL with the application role the server needs. */
export async function startPgServer(): Promise<PgServer> {
  const dir = mkdtempSync(path.join(tmpdir(), "ws-pg-"));
  chownSync(dir, Number(execFileSync("id", ["-u", "postgres"]).toString()), 0);
  const data = path.join(dir, "data");
  asPostgres("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
  const port = await freePort();
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100`;
  const ctl = (...args: string[]) => asPostgres("pg_ctl", ["-D", data, "-l", path.join(dir, "log"), ...args]);
  ctl("-o", opts, "-w", "start");
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const pg = (await import("pg")).default;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`create role ${APP_ROLE} nologin nobypassrls`);
  await c.end();
  return {
    url,
    port,
    restart: () => ctl("-o", opts, "-m", "fast", "-w", "restart"),
    stop: () => {
      try {
        ctl("-m", "immediate", "-w", "stop");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
