import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (
      existsSync(pkg) &&
      (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "@worksynapse/core"
    ) {
      return dir;
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("cannot find the core package folder");
    dir = parent;
  }
}

/** The core package folder (same answer from source and from the build). */
export const CORE_ROOT = findRoot();
/** Static files shipped with core. */
export const ASSETS_DIR = path.join(CORE_ROOT, "assets");
/** The built web UI, by default. */
export const DEFAULT_UI_DIR = path.resolve(CORE_ROOT, "..", "ui", "build");
/** The plugins shipped with the bundle, by default. */
export const DEFAULT_PLUGINS_DIR = path.resolve(CORE_ROOT, "..", "plugins");
/** Version of this build. */
export const VERSION = (
  JSON.parse(readFileSync(path.join(CORE_ROOT, "package.json"), "utf8")) as { version: string }
).version;
