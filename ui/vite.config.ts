import { sveltekit } from "@sveltejs/kit/vite";
import { defineConfig } from "vite";

const core = process.env.WORKSYNAPSE_DEV_API ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [sveltekit()],
  // In development the Vite server proxies the API to a running core.
  server: {
    proxy: {
      "/api": core,
      "/livez": core,
      "/readyz": core,
      "/metrics": core,
      // Live chat; the Host header stays Vite's, so core's Origin check sees the page's own origin.
      "/ws": { target: core, ws: true },
    },
  },
});
