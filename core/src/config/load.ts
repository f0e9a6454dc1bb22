import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { configSchema, type Config } from "./schema.js";

/** One leaf setting of the schema, as listed in docs and used for env overrides. */
export interface SettingInfo {
  path: string[];
  key: string;
  env: string;
  aliases: string[];
  description: string;
  secret: boolean;
  defaultValue: unknown;
  isArray: boolean;
}

/** Well-known variable names accepted next to the WORKSYNAPSE_* ones. */
const ALIASES: Record<string, string[]> = {
  env: ["NODE_ENV"],
  "database.url": ["DATABASE_URL"],
  "database.ownerUrl": ["DATABASE_OWNER_URL"],
  "nats.url": ["NATS_URL"],
  "nats.serverBin": ["NATS_SERVER_BIN"],
};

/** Thrown when the configuration is invalid; `problems` lists each one readably. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

const snake = (s: string) => s.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();

function unwrap(schema: z.ZodType): { inner: z.ZodType; defaultValue: unknown } {
  let s: z.ZodType = schema;
  let defaultValue: unknown;
  for (;;) {
    if (s instanceof z.ZodDefault) {
      defaultValue = s.def.defaultValue;
      s = s.def.innerType as z.ZodType;
    } else if (s instanceof z.ZodOptional) {
      s = s.def.innerType as z.ZodType;
    } else if (s instanceof z.ZodPipe) {
      s = s.def.in as z.ZodType;
    } else return { inner: s, defaultValue };
  }
}

function metaOf(schema: z.ZodType): { description?: string; secret?: boolean } {
  let s: z.ZodType | undefined = schema;
  const out: { description?: string; secret?: boolean } = {};
  while (s) {
    const m = z.globalRegistry.get(s) as { description?: string; secret?: boolean } | undefined;
    out.description ??= m?.description;
    out.secret ??= m?.secret;
    if (s instanceof z.ZodDefault || s instanceof z.ZodOptional) s = s.def.innerType as z.ZodType;
    else if (s instanceof z.ZodPipe) s = s.def.in as z.ZodType;
    else s = undefined;
  }
  return out;
}

/** Lists every leaf setting of the schema with its env name, default and description. */
export function listSettings(schema: z.ZodType = configSchema, prefix: string[] = []): SettingInfo[] {
  const { inner, defaultValue } = unwrap(schema);
  if (inner instanceof z.ZodObject) {
    return Object.entries(inner.shape as Record<string, z.ZodType>).flatMap(([k, v]) =>
      listSettings(v, [...prefix, k]),
    );
  }
  const key = prefix.join(".");
  const meta = metaOf(schema);
  return [
    {
      path: prefix,
      key,
      env: `WORKSYNAPSE_${prefix.map(snake).join("_")}`,
      aliases: ALIASES[key] ?? [],
      description: meta.description ?? "",
      secret: meta.secret === true,
      defaultValue,
      isArray: inner instanceof z.ZodArray,
    },
  ];
}

function setPath(target: Record<string, unknown>, p: string[], value: unknown): void {
  let node = target;
  for (const seg of p.slice(0, -1)) {
    const next = node[seg];
    if (typeof next !== "object" || next === null || Array.isArray(next)) node[seg] = {};
    node = node[seg] as Record<string, unknown>;
  }
  node[p[p.length - 1] as string] = value;
}

function readSecretFile(file: string, name: string, problems: string[]): string | undefined {
  try {
    return readFileSync(file, "utf8").trim();
  } catch (err) {
    problems.push(`${name}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    return undefined;
  }
}

/** Where the config file is looked for: WORKSYNAPSE_CONFIG, else <dataDir>/config.yaml. */
export function configFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.WORKSYNAPSE_CONFIG ?? path.join(env.WORKSYNAPSE_DATA_DIR ?? "./data", "config.yaml");
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Values that win over file and environment (command-line flags). */
  overrides?: Record<string, unknown>;
}

/** Reads the config file, applies environment overrides, validates, and returns the config or throws ConfigError. */
export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  const problems: string[] = [];
  let raw: Record<string, unknown> = {};
  const file = configFilePath(env);
  if (existsSync(file)) {
    try {
      const parsed: unknown = parseYaml(readFileSync(file, "utf8"));
      if (parsed !== null && parsed !== undefined) {
        if (typeof parsed !== "object" || Array.isArray(parsed)) problems.push(`${file}: must be a mapping`);
        else raw = parsed as Record<string, unknown>;
      }
    } catch (err) {
      problems.push(`${file}: ${(err as Error).message.split("\n")[0]}`);
    }
  } else if (env.WORKSYNAPSE_CONFIG) {
    problems.push(`WORKSYNAPSE_CONFIG: file ${file} does not exist`);
  }

  for (const s of listSettings()) {
    for (const name of [s.env, ...s.aliases]) {
      let value: string | undefined = env[name];
      const fileVar = env[`${name}_FILE`];
      if (value === undefined && fileVar !== undefined)
        value = readSecretFile(fileVar, `${name}_FILE`, problems);
      if (value === undefined || value === "") continue;
      setPath(
        raw,
        s.path,
        s.isArray
          ? value
              .split(",")
              .map((v) => v.trim())
              .filter(Boolean)
          : value,
      );
      break;
    }
  }
  for (const [key, value] of Object.entries(opts.overrides ?? {})) {
    if (value !== undefined) setPath(raw, key.split("."), value);
  }

  const result = configSchema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = issue.path.join(".");
      const setting = listSettings().find((s) => key === s.key || key.startsWith(`${s.key}.`));
      problems.push(`${key || "(root)"}${setting ? ` (${setting.env})` : ""}: ${issue.message}`);
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  const config = result.data;
  config.dataDir = path.resolve(config.dataDir);
  if (!config.secrets.masterKey) {
    const keyFile = path.join(config.dataDir, "secrets", "master.key");
    if (existsSync(keyFile)) config.secrets.masterKey = readFileSync(keyFile, "utf8").trim();
  }
  return config;
}

/** A copy of the config with every secret replaced by "[redacted]" (for `config print`). */
export function redactConfig(config: Config): Record<string, unknown> {
  const copy = structuredClone(config) as unknown as Record<string, unknown>;
  for (const s of listSettings()) {
    if (!s.secret) continue;
    let node: Record<string, unknown> | undefined = copy;
    for (const seg of s.path.slice(0, -1)) node = node?.[seg] as Record<string, unknown> | undefined;
    const last = s.path[s.path.length - 1] as string;
    if (node && node[last] !== undefined) node[last] = "[redacted]";
  }
  return copy;
}
