import { startServer, type RunningServer, type StartOptions } from "../../core/src/server.js";
import type { Config } from "../../core/src/config/schema.js";
import { silentLogger } from "../../core/src/platform/log.js";
import { createTestDatabase, type TestDatabase } from "./pg.js";
import { testConfig } from "./config.js";

/** A running server on a fresh PostgreSQL database and the shared NATS, for one test file. */
export interface TestServer extends RunningServer {
  url: string;
  config: Config;
  pg: TestDatabase;
  /** fetch against the server's base URL. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  close(): Promise<void>;
}

/** Starts a real server (real PostgreSQL, real NATS, loopback HTTP). */
export async function getTestServer(
  opts: StartOptions & {
    env?: Record<string, string>;
    /** A database prepared beforehand (e.g. loaded from a dump); the server takes it and drops it at close. */
    pg?: TestDatabase;
  } = {},
): Promise<TestServer> {
  const pg = opts.pg ?? (await createTestDatabase("srv"));
  const config = testConfig({ DATABASE_URL: pg.url, ...opts.env });
  const server = await startServer(config, silentLogger(), opts);
  const url = server.url as string;
  return {
    ...server,
    url,
    config,
    pg,
    fetch: (path, init) => fetch(url + path, init),
    close: async () => {
      await server.stop();
      await pg.drop();
    },
  };
}
