import type { Context } from "koa";
import { z } from "zod";
import { AppError } from "./errors.js";

/** Parses a value with a zod schema, or throws a 400 AppError with field-level messages. */
export function parseOr400<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const result = schema.safeParse(value);
  if (!result.success) throw AppError.validation(result.error);
  return result.data;
}

/** Validates the JSON body of a request (rejects non-JSON bodies with 415). */
export function validBody<T extends z.ZodType>(ctx: Context, schema: T): z.infer<T> {
  if (ctx.request.length && !ctx.is("application/json")) {
    throw new AppError(415, "unsupported_media_type", "Send the body as application/json.");
  }
  return parseOr400(schema, (ctx.request as { body?: unknown }).body ?? {});
}

/** Validates the query string of a request. */
export function validQuery<T extends z.ZodType>(ctx: Context, schema: T): z.infer<T> {
  return parseOr400(schema, ctx.query);
}
