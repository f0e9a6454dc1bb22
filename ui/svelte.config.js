import adapter from "@sveltejs/adapter-static";
import { vitePreprocess } from "@sveltejs/vite-plugin-svelte";

/** @type {import('@sveltejs/kit').Config} */
const config = {
  preprocess: vitePreprocess(),
  kit: {
    // A single-page app: core serves index.html for every page route.
    adapter: adapter({ pages: "build", assets: "build", fallback: "index.html", strict: true }),
    // Absolute asset paths, so the bootstrap script can live in its own file (see scripts/externalize-inline-scripts.mjs).
    paths: { relative: false },
    version: { pollInterval: 0 },
  },
};

export default config;
