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

/** Loopback: the whole 127/8 range (tests put a "cross-site" IdP on 127.0.0.2), localhost and ::1. */
const isLoopback = (host: string) =>
  host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);

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
      !isLoopback(u.hostname)
    ) {
      w.foreignRequests.push(r.url());
    }
  });
  return w;
}

/** Signs in on the login page and waits for the home page. */
export async function signInInBrowser(
  page: Page,
  url: string,
  email: string,
  password: string,
): Promise<void> {
  await page.goto(`${url}/login`, { waitUntil: "networkidle" });
  await page.getByLabel("Username or email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${url}/`);
}

/** The accessibility violations axe finds on the page, as "rule: first element". */
export async function axeViolations(page: Page): Promise<string[]> {
  const { AxeBuilder } = await import("@axe-core/playwright");
  return (await new AxeBuilder({ page }).analyze()).violations.map((v) => `${v.id}: ${v.nodes[0]?.target}`);
}
