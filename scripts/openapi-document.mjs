// Builds the app without listening and returns its OpenAPI document (shared by codegen and its test).
import { buildApp, loadConfig, silentLogger } from "../core/dist/src/index.js";

/** The OpenAPI document of the current core build. */
export function openapiDocument() {
  const config = loadConfig({ env: { WORKSYNAPSE_DATA_DIR: "/nonexistent-worksynapse" } });
  const { openapi } = buildApp({
    config: { ...config, http: { ...config.http, uiDir: "/nonexistent-worksynapse" } },
    log: silentLogger(),
    readiness: { draining: false, checks: {} },
    database: "postgres",
    knex: null,
  });
  return openapi();
}
