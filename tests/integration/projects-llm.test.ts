import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createMember, createTestOrg, type Client, type TestOrg } from "../support/identity.js";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { importModel } from "../../core/src/modules/ai/models.service.js";
import { proposalSchema, summarySchema } from "../../core/src/modules/projects/projects.schemas.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";

// The AI project manager on real llama.cpp inference (the generated tiny model, and stories260K where
// present). What they write is noise; what must hold whatever they write: every proposal parses against its
// schema, accepting it creates exactly the accepted tasks in one transaction, and every summary claim links to
// tasks of the project.

const STORIES = new URL("../../../shared/models/stories260K.gguf", import.meta.url).pathname;
let srv: TestServer;
let org: TestOrg;
let lea: { id: string; client: Client };
let sam: { id: string; client: Client };
const models: string[] = [];

type Data<T> = { data: T };

beforeAll(async () => {
  srv = await getTestServer({ env: { WORKSYNAPSE_AI_THREADS: "1", WORKSYNAPSE_AI_PARALLEL: "1" } });
  const tiny = path.join(mkdtempSync(path.join(tmpdir(), "ws-pm-llm-")), "tiny.gguf");
  makeTinyModel(tiny);
  const llama = await srv.ai!.llama();
  models.push(
    (await importModel(srv.db.knex, llama, srv.config, { file: tiny, name: "tiny", role: "chat" })).id,
  );
  if (existsSync(STORIES))
    models.push(
      (
        await importModel(srv.db.knex, llama, srv.config, {
          file: STORIES,
          name: "stories260K",
          role: "chat",
        })
      ).id,
    );
  org = await createTestOrg(srv, "pmllm");
  lea = await createMember(org, ["member"], "lea");
  sam = await createMember(org, ["member"], "sam");
}, 120_000);
afterAll(() => srv?.close());

describe("AI project manager on real inference", () => {
  it("always proposes a breakdown that parses; accepting creates exactly the accepted tasks", async () => {
    const goals = [
      "Move the outpatient records to the new archive before the audit",
      "Train every ward nurse on the new infusion pumps",
      "Replace the badge readers on floors two and three",
    ];
    for (const modelId of models) {
      await org.owner.json("PUT", "/api/ai/defaults", { chatModelId: modelId }, 204);
      for (const [i, goal] of goals.entries()) {
        const project = (
          await lea.client.json<Data<{ id: string }>>(
            "POST",
            "/api/projects",
            { name: `Plan ${modelId.slice(0, 4)} ${i}`, members: [{ userId: sam.id, role: "editor" }] },
            201,
          )
        ).data;
        const r = await lea.client.request("POST", `/api/projects/${project.id}/breakdown`, {
          goal,
          maxTasks: 2 + i,
        });
        const text = await r.text();
        expect(r.status, text).toBe(200);
        const proposal = proposalSchema.parse((JSON.parse(text) as Data<unknown>).data);
        expect(proposal.tasks.length).toBeGreaterThanOrEqual(1);
        expect(proposal.tasks.length).toBeLessThanOrEqual(2 + i);
        for (const [n, t] of proposal.tasks.entries()) {
          expect(t.ref).toBe(String(n + 1));
          expect(t.dependsOn.every((d) => Number(d) <= n)).toBe(true);
          expect([lea.id, sam.id]).toContain(t.assigneeId);
        }
        // Accept all but the last (and its dependants lose that dependency).
        const last = proposal.tasks.at(-1)!.ref;
        const accepted = proposal.tasks.length > 1 ? proposal.tasks.slice(0, -1) : proposal.tasks;
        const body = accepted.map((t) => ({
          ...t,
          dependsOn:
            accepted.length < proposal.tasks.length ? t.dependsOn.filter((d) => d !== last) : t.dependsOn,
        }));
        const ids = (
          await lea.client.json<Data<{ taskIds: string[] }>>(
            "POST",
            `/api/projects/${project.id}/breakdown/accept`,
            { runId: proposal.runId, goal, tasks: body },
            201,
          )
        ).data.taskIds;
        const created = (
          await lea.client.json<{ data: { id: string; title: string; blockedBy: string[] }[] }>(
            "GET",
            `/api/projects/${project.id}/tasks?sort=number`,
          )
        ).data;
        // Blockers are created first, so numbers follow dependencies, not the proposal's order: compare by id.
        const byId = new Map(created.map((t) => [t.id, t]));
        expect([...byId.keys()].sort()).toEqual([...ids].sort());
        for (const [n, t] of body.entries()) {
          const task = byId.get(ids[n] as string)!;
          expect(task.title).toBe(t.title);
          expect(task.blockedBy.sort()).toEqual(t.dependsOn.map((d) => ids[Number(d) - 1]).sort());
        }
        const run = await withOrg(srv.db.knex, org.orgId, (trx) =>
          trx("ai_runs").where({ id: proposal.runId }).first(),
        );
        expect(run.status).toBe("completed");
        expect(run.completion_tokens).toBeGreaterThan(0);
      }
    }
  }, 600_000);

  it("writes weekly summaries whose claims all link to the project's tasks", async () => {
    const projects = (await lea.client.json<Data<{ id: string }[]>>("GET", "/api/projects")).data;
    for (const p of projects.slice(0, 2)) {
      const r = await lea.client.request("POST", `/api/projects/${p.id}/summary`);
      const text = await r.text();
      expect(r.status, text).toBe(201);
      const s = summarySchema.parse((JSON.parse(text) as Data<unknown>).data);
      const ids = new Set(
        (await lea.client.json<{ data: { id: string }[] }>("GET", `/api/projects/${p.id}/tasks`)).data.map(
          (t) => t.id,
        ),
      );
      expect(s.claims.length).toBeGreaterThanOrEqual(1);
      for (const c of s.claims) {
        expect(c.tasks.length).toBeGreaterThanOrEqual(1);
        expect(c.tasks.every((t) => ids.has(t.id))).toBe(true);
      }
    }
  }, 300_000);
});
