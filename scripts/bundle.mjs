#!/usr/bin/env node
// The offline bundle: `npm run bundle -- [--key signing.key] [--out dist-bundle] [--skip-build] [--platform P]`.
// One archive per platform (this machine's, or linux-x64 / linux-arm64 given by --platform: the target's Node
// runtime, native packages and nats-server are then fetched at build time from the npm registry and Debian's
// archive, never at the site) with the built server and UI,
// production dependencies only (no install script runs) with the llama.cpp binaries of that platform (CPU; the
// CUDA and Vulkan variants become add-on archives), the bundled nats-server, migrations, compose and Helm files,
// a CycloneDX SBOM, SHA256SUMS and install.sh; the archive is signed in minisign's format (docs/install.md).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  createReadStream,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: opts } = parseArgs({
  options: {
    key: { type: "string" },
    out: { type: "string", default: path.join(ROOT, "dist-bundle") },
    "skip-build": { type: "boolean", default: false },
    // Tests: the CUDA and Vulkan add-ons are left out instead of packed.
    "no-addons": { type: "boolean", default: false },
    // Tests: quicker, larger compression.
    fast: { type: "boolean", default: false },
    platform: { type: "string" },
  },
});
const run = (cmd, args, cwd = ROOT) =>
  execFileSync(cmd, args, { cwd, stdio: ["ignore", "inherit", "inherit"] });
const log = (s) => process.stdout.write(`${s}\n`);

const host = `${process.platform}-${process.arch}`;
const platform = opts.platform ?? host;
if (!["linux-x64", "linux-arm64"].includes(platform)) {
  console.error(`bundles are made for linux-x64 and linux-arm64, not ${platform}`);
  process.exit(2);
}
const cross = platform !== host;
const version = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).version;
const name = `worksynapse-${version}-${platform}`;
const out = path.resolve(opts.out);
const stage = path.join(out, name);

if (!opts["skip-build"]) run("npm", ["run", "build"]);
// Only what this script writes is replaced: --out may name a folder that holds other things.
rmSync(stage, { recursive: true, force: true });
rmSync(path.join(out, "addons"), { recursive: true, force: true });
mkdirSync(stage, { recursive: true });

// 1. What was built, and what a site needs beside it. Compiled tests and build caches stay out.
const keep = (src) => !/\.tsbuildinfo$|\.test\.(js|d\.ts|js\.map)$/.test(src);
const copy = (rel) => {
  if (existsSync(path.join(ROOT, rel)))
    cpSync(path.join(ROOT, rel), path.join(stage, rel), { recursive: true, filter: keep });
};
for (const rel of [
  "package.json",
  "package-lock.json",
  ".npmrc",
  "LICENSE",
  "README.md",
  "docs",
  "compose",
  "helm",
  "scripts/no-scarf",
])
  copy(rel);
for (const ws of [
  "core",
  "installer",
  "ui",
  ...readdirSync(path.join(ROOT, "plugins")).map((p) => `plugins/${p}`),
]) {
  copy(`${ws}/package.json`);
  for (const rel of ["dist", "bin", "migrations", "assets", "build", "plugin.json"]) copy(`${ws}/${rel}`);
}

// 2. Production dependencies, exactly as locked, no install script run; the optional native packages are the
// target platform's (npm's --os/--cpu/--libc).
log(`installing production dependencies for ${platform}`);
const [os, arch] = platform.split("-");
run(
  "npm",
  [
    "ci",
    "--omit=dev",
    "--ignore-scripts",
    "--prefer-offline",
    "--no-audit",
    "--no-fund",
    `--os=${os}`,
    `--cpu=${arch}`,
    "--libc=glibc",
  ],
  stage,
);

// 3. Native binaries of this platform only: the CPU build of llama.cpp in the bundle, CUDA and Vulkan as add-ons.
const addons = [];
const llamaDir = path.join(stage, "node_modules", "@node-llama-cpp");
for (const pkg of existsSync(llamaDir) ? readdirSync(llamaDir) : []) {
  if (pkg === platform) continue;
  if (pkg.startsWith(`${platform}-`) && !opts["no-addons"]) {
    const addon = path.join(
      out,
      "addons",
      `${name}-addon-${pkg.slice(platform.length + 1)}`,
      "node_modules",
      "@node-llama-cpp",
    );
    mkdirSync(addon, { recursive: true });
    renameSync(path.join(llamaDir, pkg), path.join(addon, pkg));
    addons.push(pkg.slice(platform.length + 1));
  } else rmSync(path.join(llamaDir, pkg), { recursive: true, force: true });
}
const onnxBin = path.join(stage, "node_modules", "onnxruntime-node", "bin", "napi-v3");
if (existsSync(onnxBin)) {
  for (const o of readdirSync(onnxBin)) {
    if (o !== os) rmSync(path.join(onnxBin, o), { recursive: true, force: true });
    else
      for (const a of readdirSync(path.join(onnxBin, o)))
        if (a !== arch) rmSync(path.join(onnxBin, o, a), { recursive: true, force: true });
  }
}

// 4. The runtime this build was tested with: Node and nats-server (for another platform: the same Node version's
// binary from the npm registry, node-<os>-<arch>, and the same Debian release's nats-server package).
const { findNatsServer } = await import("../core/dist/src/platform/bus/local-server.js");
mkdirSync(path.join(stage, "runtime", "bin"), { recursive: true });
if (cross) {
  const tmp = path.join(out, `.runtime-${platform}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  log(`fetching Node ${process.versions.node} for ${platform}`);
  const tgz = execFileSync("npm", ["pack", `node-${platform}@${process.versions.node}`, "--silent"], {
    cwd: tmp,
    encoding: "utf8",
  }).trim();
  run("tar", ["-xzf", tgz, "package/bin/node"], tmp);
  copyFileSync(path.join(tmp, "package", "bin", "node"), path.join(stage, "runtime", "bin", "node"));
  log(`fetching nats-server for ${platform} (Debian)`);
  const debArch = arch === "x64" ? "amd64" : arch;
  mkdirSync(path.join(tmp, "lists", "partial"), { recursive: true });
  mkdirSync(path.join(tmp, "cache", "archives", "partial"), { recursive: true });
  const apt = [
    `-o=APT::Architecture=${debArch}`,
    `-o=APT::Architectures::=${debArch}`,
    `-o=Dir::State::Lists=${tmp}/lists`,
    `-o=Dir::Cache=${tmp}/cache`,
    "-o=Dir::State::status=/dev/null",
    "-o=APT::Sandbox::User=root",
    "-qq",
  ];
  run("apt-get", [...apt, "update"], tmp);
  run("apt-get", [...apt, "download", `nats-server:${debArch}`], tmp);
  const deb = readdirSync(tmp).find((f) => f.startsWith("nats-server_") && f.endsWith(".deb"));
  run("dpkg-deb", ["-x", deb, "deb"], tmp);
  copyFileSync(
    path.join(tmp, "deb", "usr", "sbin", "nats-server"),
    path.join(stage, "runtime", "bin", "nats-server"),
  );
  rmSync(tmp, { recursive: true, force: true });
} else {
  copyFileSync(process.execPath, path.join(stage, "runtime", "bin", "node"));
  copyFileSync(findNatsServer(), path.join(stage, "runtime", "bin", "nats-server"));
}
mkdirSync(path.join(stage, "bin"));
const launcher = (target) => `#!/bin/sh
# Runs WorkSynapse with the Node runtime and nats-server of this bundle.
here=$(CDPATH= cd -- "$(dirname -- "$(readlink -f -- "$0")")/.." && pwd)
export NATS_SERVER_BIN="\${NATS_SERVER_BIN:-$here/runtime/bin/nats-server}"
export UV_THREADPOOL_SIZE="\${UV_THREADPOOL_SIZE:-16}" NODE_ENV=production
exec "$here/runtime/bin/node" "$here/${target}" "$@"
`;
writeFileSync(path.join(stage, "bin", "worksynapse"), launcher("installer/bin/worksynapse.mjs"));
writeFileSync(path.join(stage, "bin", "worksynapse-server"), launcher("core/dist/src/main.js"));
copyFileSync(path.join(ROOT, "scripts", "install.sh"), path.join(stage, "install.sh"));
for (const f of [
  "bin/worksynapse",
  "bin/worksynapse-server",
  "install.sh",
  "runtime/bin/node",
  "runtime/bin/nats-server",
])
  chmodSync(path.join(stage, f), 0o755);

// 5. The SBOM of what is shipped.
log("writing the SBOM");
run(
  process.execPath,
  [
    path.join(ROOT, "node_modules", "@cyclonedx", "cyclonedx-npm", "bin", "cyclonedx-npm-cli.js"),
    "--omit",
    "dev",
    "--ignore-npm-errors",
    "--output-format",
    "JSON",
    "--output-file",
    path.join(stage, "sbom.cdx.json"),
  ],
  stage,
);

// 6. Checksums of every file, then the archive and its signature.
const files = [];
const walk = (rel) => {
  for (const e of readdirSync(path.join(stage, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) walk(p);
    else if (e.isFile()) files.push(p);
  }
};
walk("");
const sums = [];
for (const f of files.sort()) {
  const h = createHash("sha256");
  await pipeline(createReadStream(path.join(stage, f)), h);
  sums.push(`${h.digest("hex")}  ${f}`);
}
writeFileSync(path.join(stage, "SHA256SUMS"), `${sums.join("\n")}\n`);

const { generateSigningKey, minisignPublicKey, signFile } =
  await import("../core/dist/src/platform/minisign.js");
let keyPem;
if (opts.key) keyPem = readFileSync(opts.key, "utf8");
else {
  log(
    "WARNING: no --key given: signing with a new throwaway key (its public key is written beside the archive)",
  );
  keyPem = generateSigningKey().privatePem;
}
writeFileSync(path.join(out, "minisign.pub"), minisignPublicKey(keyPem));
copyFileSync(path.join(ROOT, "scripts", "install.sh"), path.join(out, "install.sh"));
chmodSync(path.join(out, "install.sh"), 0o755);
const archives = [[`${name}.tar.gz`, name, out]];
for (const a of addons)
  archives.push([`${name}-addon-${a}.tar.gz`, `${name}-addon-${a}`, path.join(out, "addons")]);
for (const [file, dir, cwd] of archives) {
  log(`packing ${file}`);
  run("tar", [
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    "--sort=name",
    `--use-compress-program=gzip ${opts.fast ? "-1" : "-6"}`,
    "-cf",
    path.join(out, file),
    "-C",
    cwd,
    dir,
  ]);
  writeFileSync(
    path.join(out, `${file}.minisig`),
    await signFile(path.join(out, file), keyPem, `${file} worksynapse ${version} ${platform}`),
  );
}
rmSync(stage, { recursive: true, force: true });
rmSync(path.join(out, "addons"), { recursive: true, force: true });
for (const [file] of archives)
  log(
    `wrote ${path.join(out, file)} (${(statSync(path.join(out, file)).size / 2 ** 20).toFixed(0)} MiB) and its .minisig`,
  );
