import { readFileSync, readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Ajv } from "ajv";
import { parse } from "yaml";

const chart = new URL("../../helm/worksynapse/", import.meta.url);
const values = parse(readFileSync(new URL("values.yaml", chart), "utf8")) as Record<string, unknown>;
const schema = JSON.parse(readFileSync(new URL("values.schema.json", chart), "utf8")) as object;

describe("the Helm chart", () => {
  it("has default values that satisfy its values.schema.json, which rejects bad values", () => {
    const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
    expect(validate(values), JSON.stringify(validate.errors)).toBe(true);
    expect(validate({ ...values, nats: { url: "http://not-nats" } })).toBe(false);
    expect(validate({ ...values, surprise: true })).toBe(false);
  });

  it("only refers to values that exist", () => {
    const dir = new URL("templates/", chart);
    const refs = new Set<string>();
    for (const f of readdirSync(dir)) {
      for (const m of readFileSync(new URL(f, dir), "utf8").matchAll(/\.Values\.([A-Za-z0-9_.]+)/g))
        refs.add(m[1] as string);
    }
    expect(refs.size).toBeGreaterThan(10);
    for (const ref of refs) {
      const found = ref
        .split(".")
        .reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], values);
      expect(found, ref).not.toBeUndefined();
    }
  });
});

describe("the compose file", () => {
  it("runs migrations as the owner before core, and core with the external bus and database", () => {
    const compose = parse(
      readFileSync(new URL("../../compose/docker-compose.yml", import.meta.url), "utf8"),
    ) as {
      services: Record<
        string,
        { command?: string[]; environment?: Record<string, string>; depends_on?: object }
      >;
    };
    expect(Object.keys(compose.services).sort()).toEqual(["core", "migrate", "nats", "postgres"]);
    expect(compose.services.migrate?.command).toContain("migrate");
    expect(compose.services.core?.environment?.NATS_URL).toBe("nats://nats:4222");
    expect(compose.services.core?.depends_on).toHaveProperty("migrate");
  });
});
