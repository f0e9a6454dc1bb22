// Renders the endpoint table of docs/api.md from core's OpenAPI document.
// `node scripts/api-doc.mjs` rewrites the table; a test fails when the doc is stale.

/** Markdown table of every operation: method, path, who may call it, what it does. */
export function renderApiTable(doc) {
  const rows = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const who =
        op["x-auth"] !== "user"
          ? "anyone"
          : op["x-scope"] === "installation"
            ? "system administrator"
            : op["x-permission"]
              ? `\`${op["x-permission"]}\``
              : "signed in";
      rows.push(
        `| ${method.toUpperCase()} | \`${path}\` | ${who} | ${String(op.summary ?? "").replace(/\|/g, "\\|")} |`,
      );
    }
  }
  return ["| method | path | who may call it | what it does |", "|---|---|---|---|", ...rows].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { readFileSync, writeFileSync } = await import("node:fs");
  const { openapiDocument } = await import("./openapi-document.mjs");
  const file = new URL("../docs/api.md", import.meta.url);
  const doc = readFileSync(file, "utf8");
  const start = doc.indexOf("<!-- api-table:start -->");
  const end = doc.indexOf("<!-- api-table:end -->");
  if (start < 0 || end < 0) throw new Error("markers missing in docs/api.md");
  writeFileSync(
    file,
    `${doc.slice(0, start)}<!-- api-table:start -->\n${renderApiTable(openapiDocument())}\n${doc.slice(end)}`,
  );
  console.log("docs/api.md updated");
}
