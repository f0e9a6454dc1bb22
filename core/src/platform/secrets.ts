import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Config } from "../config/schema.js";
import type { Logger } from "./log.js";

/** The installation's master key: configured, or kept in <data dir>/secrets/master.key (created on first start, mode 0600). */
export function ensureMasterKey(config: Config, log: Logger): string {
  if (config.secrets.masterKey) return config.secrets.masterKey;
  const dir = path.join(config.dataDir, "secrets");
  const file = path.join(dir, "master.key");
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(file, randomBytes(48).toString("base64url") + "\n", { mode: 0o600, flag: "wx" });
    chmodSync(file, 0o600);
    log.info({ file }, "created the installation's master key; back it up with the database");
  }
  return readFileSync(file, "utf8").trim();
}
