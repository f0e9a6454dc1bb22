import { chromium, type Browser, type Page } from "playwright-core";

/** Headless Debian Chromium as root, with every background network feature off (Playwright gives it a fresh profile). */
export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
}

/** What a page did that a test must check: console errors, page errors and requests to other hosts. */
export interface PageWatch {
  consoleErrors: string[];
  foreignRequests: string[];
}

const LOCAL = new Set(["127.0.0.1", "localhost", "[::1]"]);

/** Records console errors, uncaught errors and any request that is not to a loopback host. */
export function watchPage(page: Page): PageWatch {
  const w: PageWatch = { consoleErrors: [], foreignRequests: [] };
  page.on("console", (m) => {
    if (m.type() === "error") w.consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => w.consoleErrors.push(e.message));
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (
      (u.protocol === "http:" || u.protocol === "https:" || u.protocol === "ws:") &&
      !LOCAL.has(u.hostname)
    ) {
      w.foreignRequests.push(r.url());
    }
  });
  return w;
}
