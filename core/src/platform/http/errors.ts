import type { Context } from "koa";
import { z } from "zod";

/** The one error type of the API: a stable code, an HTTP status and optional details. */
export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = "AppError";
  }

  static badRequest(message: string, details?: unknown) {
    return new AppError(400, "bad_request", message, details);
  }
  static validation(error: z.ZodError) {
    return new AppError(400, "validation_failed", "The request is not valid.", {
      fields: error.issues.map((i) => ({ path: i.path.join("."), message: i.message, code: i.code })),
    });
  }
  static unauthenticated(message = "Sign in first.") {
    return new AppError(401, "unauthenticated", message);
  }
  static forbidden(message = "You do not have permission to do that.") {
    return new AppError(403, "forbidden", message);
  }
  static notFound(message = "Not found.") {
    return new AppError(404, "not_found", message);
  }
  static conflict(message: string, details?: unknown) {
    return new AppError(409, "conflict", message, details);
  }
  static unavailable(message: string, retryAfterSeconds?: number) {
    return new AppError(
      503,
      "unavailable",
      message,
      undefined,
      retryAfterSeconds ? { "Retry-After": String(retryAfterSeconds) } : undefined,
    );
  }
}

/** The JSON body of every error response. */
export const errorBodySchema = z
  .object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      details: z.unknown().optional(),
    }),
  })
  .meta({ id: "Error" });

/** Maps a thrown value of a known library shape (body parser, Koa) to an AppError, else undefined. */
function fromKnown(err: unknown): AppError | undefined {
  if (err instanceof AppError) return err;
  if (err instanceof z.ZodError) return AppError.validation(err);
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as {
    status?: number;
    statusCode?: number;
    expose?: boolean;
    type?: string;
    message?: string;
  };
  const status = e.status ?? e.statusCode;
  if (typeof status !== "number" || status < 400 || status >= 500) return undefined;
  const code =
    e.type === "entity.too.large"
      ? "payload_too_large"
      : e.type === "entity.parse.failed" || (err instanceof SyntaxError && status === 400)
        ? "malformed_body"
        : e.type === "encoding.unsupported" || status === 415
          ? "unsupported_media_type"
          : status === 404
            ? "not_found"
            : status === 405
              ? "method_not_allowed"
              : "bad_request";
  const message =
    code === "malformed_body"
      ? "The request body is not valid JSON."
      : code === "payload_too_large"
        ? "The request body is too large."
        : e.expose && e.message
          ? e.message
          : "The request is not valid.";
  return new AppError(status, code, message);
}

/** Methods the router serves on a path (for 405 answers); empty when the path is unknown. */
export type AllowedMethods = (path: string) => string[];

/** Writes any thrown value as `{ error: { code, message, details } }`; never a stack or SQL. */
export function renderError(ctx: Context, err: unknown, onUnexpected: (err: unknown) => void): void {
  let appErr = fromKnown(err);
  if (!appErr) {
    onUnexpected(err);
    appErr = new AppError(
      500,
      "internal",
      "Something went wrong on our side. The request id identifies it in the logs.",
    );
  }
  ctx.status = appErr.status;
  if (appErr.headers) ctx.set(appErr.headers);
  ctx.body = {
    error: {
      code: appErr.code,
      message: appErr.message,
      ...(appErr.details !== undefined ? { details: appErr.details } : {}),
    },
  };
}
