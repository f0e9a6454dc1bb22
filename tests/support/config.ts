import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { loadConfig } from "../../core/src/config/load.js";
import type { Config } from "../../core/src/config/schema.js";
import { NATS_URL } from "./env.js";

/** A config for tests: a temp data dir, loopback HTTP on a free port, a unique bus prefix. */
export function testConfig(env: Record<string, string | undefined> = {}): Config {
  const dataDir = mkdtempSync(path.join(tmpdir(), "ws-test-"));
  return loadConfig({
    env: {
      WORKSYNAPSE_DATA_DIR: dataDir,
      WORKSYNAPSE_HTTP_HOST: "127.0.0.1",
      WORKSYNAPSE_HTTP_PORT: "0",
      WORKSYNAPSE_NATS_PREFIX: `t${randomBytes(4).toString("hex")}`,
      NATS_URL,
      WORKSYNAPSE_LOG_LEVEL: "silent",
      ...env,
    },
  });
}
