import { execFile } from "node:child_process";
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey } from "../../core/src/platform/minisign.js";

/**
 * The linux-arm64 bundle, made on this x64 machine (`npm run bundle -- --platform linux-arm64`): the target's
 * Node runtime, native packages and nats-server are fetched at build time. Every binary in it must be an
 * arm64 one, and they run: under qemu-user with Debian's arm64 C libraries (scripts/setup-test-deps.sh), Node
 * starts, loads the native modules the server needs (llama.cpp, LanceDB, argon2) and nats-server answers.
 */
const ROOT = new URL("../../", import.meta.url).pathname;
const work = mkdtempSync(path.join(tmpdir(), "ws-arm64-"));
const out = path.join(work, "out");
const TOOLS =
  process.env.WORKSYNAPSE_TOOLS_DIR ??
  path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "worksynapse-tools");
const SYSROOT = path.join(TOOLS, "arm64-sysroot");
let tree = "";
let archive = "";

const sh = (cmd: string, args: string[], cwd = ROOT) =>
  promisify(execFile)(cmd, args, { cwd, maxBuffer: 64 << 20, timeout: 400_000 }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({
      code: typeof e.code === "number" ? e.code : 1,
      out: `${e.stdout ?? ""}${e.stderr ?? ""}`,
    }),
  );
/** Runs one of the bundle's arm64 programs under emulation. */
const arm64 = (program: string, ...args: string[]) =>
  sh("qemu-aarch64-static", ["-L", SYSROOT, path.join(tree, program), ...args], tree);

beforeAll(async () => {
  writeFileSync(path.join(work, "signing.key"), generateSigningKey().privatePem, { mode: 0o600 });
  const r = await sh(process.execPath, [
    path.join(ROOT, "scripts/bundle.mjs"),
    "--platform",
    "linux-arm64",
    "--skip-build",
    "--no-addons",
    "--fast",
    "--out",
    out,
    "--key",
    path.join(work, "signing.key"),
  ]);
  expect(r.code, r.out.slice(-3000)).toBe(0);
  archive = path.join(out, readdirSync(out).find((f) => f.endsWith("-linux-arm64.tar.gz")) as string);
  mkdirSync(path.join(work, "x"));
  expect((await sh("tar", ["-xzf", archive, "-C", path.join(work, "x")])).code).toBe(0);
  tree = path.join(work, "x", readdirSync(path.join(work, "x"))[0] as string);
}, 600_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The machine an ELF file is built for (e_machine: 62 x86-64, 183 AArch64), or null for other files. */
function elfMachine(file: string): number | null {
  const fd = openSync(file, "r");
  try {
    const b = Buffer.alloc(20);
    if (readSync(fd, b, 0, 20, 0) < 20 || b.readUInt32BE(0) !== 0x7f454c46) return null;
    return b.readUInt16LE(18);
  } finally {
    closeSync(fd);
  }
}

describe("the linux-arm64 bundle", () => {
  it("is signed, verifies, and holds arm64 binaries only", async () => {
    const v = await sh(process.execPath, [
      path.join(ROOT, "installer/bin/worksynapse.mjs"),
      "bundle",
      "verify",
      archive,
    ]);
    expect(v.code, v.out).toBe(0);
    expect(v.out).toMatch(/signature ok/);
    const binaries = new Map<string, number>();
    const walk = (rel: string) => {
      for (const e of readdirSync(path.join(tree, rel), { withFileTypes: true })) {
        const p = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) walk(p);
        else if (e.isFile()) {
          const m = elfMachine(path.join(tree, p));
          if (m !== null) binaries.set(p, m);
        }
      }
    };
    walk("");
    const notArm = [...binaries].filter(([, m]) => m !== 183).map(([p]) => p);
    expect(notArm).toEqual([]);
    const names = [...binaries.keys()];
    for (const expected of [
      "runtime/bin/node",
      "runtime/bin/nats-server",
      "node_modules/@node-llama-cpp/linux-arm64/",
      "node_modules/@lancedb/lancedb-linux-arm64-gnu/",
      "node_modules/@node-rs/argon2-linux-arm64-gnu/",
    ])
      expect(
        names.some((n) => n.startsWith(expected)),
        expected,
      ).toBe(true);
    expect(readdirSync(path.join(tree, "node_modules/@node-llama-cpp"))).toEqual(["linux-arm64"]);
  });

  it("runs: Node loads llama.cpp's CPU backend, LanceDB and argon2, and nats-server answers (under qemu-user)", async () => {
    const node = await arm64("runtime/bin/node", "--version");
    expect(node.out.trim()).toBe(process.version);
    const nats = await arm64("runtime/bin/nats-server", "--version");
    expect(nats.out).toMatch(/nats-server: v2\./);
    // llama.cpp: the addon and its CPU backend are loaded and initialised as node-llama-cpp's own binary test
    // does (that test runs in a child process, which this emulated process cannot start the same way).
    const llamaBins = path.join(tree, "node_modules/@node-llama-cpp/linux-arm64/bins/linux-arm64");
    const probe = [
      'import { createRequire } from "node:module";',
      'import { hash } from "@node-rs/argon2";',
      'import * as lancedb from "@lancedb/lancedb";',
      'const h = await hash("violet-harbor-lantern-42");',
      `const db = await lancedb.connect(${JSON.stringify(path.join(work, "lance"))});`,
      'await db.createTable("t", [{ id: 1, text: "arm64" }]);',
      `const addon = createRequire(process.cwd() + "/probe.js")(${JSON.stringify(path.join(llamaBins, "llama-addon.node"))});`,
      `addon.loadBackends(${JSON.stringify(llamaBins)});`,
      "await addon.init();",
      'console.log(JSON.stringify({ argon2: h.startsWith("$argon2"), lance: await (await db.openTable("t")).countRows(), llama: addon.getGpuType() }));',
    ].join("\n");
    const r = await arm64("runtime/bin/node", "--input-type=module", "-e", probe);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/loaded CPU backend from .*libggml-cpu-armv/);
    expect(JSON.parse(r.out.split("\n").find((l) => l.startsWith("{")) as string)).toEqual({
      argon2: true,
      lance: 1,
      // getGpuType(): false, the CPU backend
      llama: false,
    });
  }, 300_000);
});
