// Renders the configuration table of docs/configuration.md from core's config schema.
// `node scripts/config-doc.mjs` rewrites the table; a test fails when the doc is stale.

/** Markdown table of every setting. */
export function renderConfigTable(settings) {
  const cell = (v) => String(v).replace(/\|/g, "\\|").replace(/\n/g, " ");
  const rows = settings.map((s) => {
    const env = [s.env, ...s.aliases].map((e) => `\`${e}\``).join(", ") + (s.secret ? " (+`_FILE`)" : "");
    const def = s.defaultValue === undefined ? "" : `\`${JSON.stringify(s.defaultValue)}\``;
    return `| \`${s.key}\` | ${env} | ${def} | ${cell(s.description)} |`;
  });
  return ["| setting | environment | default | meaning |", "|---|---|---|---|", ...rows].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { readFileSync, writeFileSync } = await import("node:fs");
  const { listSettings } = await import("../core/dist/src/index.js");
  const file = new URL("../docs/configuration.md", import.meta.url);
  const doc = readFileSync(file, "utf8");
  const start = doc.indexOf("<!-- config-table:start -->");
  const end = doc.indexOf("<!-- config-table:end -->");
  if (start < 0 || end < 0) throw new Error("markers missing in docs/configuration.md");
  const table = renderConfigTable(listSettings());
  writeFileSync(file, `${doc.slice(0, start)}<!-- config-table:start -->\n${table}\n${doc.slice(end)}`);
  console.log("docs/configuration.md updated");
}
