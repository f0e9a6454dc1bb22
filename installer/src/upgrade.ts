import { spawn } from "node:child_process";
import {
  existsSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  mkdtempSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { compareVersions, verifyFile } from "@worksynapse/core";

/**
 * `worksynapse upgrade --bundle FILE`: verify the new bundle, refuse a downgrade, stop the service, take a
 * backup with the running version, unpack the new version beside the old one, switch the `current` link,
 * migrate, start and health-check; when migrating or the health check fails, stop, undo the migrations the
 * upgrade applied, switch back and start the previous version. The backup stays as the last resort.
 */
export interface UpgradeOptions {
  bundle: string;
  pubkey: string;
  prefix: string;
  healthUrl: string;
  healthTimeoutMs: number;
  stopCommand: string;
  startCommand: string;
  /** Arguments of `worksynapse backup` (empty: no backup, refused unless asked for). */
  backupArgs: string[] | null;
  out(line: string): void;
  verifyContents(file: string): Promise<number>;
}

const BUNDLE_NAME = /^worksynapse-(\d+\.\d+\.\d+(?:[-.][0-9A-Za-z.]+)?)-(linux-(?:x64|arm64))$/;
function sh(command: string, out: (s: string) => void): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn("sh", ["-c", command], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (d: Buffer) => out(d.toString().trimEnd()));
    child.stderr.on("data", (d: Buffer) => out(d.toString().trimEnd()));
    child.on("exit", (code) => resolve(code ?? 1));
  });
}
function cli(
  prefixCurrent: string,
  args: string[],
  out: (s: string) => void,
): Promise<{ code: number; text: string }> {
  return new Promise((resolve) => {
    const child = spawn(path.join(prefixCurrent, "bin", "worksynapse"), args, {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let text = "";
    child.stdout.on("data", (d: Buffer) => (text += d.toString()));
    child.stderr.on("data", (d: Buffer) => (text += d.toString()));
    child.on("exit", (code) => {
      if (text.trim()) out(text.trimEnd());
      resolve({ code: code ?? 1, text });
    });
  });
}

async function healthy(url: string, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if ((await fetch(url, { signal: AbortSignal.timeout(2000) })).status === 200) return true;
    } catch {
      // not serving yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

function pointCurrent(prefix: string, target: string): void {
  const tmp = path.join(prefix, `current.new-${process.pid}`);
  rmSync(tmp, { force: true });
  symlinkSync(target, tmp);
  renameSync(tmp, path.join(prefix, "current"));
}

/**
 * Where an upgrade under way says how far it got, so that running it again with the same bundle resumes it
 * (after a kill or a power loss) instead of being refused. Removed when the upgrade ends either way.
 */
export interface UpgradeJournal {
  /** The bundle's name (worksynapse-<version>-<platform>). */
  bundle: string;
  /** The `current` link's target before the upgrade (versions/<name>). */
  from: string;
  fromVersion: string;
  /** "backed-up": stopped and backed up; "switching": about to point `current` at the new version (the
   *  migrations applied before are known); "switched": `current` points at it, migrating or starting. */
  step: "backed-up" | "switching" | "switched";
  /** Migrations applied before the upgrade (what a roll-back keeps). */
  before?: string[];
}

export const journalFile = (prefix: string) => path.join(prefix, "upgrade-journal.json");

function writeJournal(prefix: string, j: UpgradeJournal): void {
  const tmp = `${journalFile(prefix)}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(j, null, 2) + "\n");
  renameSync(tmp, journalFile(prefix));
}

function readJournal(prefix: string): UpgradeJournal | null {
  const file = journalFile(prefix);
  return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as UpgradeJournal) : null;
}

/** Applied migrations as `migrate status` lists them. */
const applied = (status: string) =>
  status
    .split("\n")
    .filter((l) => /\bapplied\s*$/.test(l))
    .map((l) => l.split(/\s+/)[0] as string);

export async function upgrade(o: UpgradeOptions): Promise<"upgraded" | "rolled back"> {
  const { out } = o;
  // 1. The bundle: signature, contents, version.
  const sig = readFileSync(`${o.bundle}.minisig`, "utf8");
  const comment = await verifyFile(o.bundle, sig, readFileSync(o.pubkey, "utf8"));
  out(`verified  ${path.basename(o.bundle)} (${comment})`);
  out(`verified  ${await o.verifyContents(o.bundle)} files against SHA256SUMS`);
  const name = path.basename(o.bundle).replace(/\.tar\.gz$/, "");
  const m = BUNDLE_NAME.exec(name);
  if (!m) throw new Error(`${path.basename(o.bundle)} is not named as a WorkSynapse bundle`);
  const newVersion = m[1] as string;
  const current = path.join(o.prefix, "current");
  if (!existsSync(current)) throw new Error(`${current} does not exist: install with install.sh first`);
  // An upgrade that was interrupted: resumed with its bundle, refused with another.
  const journal = readJournal(o.prefix);
  if (journal && journal.bundle !== name)
    throw new Error(
      `an upgrade to ${journal.bundle} was interrupted (${journalFile(o.prefix)}); run upgrade again with that bundle to finish it or roll it back`,
    );
  const oldTarget = journal?.from ?? readlinkSync(current);
  const oldName = path.basename(oldTarget);
  const oldVersion =
    journal?.fromVersion ??
    (JSON.parse(readFileSync(path.join(current, "package.json"), "utf8")) as { version: string }).version;
  if (!journal && oldName === name) throw new Error(`${name} is already the current version`);
  if (compareVersions(newVersion, oldVersion) < 0)
    throw new Error(
      `${newVersion} is older than the installed ${oldVersion}: downgrades are refused (restore a backup instead)`,
    );
  if (journal)
    out(`resuming  the interrupted upgrade ${oldVersion} -> ${newVersion} (it had reached: ${journal.step})`);
  else out(`upgrading ${oldVersion} -> ${newVersion}`);

  // 2. Stop, back up with the running version (not again when resuming: the backup was taken).
  if ((await sh(o.stopCommand, out)) !== 0) throw new Error("the stop command failed; nothing was changed");
  if (o.backupArgs && !journal) {
    const b = await cli(current, ["backup", ...o.backupArgs], out);
    if (b.code !== 0) {
      await sh(o.startCommand, out);
      throw new Error("the backup failed; the previous version was started again and nothing was changed");
    }
  }
  const versions = path.join(o.prefix, "versions");
  let before: string[];
  if (journal?.step === "switching" || journal?.step === "switched") {
    before = journal.before ?? [];
    pointCurrent(o.prefix, `versions/${name}`);
  } else {
    writeJournal(o.prefix, { bundle: name, from: oldTarget, fromVersion: oldVersion, step: "backed-up" });
    before = await unpackAndSwitch(o, name, versions, { from: oldTarget, fromVersion: oldVersion });
  }
  return finish(o, { name, newVersion, oldVersion, oldTarget, before, versions });
}

/** Step 3: the new version beside the old one, then `current` switched to it. The migrations applied before. */
async function unpackAndSwitch(
  o: UpgradeOptions,
  name: string,
  versions: string,
  was: { from: string; fromVersion: string },
): Promise<string[]> {
  const { out } = o;
  const current = path.join(o.prefix, "current");
  const work = mkdtempSync(path.join(versions, ".unpack-"));
  try {
    // The system's tar: much quicker than a JavaScript one on a bundle of thousands of files.
    const code = await new Promise<number>((resolve) =>
      spawn("tar", ["-xzf", o.bundle, "-C", work, "--no-same-owner"], { stdio: "ignore" }).on("exit", (c) =>
        resolve(c ?? 1),
      ),
    );
    if (code !== 0) throw new Error("the bundle could not be unpacked");
    rmSync(path.join(versions, name), { recursive: true, force: true });
    renameSync(path.join(work, name), path.join(versions, name));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const before = applied((await cli(path.join(versions, name), ["migrate", "status"], () => {})).text);
  writeJournal(o.prefix, { bundle: name, ...was, step: "switching", before });
  pointCurrent(o.prefix, `versions/${name}`);
  writeJournal(o.prefix, { bundle: name, ...was, step: "switched", before });
  out(`switched  ${current} -> versions/${name}`);
  return before;
}

/** Steps 4 and 5: migrate, start, check; roll back when that fails. The journal is removed at the end. */
async function finish(
  o: UpgradeOptions,
  u: {
    name: string;
    newVersion: string;
    oldVersion: string;
    oldTarget: string;
    before: string[];
    versions: string;
  },
): Promise<"upgraded" | "rolled back"> {
  try {
    return await migrateStartCheck(o, u);
  } finally {
    rmSync(journalFile(o.prefix), { force: true });
  }
}

async function migrateStartCheck(
  o: UpgradeOptions,
  { newVersion, oldVersion, oldTarget, before, versions }: Parameters<typeof finish>[1],
): Promise<"upgraded" | "rolled back"> {
  const { out } = o;
  const current = path.join(o.prefix, "current");
  // 4. Migrate, start, check.
  // `migrate up` prints every migration's state afterwards.
  const migrated = await cli(current, ["migrate", "up"], () => {});
  const added = applied(migrated.text).filter((x) => !before.includes(x));
  let ok = migrated.code === 0;
  if (!ok) out(`migration failed: ${migrated.text.trim().split("\n").slice(-3).join(" / ")}`);
  if (ok) {
    ok = (await sh(o.startCommand, out)) === 0 && (await healthy(o.healthUrl, o.healthTimeoutMs));
    if (!ok) out(`health check failed: ${o.healthUrl} did not answer 200 within ${o.healthTimeoutMs} ms`);
  }
  if (ok) {
    out(
      `upgraded  to ${newVersion}; ${added.length} migrations applied; the previous version stays in ${versions}`,
    );
    return "upgraded";
  }

  // 5. Roll back: stop the new version, undo its migrations (newest first), point back, start the old one.
  out("rolling back");
  await sh(o.stopCommand, out);
  for (let i = 0; i < added.length; i++) {
    const d = await cli(current, ["migrate", "down"], () => {});
    if (d.code !== 0) {
      pointCurrent(o.prefix, oldTarget);
      throw new Error(
        `undoing the upgrade's migrations failed (${d.text.trim().split("\n").pop() ?? ""}); restore the backup taken before the upgrade (worksynapse restore)`,
      );
    }
  }
  pointCurrent(o.prefix, oldTarget);
  out(`switched  ${current} -> ${oldTarget}; ${added.length} migrations undone`);
  // The previous version gets at least two minutes (a loaded machine starts slowly): the site falls back on it.
  const started =
    (await sh(o.startCommand, out)) === 0 &&
    (await healthy(o.healthUrl, Math.max(o.healthTimeoutMs, 120_000)));
  if (!started)
    throw new Error(
      "the previous version did not come back healthy; restore the backup taken before the upgrade",
    );
  out(`rolled back to ${oldVersion}, which is serving`);
  return "rolled back";
}
