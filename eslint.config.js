import js from "@eslint/js";
import tseslint from "typescript-eslint";
import svelte from "eslint-plugin-svelte";
import globals from "globals";
import svelteConfig from "./ui/svelte.config.js";

export default tseslint.config(
  {
    ignores: [
      "**/node_modules/",
      "**/dist/",
      "ui/build/",
      "ui/.svelte-kit/",
      "data/",
      "test-results/",
      "ui/src/lib/api/schema.d.ts",
      "helm/",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  ...svelte.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    files: ["ui/**/*.ts", "ui/**/*.svelte", "ui/**/*.svelte.ts", "core/assets/**/*.js"],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    // A plugin sees only the context the host hands it (plugins/sdk): never core's internals.
    files: ["plugins/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["@worksynapse/core", "@worksynapse/core/*"],
              message: "Plugins use @worksynapse/plugin-sdk only.",
            },
            {
              regex: "(^|/)core/",
              message: "Plugins never import from core/: use the context the host gives.",
            },
          ],
        },
      ],
    },
  },
  {
    files: ["**/*.svelte", "**/*.svelte.ts"],
    languageOptions: {
      parserOptions: { parser: tseslint.parser, extraFileExtensions: [".svelte"], svelteConfig },
    },
  },
);
