import coBody from "co-body";
import type { Context } from "koa";
import { z } from "zod";
import { AppError } from "./errors.js";

/** Parses a value with a zod schema, or throws a 400 AppError with field-level messages. */
export function parseOr400<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
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
