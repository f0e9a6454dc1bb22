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

/**
 * PostgreSQL errors caused by what a client sent, as clear 4xx answers (SQLSTATE -> status, code, message).
 * Services check what they can first; this is the net under them, so a database error never reaches a
 * client raw nor as a 500.
 */
const DB_DOWN = "The database is not reachable right now. Try again in a moment.";
const DATABASE_ERRORS: Record<string, [number, string, string]> = {
  "22021": [400, "invalid_text", "A text value holds a character that cannot be stored."],
  "22P05": [400, "invalid_text", "A text value holds a character that cannot be stored."],
  "22001": [400, "value_too_long", "A value is longer than allowed."],
  "54000": [400, "value_too_large", "A value is too large to store."],
  "22003": [400, "number_out_of_range", "A number is out of range."],
  "2201W": [400, "number_out_of_range", "A number is out of range."],
  "2201X": [400, "number_out_of_range", "A number is out of range."],
  "22P02": [400, "invalid_value", "A value is not in the expected format."],
  "22007": [400, "invalid_value", "A date or time is not valid."],
  "22008": [400, "invalid_value", "A date or time is out of range."],
  "23505": [409, "conflict", "This conflicts with an existing record."],
  "23503": [409, "conflict", "This refers to a record that does not exist or is still in use."],
  // The database going away (restart, failover): not the request's fault, and worth trying again.
  "57P01": [503, "database_unavailable", DB_DOWN],
  "57P02": [503, "database_unavailable", DB_DOWN],
  "57P03": [503, "database_unavailable", DB_DOWN],
  "08000": [503, "database_unavailable", DB_DOWN],
  "08003": [503, "database_unavailable", DB_DOWN],
  "08006": [503, "database_unavailable", DB_DOWN],
};

/** The AppError for a PostgreSQL error a client caused, else undefined. */
export function fromDatabase(err: unknown): AppError | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string" || !/^[0-9A-Z]{5}$/.test(code)) return undefined;
  const known = DATABASE_ERRORS[code];
  if (!known) return undefined;
  return new AppError(
    known[0],
    known[1],
    known[2],
    undefined,
    known[0] === 503 ? { "Retry-After": "5" } : undefined,
  );
}

/** Maps a thrown value of a known library shape (body parser, Koa, database) to an AppError, else undefined. */
function fromKnown(err: unknown): AppError | undefined {
  if (err instanceof AppError) return err;
  if (err instanceof z.ZodError) return AppError.validation(err);
  if (typeof err !== "object" || err === null) return undefined;
  const db = fromDatabase(err);
  if (db) return db;
  // A connection to the database that was cut, or a pool with none free in time.
  const name = (err as { name?: unknown }).name;
  if (
    name === "KnexTimeoutError" ||
    /Connection terminated|connection is closed/i.test(String((err as { message?: unknown }).message))
  )
    return new AppError(503, "database_unavailable", DB_DOWN, undefined, { "Retry-After": "5" });
  // A service the server depends on refused or dropped the connection (the database restarting, most often).
  const sysCode = (err as { code?: unknown }).code;
  if (sysCode === "ECONNREFUSED" || sysCode === "ECONNRESET")
    return new AppError(
      503,
      "unavailable",
      "A service the server depends on is not reachable right now. Try again in a moment.",
      undefined,
      { "Retry-After": "5" },
    );
  // The data disk is full: not the client's fault, and nothing was stored; said plainly.
  if ((err as { code?: unknown }).code === "ENOSPC")
    return new AppError(
      507,
      "disk_full",
      "The server's disk is full, so nothing was stored. An administrator must free space.",
      undefined,
      { "Retry-After": "60" },
    );
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
export function renderError(
  ctx: Context,
  err: unknown,
  onUnexpected: (err: unknown) => void,
  onDatabase: (err: unknown) => void = () => undefined,
): void {
  let appErr = fromKnown(err);
  // A database error that got this far means a service missed a check: answered as 4xx, logged to be fixed.
  if (appErr && !(err instanceof AppError) && fromDatabase(err)) onDatabase(err);
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
