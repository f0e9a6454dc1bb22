import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
// @ts-expect-error plain JS build script
import { generateTypes } from "../../scripts/gen-api-client.mjs";
// @ts-expect-error plain JS build script
import { openapiDocument } from "../../scripts/openapi-document.mjs";
import { renderApiTable } from "../../scripts/api-doc.mjs";

describe("the UI's API client", () => {
  it("is generated from the current OpenAPI document (run `npm run codegen` after changing routes)", async () => {
    const committed = readFileSync(new URL("../../ui/src/lib/api/schema.d.ts", import.meta.url), "utf8");
    const fresh = (await generateTypes(openapiDocument())) as string;
    expect(committed).toBe(fresh);
  });
});

describe("docs/api.md", () => {
  it("lists every endpoint of the OpenAPI document (run `node scripts/api-doc.mjs` after changing routes)", () => {
    const doc = readFileSync(new URL("../../docs/api.md", import.meta.url), "utf8");
    expect(doc).toContain(renderApiTable(openapiDocument()));
  });
});
