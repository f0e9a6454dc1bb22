import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey } from "../../core/src/platform/minisign.js";

/**
 * The offline bundle as a site gets it: built by `npm run bundle` (production dependencies, this platform's
 * binaries, the Node runtime, nats-server, an SBOM, checksums, a minisign signature), verified with Debian's
 * minisign and with `worksynapse bundle verify`, installed by its install.sh into a temporary root inside an
 * empty network namespace (`unshare -n`: no network at all) and started there on embedded defaults.
 */
const ROOT = new URL("../../", import.meta.url).pathname;
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string })
  .version;
const NAME = `worksynapse-${VERSION}-${process.platform}-${process.arch}`;
const work = mkdtempSync(path.join(tmpdir(), "ws-bundle-"));
const out = path.join(work, "out");
const bundle = path.join(out, `${NAME}.tar.gz`);

interface Run {
  code: number;
  out: string;
}
function sh(cmd: string, args: string[], opts: { timeout?: number } = {}): Promise<Run> {
  return promisify(execFile)(cmd, args, {
    maxBuffer: 64 << 20,
    timeout: opts.timeout ?? 300_000,
    cwd: ROOT,
  }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({
      code: typeof e.code === "number" ? e.code : 1,
      out: `${e.stdout ?? ""}${e.stderr ?? ""}`,
    }),
  );
}
const cli = (...args: string[]) =>
  sh(process.execPath, [path.join(ROOT, "installer/bin/worksynapse.mjs"), ...args]);

beforeAll(async () => {
  const key = generateSigningKey();
  writeFileSync(path.join(work, "signing.key"), key.privatePem, { mode: 0o600 });
  // The suite has built everything already (scripts/test.sh); the CUDA and Vulkan add-ons are not packed here.
  const r = await sh(process.execPath, [
    path.join(ROOT, "scripts/bundle.mjs"),
    "--skip-build",
    "--no-addons",
    "--out",
    out,
    "--key",
    path.join(work, "signing.key"),
  ]);
  expect(r.code, r.out.slice(-3000)).toBe(0);
}, 400_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("the offline bundle", () => {
  it("is signed so that Debian's minisign and `worksynapse bundle verify` both accept it", async () => {
    const m = await sh("minisign", ["-Vm", bundle, "-p", path.join(out, "minisign.pub")]);
    expect(m.code, m.out).toBe(0);
    expect(m.out).toMatch(new RegExp(`Trusted comment: ${NAME}\\.tar\\.gz worksynapse ${VERSION}`));
    const v = await cli("bundle", "verify", bundle);
    expect(v.code, v.out).toBe(0);
    expect(v.out).toMatch(/signature ok/);
    expect(v.out).toMatch(/contents {2}ok: \d+ files match SHA256SUMS/);
  });

  it("holds the runtime, an SBOM and checksums, and no other platform's binaries or install-time analytics", async () => {
    const list = await sh("tar", ["-tzf", bundle]);
    expect(list.code).toBe(0);
    const entries = list.out.split("\n").map((e) => e.slice(NAME.length + 1));
    for (const f of [
      "runtime/bin/node",
      "runtime/bin/nats-server",
      "bin/worksynapse",
      "bin/worksynapse-server",
      "install.sh",
      "SHA256SUMS",
      "sbom.cdx.json",
      "core/dist/src/main.js",
      "ui/build/index.html",
      "helm/worksynapse/Chart.yaml",
      "compose/docker-compose.yml",
    ])
      expect(entries, f).toContain(f);
    expect(entries.some((e) => e.startsWith("core/migrations/"))).toBe(true);
    const llama = new Set(
      entries
        .filter((e) => e.startsWith("node_modules/@node-llama-cpp/") && e.split("/")[2])
        .map((e) => e.split("/")[2]),
    );
    expect([...llama]).toEqual([`${process.platform}-${process.arch}`]);
    expect(entries.some((e) => e.includes("@scarf/"))).toBe(false);
    // Development tools stay out.
    for (const dev of ["vitest", "eslint", "playwright-core", "prettier"])
      expect(
        entries.some((e) => e.startsWith(`node_modules/${dev}/`)),
        dev,
      ).toBe(false);
    const sbomText = await sh("tar", ["-xzOf", bundle, `${NAME}/sbom.cdx.json`]);
    const sbom = JSON.parse(sbomText.out) as { bomFormat: string; components: { name: string }[] };
    expect(sbom.bomFormat).toBe("CycloneDX");
    expect(sbom.components.map((c) => c.name)).toEqual(
      expect.arrayContaining(["koa", "knex", "node-llama-cpp"]),
    );
  });

  it("refuses a tampered bundle: minisign, `bundle verify` and install.sh, before anything is unpacked", async () => {
    const bad = path.join(work, "tampered");
    rmSync(bad, { recursive: true, force: true });
    await sh("mkdir", ["-p", bad]);
    const copy = path.join(bad, `${NAME}.tar.gz`);
    const raw = readFileSync(bundle);
    const at = Math.floor(raw.length / 3);
    raw[at] = (raw[at] as number) ^ 0x01;
    writeFileSync(copy, raw);
    copyFileSync(`${bundle}.minisig`, `${copy}.minisig`);
    copyFileSync(path.join(out, "minisign.pub"), path.join(bad, "minisign.pub"));
    expect((await sh("minisign", ["-Vm", copy, "-p", path.join(bad, "minisign.pub")])).code).not.toBe(0);
    const v = await cli("bundle", "verify", copy);
    expect(v.code).toBe(1);
    expect(v.out).toMatch(/does not match the file/);
    const root = path.join(work, "tampered-root");
    const i = await sh("sh", [path.join(out, "install.sh"), copy, "--root", root]);
    expect(i.code).toBe(1);
    expect(i.out).toMatch(/does not match its signature: refusing to install it/);
    expect(existsSync(path.join(root, "opt/worksynapse/versions", NAME))).toBe(false);
  });

  it("installs into a temporary root with no network at all and serves on embedded defaults", async () => {
    const root = path.join(work, "root");
    const script = path.join(work, "offline.sh");
    writeFileSync(
      script,
      `set -e
# An empty network namespace: only a loopback interface, brought up here; nothing outside is reachable.
ip link set lo up
sh "${out}/install.sh" "${bundle}" --root "${root}"
cur="${root}/opt/worksynapse/current"
# A clean environment: nothing of the test machine's configuration leaks in.
env -i PATH=/usr/bin:/bin WORKSYNAPSE_DATA_DIR="${root}/var/lib/worksynapse" WORKSYNAPSE_HTTP_HOST=127.0.0.1 \\
  WORKSYNAPSE_HTTP_PORT=18080 "$cur/bin/worksynapse-server" > "${work}/server.log" 2>&1 &
pid=$!
ok=""
for i in $(seq 1 240); do
  if "$cur/runtime/bin/node" -e 'fetch("http://127.0.0.1:18080/readyz").then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))'; then ok=1; break; fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.25
done
[ -n "$ok" ] || { echo "never ready"; cat "${work}/server.log"; kill $pid 2>/dev/null; exit 1; }
"$cur/runtime/bin/node" -e 'fetch("http://127.0.0.1:18080/").then(async r=>console.log("page", r.status, (await r.text()).includes("<html")))'
kill -TERM $pid
wait $pid || true
`,
    );
    const r = await sh("unshare", ["-n", "sh", script], { timeout: 240_000 });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/verified {2}.*\(signature\)/);
    expect(r.out).toMatch(/Bus +pass +local nats-server .* at .*runtime\/bin\/nats-server/);
    expect(r.out).toMatch(/page 200 true/);
    expect(readFileSync(path.join(root, "etc/systemd/system/worksynapse.service"), "utf8")).toMatch(
      /NoNewPrivileges=yes[\s\S]*ProtectSystem=strict/,
    );
    expect(readFileSync(path.join(work, "server.log"), "utf8")).toMatch(/shutdown complete/);
  }, 300_000);
});
