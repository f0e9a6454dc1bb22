import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const MAIN = new URL("../../core/dist/src/main.js", import.meta.url).pathname;
const CLI = new URL("../../installer/bin/worksynapse.mjs", import.meta.url).pathname;

/**
 * Writes the generated tiny model into the data directory of `env` and registers it with the CLI, as an admin
 * sideloads a model (nothing is downloaded); returns the CLI's output.
 */
export async function sideloadTinyModel(
  env: Record<string, string> & { WORKSYNAPSE_DATA_DIR: string },
  role: "chat" | "embedding" = "chat",
): Promise<string> {
  const model = path.join(env.WORKSYNAPSE_DATA_DIR, "tiny.gguf");
  makeTinyModel(model);
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [CLI, "models", "import", model, "--name", "tiny", "--role", role],
    { env: { ...process.env, ...env } },
  );
  return stdout;
}

/** A core process started as an admin would start it, with its log lines collected. */
export interface CoreProcess {
  child: ChildProcess;
  url: Promise<string>;
  lines: string[];
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: string | null }>;
  dataDir: string;
}

/** Spawns `node core/dist/src/main.js` on a free loopback port; `url` resolves when it serves. */
export function spawnCore(env: Record<string, string | undefined> = {}, args: string[] = []): CoreProcess {
  const dataDir = env.WORKSYNAPSE_DATA_DIR ?? mkdtempSync(path.join(tmpdir(), "ws-proc-"));
  const cleanEnv = { ...process.env };
  for (const k of Object.keys(cleanEnv))
    if (k.startsWith("WORKSYNAPSE_") || k === "DATABASE_URL" || k === "NATS_URL") delete cleanEnv[k];
  delete cleanEnv.NODE_ENV;
  const child = spawn(process.execPath, [MAIN, ...args], {
    env: {
      ...cleanEnv,
      WORKSYNAPSE_HTTP_HOST: "127.0.0.1",
      WORKSYNAPSE_HTTP_PORT: "0",
      WORKSYNAPSE_DATA_DIR: dataDir,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let err = "";
  let resolveUrl: (u: string) => void;
  const url = new Promise<string>((r) => (resolveUrl = r));
  let buf = "";
  child.stdout?.on("data", (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      const m = /"url":"(https?:\/\/[^"]+)"/.exec(line);
      if (m?.[1] && line.includes("WorkSynapse is serving")) resolveUrl(m[1]);
    }
  });
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { child, url, lines, stderr: () => err, exit, dataDir };
}

/** Polls a URL until it answers 200. */
export async function waitForOk(url: string, ms = 60000): Promise<number> {
  const start = Date.now();
  for (;;) {
    try {
      if ((await fetch(url)).status === 200) return Date.now() - start;
    } catch {
      // not yet listening
    }
    if (Date.now() - start > ms) throw new Error(`${url} not ready in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const uiHeaders = (url: string, cookie?: string) => ({
  "content-type": "application/json",
  "x-requested-with": "worksynapse",
  origin: url,
  ...(cookie ? { cookie } : {}),
});

/** Calls the API as a signed-in person, as the UI does (its headers and their session cookie); throws unless 2xx. */
export function apiAs(url: string, cookie: string) {
  return async <T>(method: string, p: string, body?: unknown): Promise<T> => {
    const r = await fetch(`${url}${p}`, {
      method,
      headers: uiHeaders(url, cookie),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };
}

/** First-run setup through the API, as the setup page does it; returns the administrator's session cookie. */
export async function setUpInstallation(
  url: string,
  admin: { organizationName: string; name: string; email: string; password: string },
): Promise<string> {
  const r = await fetch(`${url}/api/auth/setup`, {
    method: "POST",
    headers: uiHeaders(url),
    body: JSON.stringify(admin),
  });
  if (r.status !== 201) throw new Error(`setup: ${r.status} ${await r.text()}`);
  return r.headers.getSetCookie()[0]?.split(";")[0] as string;
}

/** Adds a person with a built-in role through the API, as an administrator does on the People page. */
export async function addPerson(
  url: string,
  adminCookie: string,
  person: { email: string; displayName: string; password: string },
  roleKey = "member",
): Promise<string> {
  const roles = (await (
    await fetch(`${url}/api/roles`, { headers: uiHeaders(url, adminCookie) })
  ).json()) as {
    data: { id: string; key: string }[];
  };
  const r = await fetch(`${url}/api/users`, {
    method: "POST",
    headers: uiHeaders(url, adminCookie),
    body: JSON.stringify({ ...person, roleIds: [roles.data.find((x) => x.key === roleKey)?.id] }),
  });
  if (r.status !== 201) throw new Error(`add person: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { data: { id: string } }).data.id;
}
