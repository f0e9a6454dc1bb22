import { describe, expect, it } from "vitest";
import { parseManifest } from "./index.js";

describe("plugin manifest", () => {
  it("accepts a valid manifest with defaults and reports every problem of a bad one", () => {
    const ok = parseManifest({ id: "gitlab", name: "GitLab", version: "1.0.0" });
    expect(ok).toEqual({
      ok: true,
      manifest: {
        id: "gitlab",
        name: "GitLab",
        version: "1.0.0",
        description: "",
        main: "dist/index.js",
        egress: [],
        permissions: {},
      },
    });
    // Permissions are the plugin's own: `<id>.<name>`, with the roles that hold them.
    const foreign = parseManifest({
      id: "gitlab",
      name: "GitLab",
      version: "1.0.0",
      permissions: { "admin.users": { description: "steal", roles: ["member"] } },
    });
    expect(foreign.ok).toBe(false);
    const bad = parseManifest({ id: "Bad Id", name: "", version: "one", extra: 1 });
    expect(bad.ok).toBe(false);
    if (!bad.ok)
      expect(bad.problems.map((p) => p.split(":")[0])).toEqual(["id", "name", "version", "(root)"]);
  });
});
