import { pino, type Logger as PinoLogger, type DestinationStream } from "pino";

/** The narrow logger type infrastructure takes (pino's, so child loggers keep bindings). */
export type Logger = PinoLogger;

/** Paths pino removes from every line: credentials must never reach a log. */
export const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  "headers.authorization",
  "headers.cookie",
  "*.password",
  "*.token",
  "*.secret",
  "*.apiKey",
  "*.masterKey",
  "password",
  "token",
  "secret",
  "apiKey",
];

export interface LogOptions {
  level?: string;
  pretty?: boolean;
  /** A destination stream (tests capture lines with it). */
  destination?: DestinationStream;
}

/** Creates the root logger: JSON lines with redaction; pretty output only when asked (development). */
export function createLogger(opts: LogOptions = {}): Logger {
  const base = {
    level: opts.level ?? "info",
    base: { module: "core" },
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (opts.destination) return pino(base, opts.destination);
  if (opts.pretty)
    return pino({ ...base, transport: { target: "pino-pretty", options: { colorize: true } } });
  return pino(base);
}

/** A logger that writes nothing (tests that do not look at logs); TEST_LOG=error shows what a failing test logged. */
export function silentLogger(): Logger {
  return pino({ level: process.env.TEST_LOG ?? "silent" });
}
