import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "./config/load.js";
import { createLogger } from "./platform/log.js";
import { startServer, type RunningServer } from "./server.js";

/** Entry point: `node core/dist/src/main.js [--roles web,worker]`. */
async function main(): Promise<void> {
  const { values } = parseArgs({ options: { roles: { type: "string" } }, allowPositionals: false });
  let config;
  try {
    config = loadConfig({
      overrides: { roles: values.roles?.split(",").map((r) => r.trim()) },
    });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger({
    level: config.log.level,
    pretty: config.log.pretty ?? config.env === "development",
  });
  let server: RunningServer | undefined;
  let signals = 0;
  let stopRequested = false;
  const stop = () => {
    // Whatever the bus and the database do, the process is gone by the deadline; exit 1 says work was
    // abandoned (the queue redelivers it).
    setTimeout(() => {
      log.error({ ms: config.shutdownDeadlineMs }, "shutdown did not finish by its deadline; exiting");
      process.exit(1);
    }, config.shutdownDeadlineMs).unref();
    server
      ?.stop()
      .then((clean) => process.exit(clean ? 0 : 1))
      .catch((err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      });
  };
  // Installed before anything starts: a signal during start-up shuts down in order once start-up is done.
  const onSignal = (sig: string) => {
    signals += 1;
    if (signals > 1) {
      log.warn({ sig }, "second signal: exiting now");
      process.exit(1);
    }
    log.info({ sig }, "signal received");
    stopRequested = true;
    stop();
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
  // SIGHUP: the built-in HTTPS server reads its certificate and key again (a renewed certificate, no restart).
  // A file that cannot be read or does not parse leaves the running certificate in place.
  process.on("SIGHUP", () => {
    try {
      if (server?.reloadTls())
        log.info({ cert: config.http.tls.certPath }, "TLS certificate and key reloaded");
      else log.info("SIGHUP: nothing to reload (no built-in TLS)");
    } catch (err) {
      log.error({ err }, "TLS reload failed; the previous certificate stays in use");
    }
  });
  try {
    server = await startServer(config, log);
  } catch (err) {
    log.fatal({ err }, "could not start");
    process.exitCode = 1;
    if (stopRequested) process.exit(1);
    return;
  }
  if (stopRequested) return stop();
  if (server.url) {
    log.info(
      `Open ${server.url} in a browser. First run: the setup page creates the first organization and admin (or run \`npx worksynapse admin create\`).`,
    );
  }
}

void main();
