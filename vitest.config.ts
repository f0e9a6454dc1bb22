import { defineConfig } from "vitest/config";

// One runner, two projects: fast-ish integration tests (real PostgreSQL and NATS) and browser tests.
export default defineConfig({
  test: {
    projects: [
      {
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
