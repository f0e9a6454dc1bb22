import { randomUUID } from "node:crypto";
import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrganization } from "../../core/src/modules/identity/identity.service.js";
import { generateSigningKey } from "../../core/src/platform/minisign.js";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { PASSWORD, signIn, createTestOrg, type Client } from "../support/identity.js";
import { getTestServer, type TestServer } from "../support/server.js";

/**
 * Signed model packs: made with `worksynapse models pack` (real llama.cpp reads the GGUF), dropped into the
 * server's import folder, listed with what a check of each found and imported through the API the Models page
 * uses. Tampered, untrusted and unsigned packs are refused with a clear 4xx and change nothing.
 */
const BIN = new URL("../../installer/bin/worksynapse.mjs", import.meta.url).pathname;
const work = mkdtempSync(path.join(tmpdir(), "ws-packs-"));
const importDir = path.join(work, "import");
const trusted = generateSigningKey();
const stranger = generateSigningKey();
let srv: TestServer;
let admin: Client;

const run = promisify(execFile);
async function pack(key: string, name: string, outDir: string): Promise<void> {
  const keyFile = path.join(work, `${name}.key`);
  writeFileSync(keyFile, key, { mode: 0o600 });
  const gguf = path.join(work, `${name}.gguf`);
  makeTinyModel(gguf);
  await run(
    process.execPath,
    [
      BIN,
      "models",
      "pack",
      gguf,
      "--name",
      name,
      "--role",
      "chat",
      "--licence",
      "MIT",
      "--key",
      keyFile,
      "--out",
      outDir,
    ],
    { env: { ...process.env, WORKSYNAPSE_DATA_DIR: work } },
  );
}

interface Pack {
  folder: string;
  manifest: { name: string; licence: string; role: string } | null;
  problem: string | null;
}

beforeAll(async () => {
  mkdirSync(importDir, { recursive: true });
  await pack(trusted.privatePem, "Ward Helper", importDir);
  await pack(stranger.privatePem, "Stranger", importDir);
  // A copy of the good pack whose model file was changed after signing.
  cpSync(path.join(importDir, "Ward-Helper.wsmodel"), path.join(importDir, "Tampered.wsmodel"), {
    recursive: true,
  });
  const f = path.join(importDir, "Tampered.wsmodel", "Ward-Helper.gguf");
  const raw = readFileSync(f);
  raw[raw.length - 10] = (raw[raw.length - 10] as number) ^ 0xff;
  writeFileSync(f, raw);
  mkdirSync(path.join(importDir, "Unsigned.wsmodel"));
  writeFileSync(path.join(importDir, "Unsigned.wsmodel", "manifest.json"), "{}");
  srv = await getTestServer({
    env: {
      WORKSYNAPSE_AI_THREADS: "1",
      WORKSYNAPSE_AI_IMPORT_DIR: importDir,
      WORKSYNAPSE_AI_PACK_KEYS: trusted.publicKey.split("\n")[1] as string,
    },
  });
  await createOrganization(
    srv.db.knex,
    {
      name: "Packs",
      ownerEmail: "root@packs.example",
      ownerName: "Root",
      ownerPassword: PASSWORD,
      systemAdmin: true,
    },
    { actorType: "system", actorId: "test" },
  );
  admin = await signIn(srv, "root@packs.example");
}, 120_000);

afterAll(async () => {
  await srv?.close();
  rmSync(work, { recursive: true, force: true });
});

describe("model packs", () => {
  it("lists the import folder's packs with what the check of each found", async () => {
    const r = await admin.json<{ data: { folder: string; packs: Pack[] } }>("GET", "/api/ai/model-packs");
    expect(r.data.folder).toBe(importDir);
    const by = Object.fromEntries(r.data.packs.map((p) => [p.folder, p]));
    expect(Object.keys(by).sort()).toEqual([
      "Stranger.wsmodel",
      "Tampered.wsmodel",
      "Unsigned.wsmodel",
      "Ward-Helper.wsmodel",
    ]);
    expect(by["Ward-Helper.wsmodel"]?.problem).toBeNull();
    expect(by["Ward-Helper.wsmodel"]?.manifest).toMatchObject({
      name: "Ward Helper",
      licence: "MIT",
      role: "chat",
    });
    expect(by["Stranger.wsmodel"]?.problem).toMatch(/signed with a key this server does not trust/);
    expect(by["Tampered.wsmodel"]?.problem).toMatch(/not the file the signed manifest names/);
    expect(by["Unsigned.wsmodel"]?.problem).toMatch(/not signed/);
  });

  it("imports a verified pack, and refuses the others with a clear 4xx, changing nothing", async () => {
    for (const [folder, status, message] of [
      ["Stranger.wsmodel", 422, /does not trust/],
      ["Tampered.wsmodel", 422, /changed or damaged/],
      ["Unsigned.wsmodel", 400, /not signed/],
      ["../import/Ward-Helper.wsmodel", 400, /name of a pack folder/],
      ["Missing.wsmodel", 404, /No pack/],
    ] as const) {
      const r = await admin.request("POST", "/api/ai/model-packs/import", { folder });
      expect(r.status, folder).toBe(status);
      expect(await r.text(), folder).toMatch(message);
    }
    expect((await admin.json<{ data: { models: unknown[] } }>("GET", "/api/ai/models")).data.models).toEqual(
      [],
    );

    const ok = await admin.request("POST", "/api/ai/model-packs/import", { folder: "Ward-Helper.wsmodel" });
    expect(ok.status, await ok.clone().text()).toBe(201);
    const models = (
      await admin.json<{ data: { models: { name: string; roles: string[] }[] } }>("GET", "/api/ai/models")
    ).data.models;
    expect(models.map((m) => [m.name, m.roles])).toEqual([["Ward Helper", ["chat"]]]);
    const again = await admin.request("POST", "/api/ai/model-packs/import", {
      folder: "Ward-Helper.wsmodel",
    });
    expect(again.status).toBe(409);
  });

  it("lets one file serve chat and embeddings: imported again for another role, or its roles set", async () => {
    // The same GGUF as the imported pack's, imported for embeddings with the CLI: its model gains the role.
    const env = { ...process.env, DATABASE_URL: srv.pg.url, WORKSYNAPSE_DATA_DIR: srv.config.dataDir };
    const gguf = path.join(work, "Ward Helper.gguf");
    const r = await run(process.execPath, [BIN, "models", "import", gguf, "--role", "embedding"], { env });
    expect(r.stdout).toMatch(/Ward Helper\s+chat,embedding/);
    type Models = { data: { models: { id: string; name: string; roles: string[] }[] } };
    const list = (await admin.json<Models>("GET", "/api/ai/models")).data.models;
    expect(list.map((m) => [m.name, m.roles])).toEqual([["Ward Helper", ["chat", "embedding"]]]);
    const id = list[0]!.id;
    // Again for a role it has: 409, nothing changes.
    const again = await run(process.execPath, [BIN, "models", "import", gguf, "--role", "chat"], {
      env,
    }).catch((e: { code: number; stderr: string }) => e);
    expect((again as { code: number }).code).not.toBe(0);
    expect((again as { stderr: string }).stderr).toMatch(/already registered as Ward Helper for chat/);
    // Organizations use it for both: their knowledge base embeds with it.
    const org = await createTestOrg(srv, "roles");
    const status = await org.owner.json<{ data: { embeddingModel: { name: string } | null } }>(
      "GET",
      "/api/kb/status",
    );
    expect(status.data.embeddingModel?.name).toBe("Ward Helper");
    // A system administrator sets the roles; at least one; others may not.
    const set = (c: Client, roles: string[]) => c.request("PUT", `/api/ai/models/${id}/roles`, { roles });
    const chatOnly = await set(admin, ["chat"]);
    expect(chatOnly.status).toBe(200);
    expect(((await chatOnly.json()) as { data: { roles: string[] } }).data.roles).toEqual(["chat"]);
    expect((await set(admin, [])).status).toBe(400);
    expect((await set(admin, ["reranker"])).status).toBe(400);
    expect((await set(org.owner, ["chat", "embedding"])).status).toBe(403);
    const missing = await admin.request("PUT", `/api/ai/models/${randomUUID()}/roles`, { roles: ["chat"] });
    expect(missing.status).toBe(404);
    expect((await admin.json<Models>("GET", "/api/ai/models")).data.models[0]?.roles).toEqual(["chat"]);
  });

  it("is for system administrators only", async () => {
    const org = await createTestOrg(srv, "packs");
    expect((await org.owner.request("GET", "/api/ai/model-packs")).status).toBe(403);
    expect(
      (await org.owner.request("POST", "/api/ai/model-packs/import", { folder: "Ward-Helper.wsmodel" }))
        .status,
    ).toBe(403);
  });
});
