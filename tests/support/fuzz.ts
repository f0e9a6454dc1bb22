// Schema-driven bad input for the fuzz test: from each operation's OpenAPI schemas, a valid-looking request
// and, from it, requests with one part wrong at a time (types, sizes, NUL, nesting, numbers).
import { randomUUID } from "node:crypto";

/** A JSON Schema node as zod-openapi writes it (the parts the generator reads). */
export interface Schema {
  $ref?: string;
  type?: string | string[];
  format?: string;
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  pattern?: string;
  default?: unknown;
}

/** Resolves `$ref`s against the document's components. */
export function resolver(doc: { components?: { schemas?: Record<string, Schema> } }) {
  const resolve = (s: Schema | undefined): Schema => {
    let cur = s ?? {};
    for (let i = 0; cur.$ref && i < 20; i++) {
      const name = cur.$ref.split("/").pop() as string;
      cur = doc.components?.schemas?.[name] ?? {};
    }
    return cur;
  };
  return resolve;
}

const typeOf = (s: Schema): string | undefined =>
  Array.isArray(s.type) ? s.type.find((t) => t !== "null") : s.type;

/** A plausible valid value of a schema (required properties only). */
export function sample(s0: Schema, resolve: (s: Schema) => Schema, depth = 0): unknown {
  const s = resolve(s0);
  if (depth > 8) return null;
  if (s.const !== undefined) return s.const;
  if (s.enum?.length) return s.enum[0];
  if (s.default !== undefined) return s.default;
  const alt = s.anyOf ?? s.oneOf;
  if (alt?.length)
    return sample(alt.find((a) => typeOf(resolve(a)) !== "null") ?? alt[0] ?? {}, resolve, depth + 1);
  if (s.allOf?.length) return sample(s.allOf[0] ?? {}, resolve, depth + 1);
  switch (typeOf(s)) {
    case "string":
      if (s.format === "uuid") return randomUUID();
      if (s.format === "email") return `fuzz-${randomUUID().slice(0, 8)}@fuzz.example`;
      if (s.format === "date-time") return new Date(Date.now() + 86_400_000).toISOString();
      if (s.format === "date") return "2027-01-15";
      if (s.format === "uri") return "https://fuzz.example/x";
      return "fuzz".padEnd(Math.max(s.minLength ?? 1, 4), "z").slice(0, s.maxLength ?? 100);
    case "integer":
    case "number":
      return s.minimum ?? 1;
    case "boolean":
      return false;
    case "array":
      return Array.from({ length: s.minItems ?? 0 }, () => sample(s.items ?? {}, resolve, depth + 1));
    case "object": {
      const out: Record<string, unknown> = {};
      for (const k of s.required ?? []) out[k] = sample(s.properties?.[k] ?? {}, resolve, depth + 1);
      return out;
    }
    default:
      return "fuzz";
  }
}

/** A value nested `depth` arrays deep. */
export const deep = (depth: number): unknown => {
  let v: unknown = "x";
  for (let i = 0; i < depth; i++) v = [v];
  return v;
};

/** Bad values for one field: wrong types, sizes, NUL, huge and fractional numbers, deep nesting. */
export function badValues(s: Schema): unknown[] {
  const big = "x".repeat(300_000);
  const common: unknown[] = [
    null,
    {},
    [],
    deep(200),
    "\u0000",
    `a\u0000b`,
    big,
    1e308,
    -1e308,
    2 ** 63,
    0.5,
    -1,
    true,
  ];
  const t = typeOf(s);
  if (t === "string") return [...common, 42, "", " ", "\uFFFF\uD800", "' or 1=1 --", "../../etc/passwd"];
  if (t === "integer" || t === "number") return [...common, "12", Number.MAX_SAFE_INTEGER + 2, -0];
  if (t === "array") return [...common, [null], [big], [deep(50)], Array.from({ length: 5000 }, () => "x")];
  return common;
}

/** Bad path segments (each sent URL-encoded). */
export const BAD_SEGMENTS = [
  "not-a-uuid",
  "\u0000",
  "x".repeat(5000),
  "..",
  "00000000-0000-0000-0000-000000000000",
  "99999999999999999999999",
  "%",
  "é",
];

/** Bad query values. */
export const BAD_QUERY = [
  "\u0000",
  "x".repeat(20_000),
  "-1",
  "1e308",
  "99999999999999999999",
  "NaN",
  "[]",
  "{}",
];
