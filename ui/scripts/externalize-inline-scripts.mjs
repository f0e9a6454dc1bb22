// Moves every inline <script> of the built HTML pages into a content-hashed file, so the
// Content-Security-Policy can be "script-src 'self'" with no inline exceptions.
// SvelteKit's bootstrap uses document.currentScript, which a classic external script still has.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";

const dir = process.argv[2] ?? "build";
const outDir = path.join(dir, "_app", "immutable", "boot");
mkdirSync(outDir, { recursive: true });
let moved = 0;
for (const file of readdirSync(dir).filter((f) => f.endsWith(".html"))) {
  const full = path.join(dir, file);
  const html = readFileSync(full, "utf8").replace(/<script>([\s\S]*?)<\/script>/g, (_, code) => {
    const hash = createHash("sha256").update(code).digest("hex").slice(0, 16);
    writeFileSync(path.join(outDir, `${hash}.js`), code.trim() + "\n");
    moved += 1;
    return `<script src="/_app/immutable/boot/${hash}.js"></script>`;
  });
  if (/<script>|\sstyle="|\son[a-z]+="/.test(html))
    throw new Error(`${file} still has inline script or style`);
  writeFileSync(full, html);
}
console.log(`externalized ${moved} inline script(s)`);
