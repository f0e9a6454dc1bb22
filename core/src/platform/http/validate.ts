import coBody from "co-body";
import type { Context } from "koa";
import { z } from "zod";
import { AppError } from "./errors.js";

/** Deepest nesting of objects and arrays a request may send (no schema of ours goes near it). */
const MAX_DEPTH = 32;

/**
 * The path of the first string (value or key) holding U+0000, which PostgreSQL cannot store, or of the first
 * value nested deeper than MAX_DEPTH; null when there is none.
 */
function badPart(value: unknown, path: (string | number)[] = []): { path: string; message: string } | null {
  if (typeof value === "string")
    return value.includes("\u0000") ? { path: path.join("."), message: "contains a NUL character" } : null;
  if (typeof value !== "object" || value === null) return null;
  if (path.length >= MAX_DEPTH) return { path: path.join("."), message: "nested too deeply" };
  for (const [k, v] of Object.entries(value)) {
    if (k.includes("\u0000")) return { path: [...path, k].join("."), message: "contains a NUL character" };
    const bad = badPart(v, [...path, Array.isArray(value) ? Number(k) : k]);
    if (bad) return bad;
  }
  return null;
}

/** Parses a value with a zod schema, or throws a 400 AppError with field-level messages. */
export function parseOr400<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  // Checked for every body, query and path parameter before the schema: no text with NUL reaches the database.
  const bad = badPart(value);
  if (bad)
    throw new AppError(400, "validation_failed", "The request is not valid.", {
      fields: [{ ...bad, code: "invalid_string" }],
    });
  const result = schema.safeParse(value);
  if (!result.success) throw AppError.validation(result.error);
  return result.data;
}

/** Reads and validates the JSON body of a request: 415 unless JSON, 413 over the limit, 400 if malformed or invalid. */
export async function validBody<T extends z.ZodType>(
  ctx: Context,
  schema: T,
  limit: string,
): Promise<z.infer<T>> {
  let raw: unknown = {};
  if (ctx.request.length || ctx.get("transfer-encoding")) {
    if (!ctx.is("application/json")) {
      throw new AppError(415, "unsupported_media_type", "Send the body as application/json.");
    }
    // Scalars and arrays are parsed too, so the schema (not the parser) reports what is wrong.
    raw = await coBody.json(ctx, { limit, strict: false });
  }
  return parseOr400(schema, raw);
}

/** Validates the query string of a request. */
export function validQuery<T extends z.ZodType>(ctx: Context, schema: T): z.infer<T> {
  return parseOr400(schema, ctx.query);
}
