import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// One runner, two projects: fast-ish integration tests (real PostgreSQL and NATS) and browser tests.
export default defineConfig({
  test: {
    projects: [
      {
        // The web UI's own modules (tests/integration/chat-client.test.ts) import through SvelteKit's $lib.
        resolve: { alias: { $lib: fileURLToPath(new URL("./ui/src/lib", import.meta.url)) } },
        test: {
          name: "integration",
          include: [
            "core/src/**/*.test.ts",
            "installer/src/**/*.test.ts",
            "plugins/*/src/**/*.test.ts",
            "tests/integration/**/*.test.ts",
          ],
          globalSetup: ["tests/support/global-setup.ts"],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          pool: "forks",
        },
      },
      {
        // Fault injection (tests/faults): processes killed, the bus stopped, the database restarted, the disk
        // filled, under load. One file at a time, alone: it owns its PostgreSQL and its processes.
        test: {
          name: "faults",
          include: ["tests/faults/**/*.test.ts"],
          globalSetup: ["tests/support/global-setup.ts"],
          testTimeout: 180_000,
          hookTimeout: 240_000,
          pool: "forks",
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["tests/e2e/**/*.test.ts"],
          globalSetup: ["tests/support/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          pool: "forks",
          fileParallelism: false,
        },
      },
    ],
  },
});
