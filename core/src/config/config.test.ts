import { mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, listSettings, loadConfig, redactConfig } from "./load.js";
import { renderConfigTable } from "../../../scripts/config-doc.mjs";

const tmp = () => mkdtempSync(path.join(tmpdir(), "ws-config-"));

describe("config", () => {
  it("has working defaults with no file and no env", () => {
    const dir = tmp();
    const c = loadConfig({ env: { WORKSYNAPSE_DATA_DIR: dir } });
    expect(c.http.port).toBe(8080);
    expect(c.roles).toEqual(["web", "worker"]);
    expect(c.database.url).toBeUndefined();
    expect(c.nats.url).toBeUndefined();
    expect(c.dataDir).toBe(dir);
  });

  it("reads the YAML file, and environment variables override it", () => {
    const dir = tmp();
    writeFileSync(
      path.join(dir, "config.yaml"),
      "http:\n  port: 9000\n  bodyLimit: 2mb\nlog:\n  level: debug\n",
    );
    const c = loadConfig({ env: { WORKSYNAPSE_DATA_DIR: dir, WORKSYNAPSE_HTTP_PORT: "9100" } });
    expect(c.http.port).toBe(9100);
    expect(c.http.bodyLimit).toBe("2mb");
    expect(c.log.level).toBe("debug");
  });

  it("accepts the well-known aliases and comma lists", () => {
    const c = loadConfig({
      env: {
        WORKSYNAPSE_DATA_DIR: tmp(),
        DATABASE_URL: "postgres://127.0.0.1/x",
        NATS_URL: "nats://127.0.0.1:4222",
        WORKSYNAPSE_ROLES: "worker",
      },
    });
    expect(c.database.url).toBe("postgres://127.0.0.1/x");
    expect(c.nats.url).toBe("nats://127.0.0.1:4222");
    expect(c.roles).toEqual(["worker"]);
  });

  it("reads secrets from *_FILE variables and the data directory's master key", () => {
    const dir = tmp();
    const file = path.join(dir, "db-url");
    writeFileSync(file, "postgres://secret@127.0.0.1/db\n");
    const c = loadConfig({ env: { WORKSYNAPSE_DATA_DIR: dir, DATABASE_URL_FILE: file } });
    expect(c.database.url).toBe("postgres://secret@127.0.0.1/db");
    const redacted = redactConfig(c) as { database: { url: string } };
    expect(redacted.database.url).toBe("[redacted]");
    expect(JSON.stringify(redacted)).not.toContain("secret@");
  });

  it("lists every problem readably, with the variable to set", () => {
    const dir = tmp();
    writeFileSync(path.join(dir, "config.yaml"), "http:\n  port: not-a-port\n");
    let err: unknown;
    try {
      loadConfig({
        env: {
          WORKSYNAPSE_DATA_DIR: dir,
          WORKSYNAPSE_ROLES: "web,chef",
          WORKSYNAPSE_LOG_LEVEL: "loud",
          WORKSYNAPSE_SECRETS_MASTER_KEY_FILE: "/nonexistent/key",
        },
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    expect(problems).toHaveLength(4);
    expect(problems.join("\n")).toMatch(/http\.port \(WORKSYNAPSE_HTTP_PORT\)/);
    expect(problems.join("\n")).toMatch(/roles\.1 \(WORKSYNAPSE_ROLES\)/);
    expect(problems.join("\n")).toMatch(/log\.level \(WORKSYNAPSE_LOG_LEVEL\)/);
    expect(problems.join("\n")).toMatch(/WORKSYNAPSE_SECRETS_MASTER_KEY_FILE: cannot read/);
  });

  it("reports a broken YAML file and a missing explicit config file", () => {
    const dir = tmp();
    writeFileSync(path.join(dir, "config.yaml"), "http: [unclosed\n");
    expect(() => loadConfig({ env: { WORKSYNAPSE_DATA_DIR: dir } })).toThrow(/config\.yaml/);
    expect(() => loadConfig({ env: { WORKSYNAPSE_CONFIG: "/nonexistent/ws.yaml" } })).toThrow(
      /does not exist/,
    );
  });

  it("documents every setting: docs/configuration.md matches the schema", () => {
    const doc = readFileSync(new URL("../../../docs/configuration.md", import.meta.url), "utf8");
    expect(doc).toContain(renderConfigTable(listSettings()));
    for (const s of listSettings()) expect(s.description, s.key).not.toBe("");
  });
});
