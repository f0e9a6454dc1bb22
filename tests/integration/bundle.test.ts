import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKey, signFile } from "../../core/src/platform/minisign.js";

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
    "--fast",
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

  it("upgrades the installed version to a newer bundle, resumes an interrupted upgrade, and rolls back when the new version's health check fails", async () => {
    // The newer bundle: this one with the version raised and one more migration, re-signed by the same key.
    const next = VERSION.replace(/\d+$/, (d) => String(Number(d) + 1));
    const nextName = NAME.replace(`-${VERSION}-`, `-${next}-`);
    const b = path.join(work, "next");
    mkdirSync(b, { recursive: true });
    expect((await sh("tar", ["-xzf", bundle, "-C", b])).code).toBe(0);
    renameSync(path.join(b, NAME), path.join(b, nextName));
    const tree = path.join(b, nextName);
    for (const f of ["package.json", "core/package.json"]) {
      const pkg = JSON.parse(readFileSync(path.join(tree, f), "utf8")) as { version: string };
      writeFileSync(path.join(tree, f), JSON.stringify({ ...pkg, version: next }, null, 2));
    }
    writeFileSync(
      path.join(tree, "core/dist/migrations/20991231000000_upgrade_probe.js"),
      'export async function up(knex) { await knex.schema.createTable("upgrade_probe", (t) => t.increments("id")); }\n' +
        'export async function down(knex) { await knex.schema.dropTable("upgrade_probe"); }\n',
    );
    // This newer version fails to start on a site that has the marker file (the fault the rollback is for).
    const main = path.join(tree, "core/dist/src/main.js");
    writeFileSync(
      main,
      'import { existsSync as failMarker } from "node:fs";\n' +
        'if (failMarker(`${process.env.WORKSYNAPSE_DATA_DIR}/.fail-start`)) { console.error("simulated start failure"); process.exit(1); }\n' +
        readFileSync(main, "utf8"),
    );
    const sums: string[] = [];
    const walk = (rel: string) => {
      for (const e of readdirSync(path.join(tree, rel), { withFileTypes: true })) {
        const p = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) walk(p);
        else if (e.isFile() && p !== "SHA256SUMS")
          sums.push(
            `${createHash("sha256")
              .update(readFileSync(path.join(tree, p)))
              .digest("hex")}  ${p}`,
          );
      }
    };
    walk("");
    writeFileSync(
      path.join(tree, "SHA256SUMS"),
      `${sums.sort((x, y) => x.slice(66).localeCompare(y.slice(66))).join("\n")}\n`,
    );
    const nextBundle = path.join(out, `${nextName}.tar.gz`);
    expect(
      (await sh("tar", ["--use-compress-program=gzip -1", "-cf", nextBundle, "-C", b, nextName])).code,
    ).toBe(0);
    writeFileSync(
      `${nextBundle}.minisig`,
      await signFile(nextBundle, readFileSync(path.join(work, "signing.key"), "utf8"), "next"),
    );

    // The installation of the previous test (its embedded database holds that version's schema), served by a
    // stand-in for systemd: start and stop commands around a background process.
    const prefix = path.join(work, "root/opt/worksynapse");
    const data = path.join(work, "root/var/lib/worksynapse");
    const port = 18000 + (process.pid % 1000);
    const pid = path.join(work, "server.pid");
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      WORKSYNAPSE_DATA_DIR: data,
      WORKSYNAPSE_HTTP_HOST: "127.0.0.1",
      WORKSYNAPSE_HTTP_PORT: String(port),
      WORKSYNAPSE_BACKUP_PASSPHRASE: "upgrade backup passphrase 1",
    };
    for (const k of ["DATABASE_URL", "NATS_URL", "WORKSYNAPSE_NATS_PREFIX"]) delete env[k];
    const start = `nohup "${prefix}/current/bin/worksynapse-server" >> "${work}/upgrade-server.log" 2>&1 & echo $! > "${pid}"`;
    const stop = `if [ -f "${pid}" ]; then p=$(cat "${pid}"); kill $p 2>/dev/null; while kill -0 $p 2>/dev/null; do sleep 0.1; done; rm -f "${pid}"; fi`;
    const upgradeTo = (healthTimeout: string, ...extra: string[]) =>
      promisify(execFile)(
        process.execPath,
        [
          path.join(ROOT, "installer/bin/worksynapse.mjs"),
          ...[
            "upgrade",
            "--bundle",
            nextBundle,
            "--prefix",
            prefix,
            "--health-timeout",
            healthTimeout,
            ...extra,
          ],
          ...[
            "--health-url",
            `http://127.0.0.1:${port}/readyz`,
            "--stop-command",
            stop,
            "--start-command",
            start,
          ],
        ],
        { env, cwd: ROOT, maxBuffer: 16 << 20 },
      ).then(
        (r) => ({ code: 0, out: r.stdout + r.stderr }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({
          code: e.code ?? 1,
          out: `${e.stdout}${e.stderr}`,
        }),
      );
    const status = async () =>
      (
        await promisify(execFile)(path.join(prefix, "current/bin/worksynapse"), ["migrate", "status"], {
          env,
        })
      ).stdout;
    try {
      // A new version that never becomes healthy here: rolled back.
      writeFileSync(path.join(data, ".fail-start"), "");
      const failed = await upgradeTo("6");
      // What the servers said, for a failure here (the CI log is all there is to go on).
      const said = () =>
        `${failed.out}\n--- server log ---\n${readFileSync(path.join(work, "upgrade-server.log"), "utf8").slice(-6000)}`;
      expect(failed.code, said()).toBe(1);
      expect(failed.out, said()).toMatch(/health check failed/);
      expect(failed.out, said()).toMatch(
        new RegExp(`rolled back to ${VERSION.replaceAll(".", "\\.")}, which is serving`),
      );
      expect(readlinkSync(path.join(prefix, "current"))).toBe(`versions/${NAME}`);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
      // The upgrade's migration is undone: the previous version's CLI finds only migrations it knows (read with
      // the server stopped: the embedded database allows one process).
      await sh("sh", ["-c", stop]);
      expect(await status()).not.toMatch(/upgrade_probe/);
      expect(readdirSync(path.join(data, "backups")).filter((f) => f.endsWith(".wsbackup"))).toHaveLength(1);

      rmSync(path.join(data, ".fail-start"));
      // An upgrade killed right after it switched `current` (the new version is unpacked from the attempt
      // above): what it leaves is its journal and the link. Another bundle is refused until it is finished.
      const before = (await status())
        .split("\n")
        .filter((l) => /\bapplied\s*$/.test(l))
        .map((l) => l.split(/\s+/)[0]);
      writeFileSync(
        path.join(prefix, "upgrade-journal.json"),
        JSON.stringify({
          bundle: nextName,
          from: `versions/${NAME}`,
          fromVersion: VERSION,
          step: "switched",
          before,
        }),
      );
      execFileSync("ln", ["-sfn", `versions/${nextName}`, path.join(prefix, "current")]);
      const other = await promisify(execFile)(
        process.execPath,
        [path.join(ROOT, "installer/bin/worksynapse.mjs"), "upgrade", "--bundle", bundle, "--prefix", prefix],
        { env },
      ).catch((e: { stderr: string }) => e);
      expect((other as { stderr: string }).stderr).toMatch(/an upgrade to .* was interrupted/);
      // Run again with its bundle, it resumes: migrate, start, check. (The backup was taken and shown above;
      // a resumed upgrade does not take another.)
      const done = await upgradeTo("60", "--no-backup");
      expect(done.code, done.out).toBe(0);
      expect(done.out).toMatch(/resuming {2}the interrupted upgrade .* \(it had reached: switched\)/);
      expect(existsSync(path.join(prefix, "upgrade-journal.json"))).toBe(false);
      expect(done.out).toMatch(
        new RegExp(`upgraded {2}to ${next.replaceAll(".", "\\.")}; 1 migrations applied`),
      );
      expect(readlinkSync(path.join(prefix, "current"))).toBe(`versions/${nextName}`);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
      await sh("sh", ["-c", stop]);
      expect(await status()).toMatch(/20991231000000_upgrade_probe\s+applied/);
      // Downgrading is refused.
      const back = await promisify(execFile)(
        process.execPath,
        [path.join(ROOT, "installer/bin/worksynapse.mjs"), "upgrade", "--bundle", bundle, "--prefix", prefix],
        { env },
      ).catch((e: { stderr: string }) => e);
      expect((back as { stderr: string }).stderr).toMatch(/downgrades are refused/);
    } finally {
      await sh("sh", ["-c", stop]);
    }
  }, 420_000);
});
