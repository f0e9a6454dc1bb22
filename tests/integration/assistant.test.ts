import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { getTestServer, type TestServer } from "../support/server.js";
import { createMember, createTestOrg, type Client, type TestOrg } from "../support/identity.js";
import { ScriptedEngine } from "../support/scripted-engine.js";
import { readEvents } from "../support/sse.js";
import { makeTinyModel } from "../../scripts/make-tiny-model.js";
import { importModel } from "../../core/src/modules/ai/models.service.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";
import { AppError } from "../../core/src/platform/http/errors.js";

// Agent tests on a scripted stand-in for the model: it emits exactly the decisions a test wants (out-of-scope
// tools, tools without permission, bad arguments, other organizations' ids, unapproved writes, endless
// loops), ignoring the grammar, so every block below is the loop's own doing.

const engine = new ScriptedEngine();
const dir = mkdtempSync(path.join(tmpdir(), "ws-assistant-"));
let srv: TestServer;
let org: TestOrg;
let other: TestOrg;
let member: { id: string; email: string; client: Client };
let auditor: { id: string; email: string; client: Client };

type Ev = { event: string; data: unknown };
type Data<T> = { data: T };
interface Approval {
  id: string;
  runId: string;
  tool: string;
  arguments: Record<string, unknown>;
  summary: string;
}
interface Done {
  message: {
    id: string;
    content: string;
    citations: { ref: number }[];
    toolCalls: { tool: string; outcome: string }[];
  };
  run: { id: string; status: string; steps: number };
}

async function conversation(c: Client): Promise<string> {
  return (await c.json<Data<{ id: string }>>("POST", "/api/assistant/conversations", {}, 201)).data.id;
}
async function ask(c: Client, conv: string, content: string, extra: object = {}): Promise<Ev[]> {
  const r = await c.request("POST", `/api/assistant/conversations/${conv}/messages`, {
    content,
    grounded: false,
    ...extra,
  });
  if (r.status !== 200) throw new Error(`ask: ${r.status} ${await r.text()}`);
  return readEvents(r);
}
async function decide(c: Client, approval: string, decision: "approve" | "deny"): Promise<Ev[]> {
  const r = await c.request("POST", `/api/assistant/approvals/${approval}`, { decision });
  if (r.status !== 200) throw new Error(`decide: ${r.status} ${await r.text()}`);
  return readEvents(r);
}
const done = (ev: Ev[]) => ev.find((e) => e.event === "done")?.data as Done;
const approvalOf = (ev: Ev[]) =>
  (ev.find((e) => e.event === "approval")?.data as { approval: Approval }).approval;
const steps = (ev: Ev[]) =>
  ev
    .filter((e) => e.event === "step")
    .map((e) => e.data as { tool: string; outcome: string; summary: string });

/** Rows of the organization, read as the application (row-level security applies). */
const rows = <T>(orgId: string, fn: (trx: import("knex").Knex.Transaction) => Promise<T>) =>
  withOrg(srv.db.knex, orgId, fn);
/** The outcomes of a run's logged steps, in order. */
const outcomes = (runId: string) =>
  rows(org.orgId, (trx) => trx("ai_run_steps").where({ run_id: runId }).orderBy("n").pluck("outcome"));
const noteCount = (orgId: string, title: string) =>
  rows(orgId, async (trx) =>
    Number(((await trx("notes").where({ title }).count({ n: "*" })) as [{ n: string }])[0].n),
  );

beforeAll(async () => {
  srv = await getTestServer({
    assistantEngine: engine,
    env: {
      WORKSYNAPSE_AI_THREADS: "1",
      WORKSYNAPSE_ASSISTANT_MAX_STEPS: "4",
      WORKSYNAPSE_ASSISTANT_MAX_RUN_MS: "4000",
      WORKSYNAPSE_ASSISTANT_MAX_RUN_TOKENS: "5000",
    },
  });
  const tiny = path.join(dir, "tiny.gguf");
  makeTinyModel(tiny);
  await importModel(srv.db.knex, await srv.ai!.llama(), srv.config, {
    file: tiny,
    name: "tiny",
    role: "chat",
  });
  org = await createTestOrg(srv, "asst");
  other = await createTestOrg(srv, "asstother");
  member = await createMember(org, ["member"], "mia");
  auditor = await createMember(org, ["auditor"], "audrey");
  // Test-only tools: one that needs a permission members lack, one that always fails.
  srv.tools!.register({
    name: "test.secret",
    description: "Reads the organization's secret settings.",
    permission: "admin.settings",
    effect: "read",
    input: z.strictObject({}),
    run: async () => ({ secret: "s3cr3t" }),
  });
  srv.tools!.register({
    name: "test.broken",
    description: "A tool that fails.",
    permission: "assistant.use",
    effect: "read",
    input: z.strictObject({ n: z.number().int() }),
    run: async () => {
      throw AppError.badRequest("The backend said no.");
    },
  });
}, 120_000);
afterAll(() => srv?.close());

describe("assistant agent loop (scripted model)", () => {
  it("streams an answer, stores both messages, and logs the run", async () => {
    engine.script = () => ({ action: "answer", answer: 'Hello **there**, line\nbreak "quoted".' });
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "Say hello");
    const tokens = ev.filter((e) => e.event === "token").map((e) => (e.data as { text: string }).text);
    expect(tokens.length).toBeGreaterThan(1);
    expect(tokens.join("")).toBe('Hello **there**, line\nbreak "quoted".');
    const d = done(ev);
    expect(d.run.status).toBe("completed");
    const detail = (
      await member.client.json<
        Data<{ conversation: { title: string }; messages: { role: string; content: string }[] }>
      >("GET", `/api/assistant/conversations/${conv}`)
    ).data;
    expect(detail.conversation.title).toBe("Say hello");
    expect(detail.messages.map((m) => m.role)).toEqual(["user", "assistant"]);
    const run = (
      await auditor.client.json<Data<{ status: string; stepLog: { kind: string; outcome: string }[] }>>(
        "GET",
        `/api/assistant/runs/${d.run.id}`,
      )
    ).data;
    expect(run.status).toBe("completed");
    expect(run.stepLog).toEqual([expect.objectContaining({ kind: "answer", outcome: "answered" })]);
    // Members do not browse the execution log.
    expect((await member.client.request("GET", `/api/assistant/runs/${d.run.id}`)).status).toBe(403);
  });

  it("blocks out-of-scope tools and tools the user lacks the permission for, before execution", async () => {
    let step = 0;
    engine.script = () => {
      step += 1;
      if (step === 1) return { action: "tool", tool: "admin.drop_everything", arguments: {} };
      if (step === 2) return { action: "tool", tool: "test.secret", arguments: {} };
      return { action: "answer", answer: "Done." };
    };
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "Do something dangerous");
    expect(steps(ev).map((s) => [s.tool, s.outcome])).toEqual([
      ["admin.drop_everything", "blocked"],
      ["test.secret", "blocked"],
    ]);
    expect(JSON.stringify(ev)).not.toContain("s3cr3t");
    // The secret tool is not even offered to a member: not in the system text nor the decision schema.
    const offered = engine.prompts.at(-1) as { system: string; schema: object };
    expect(offered.system).not.toContain("test.secret");
    expect(JSON.stringify(offered.schema)).not.toContain("test.secret");
    const calls = await rows(org.orgId, (trx) =>
      trx("ai_tool_calls")
        .where({ run_id: done(ev).run.id })
        .select("tool", "status"),
    );
    expect(calls).toEqual([]);
    const log = await outcomes(done(ev).run.id);
    expect(log).toEqual(["blocked", "blocked", "answered"]);
    // An administrator has the permission: for them the same tool runs.
    step = 1;
    const adminConv = await conversation(org.owner);
    const adminEv = await ask(org.owner, adminConv, "Read the secret");
    expect(steps(adminEv).map((s) => s.outcome)).toEqual(["ok"]);
  });

  it("rejects schema-invalid arguments without running the tool", async () => {
    let step = 0;
    engine.script = () => {
      step += 1;
      if (step === 1) return { action: "tool", tool: "notes.search", arguments: { query: "", extra: true } };
      if (step === 2) return { action: "tool", tool: "notes.create", arguments: { title: 7 } };
      return { action: "answer", answer: "ok" };
    };
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "search badly");
    const s = steps(ev);
    expect(s.map((x) => x.outcome)).toEqual(["error", "error"]);
    expect(s[0]?.summary).toContain("Invalid arguments");
    const calls = await rows(org.orgId, (trx) => trx("ai_tool_calls").where({ run_id: done(ev).run.id }));
    expect(calls).toEqual([]);
    const log = await outcomes(done(ev).run.id);
    expect(log).toEqual(["invalid_arguments", "invalid_arguments", "answered"]);
  });

  it("never reaches another organization's data through its ids", async () => {
    const theirs = await other.owner.json<Data<{ id: string }>>(
      "POST",
      "/api/notes",
      { title: `Other org plan ${other.marker}`, body: `confidential ${other.marker}` },
      201,
    );
    let step = 0;
    engine.script = () => {
      step += 1;
      if (step === 1) return { action: "tool", tool: "notes.read", arguments: { id: theirs.data.id } };
      return { action: "answer", answer: "Nothing there." };
    };
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "read their note");
    expect(steps(ev)[0]?.outcome).toBe("error");
    expect(JSON.stringify(ev)).not.toContain(other.marker);
    expect(JSON.stringify(engine.prompts.slice(-2))).not.toContain(other.marker);
    // Their runs and approvals are not reachable either.
    const r = await other.owner.request("GET", `/api/assistant/conversations/${conv}`);
    expect(r.status).toBe(404);
  });

  it("pauses unapproved write calls; deny changes nothing; approve runs exactly once", async () => {
    const title = `Audit plan ${org.marker}`;
    let step = 0;
    engine.script = (s) => {
      step += 1;
      if (step === 1) return { action: "tool", tool: "notes.create", arguments: { title, body: "Steps." } };
      return {
        action: "answer",
        answer: s.prompt.includes("denied") ? "Understood, not created." : "Created.",
      };
    };
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "Create the audit plan note");
    const a = approvalOf(ev);
    expect(a).toMatchObject({ tool: "notes.create", arguments: { title, body: "Steps." } });
    expect(a.summary).toContain(title);
    expect(done(ev)).toBeUndefined();
    expect(await noteCount(org.orgId, title)).toBe(0);
    // The conversation shows the pending action.
    const pending = (
      await member.client.json<Data<{ pending: { id: string } | null }>>(
        "GET",
        `/api/assistant/conversations/${conv}`,
      )
    ).data.pending;
    expect(pending?.id).toBe(a.id);
    // Someone else cannot decide it, not even an administrator of the same organization.
    expect(
      (await org.owner.request("POST", `/api/assistant/approvals/${a.id}`, { decision: "approve" })).status,
    ).toBe(404);

    const denied = await decide(member.client, a.id, "deny");
    expect(steps(denied)[0]).toMatchObject({ tool: "notes.create", outcome: "rejected" });
    expect(done(denied).message.content).toBe("Understood, not created.");
    expect(await noteCount(org.orgId, title)).toBe(0);
    // A decided action cannot be decided again.
    expect(
      (await member.client.request("POST", `/api/assistant/approvals/${a.id}`, { decision: "approve" }))
        .status,
    ).toBe(409);

    // Second try: approve.
    step = 0;
    const again = await ask(member.client, conv, "Create it after all");
    const b = approvalOf(again);
    const [first, second] = await Promise.all([
      member.client.request("POST", `/api/assistant/approvals/${b.id}`, { decision: "approve" }),
      member.client.request("POST", `/api/assistant/approvals/${b.id}`, { decision: "approve" }),
    ]);
    const statuses = [first.status, second.status].sort();
    expect(statuses).toEqual([200, 409]);
    const okEvents = await readEvents(first.status === 200 ? first : second);
    await (first.status === 200 ? second : first).text();
    expect(steps(okEvents)[0]).toMatchObject({ tool: "notes.create", outcome: "approved" });
    expect(done(okEvents).message.content).toBe("Created.");
    expect(await noteCount(org.orgId, title)).toBe(1);
    // The executed write is in the audit log, bound to its run.
    const audited = await rows(org.orgId, (trx) =>
      trx("audit_log").where({ action: "ai.tool_call" }).orderBy("seq", "desc").first("details"),
    );
    expect(audited?.details).toMatchObject({ tool: "notes.create", runId: b.runId });
    const approvals = await rows(org.orgId, (trx) =>
      trx("ai_approvals").whereIn("id", [a.id, b.id]).orderBy("created_at").pluck("status"),
    );
    expect(approvals).toEqual(["denied", "used"]);
  });

  it("refuses an expired approval and one whose arguments changed", async () => {
    engine.script = (s) =>
      s.step === 1
        ? { action: "tool", tool: "notes.create", arguments: { title: "Expiring", body: "x" } }
        : { action: "answer", answer: "ok" };
    const conv = await conversation(member.client);
    const a = approvalOf(await ask(member.client, conv, "make a note"));
    await rows(org.orgId, (trx) =>
      trx("ai_approvals")
        .where({ id: a.id })
        .update({ expires_at: trx.raw("now() - interval '1 second'") }),
    );
    const r = await member.client.request("POST", `/api/assistant/approvals/${a.id}`, {
      decision: "approve",
    });
    expect(r.status).toBe(409);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe("approval_expired");

    const b = approvalOf(await ask(member.client, conv, "make a note again"));
    await rows(org.orgId, (trx) =>
      trx("ai_approvals")
        .where({ id: b.id })
        .update({ args_hash: "0".repeat(64) }),
    );
    expect(
      (await member.client.request("POST", `/api/assistant/approvals/${b.id}`, { decision: "approve" }))
        .status,
    ).toBe(409);
    expect(await noteCount(org.orgId, "Expiring")).toBe(0);
  });

  it("stops endless loops at the step budget, and the last step may only answer", async () => {
    engine.script = () => ({ action: "tool", tool: "notes.search", arguments: { query: "loop" } });
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "loop forever");
    const d = done(ev);
    expect(d.run).toMatchObject({ status: "budget_exceeded", steps: 4 });
    // Steps 1-3 ran the tool; step 4 offered no tool, so the same call was blocked.
    expect(steps(ev).map((s) => s.outcome)).toEqual(["ok", "ok", "ok", "blocked"]);
    const last = engine.prompts.at(-1) as { schema: object };
    expect(JSON.stringify(last.schema)).not.toContain('"tool"');
    const run = (
      await auditor.client.json<Data<{ status: string; error: string }>>(
        "GET",
        `/api/assistant/runs/${d.run.id}`,
      )
    ).data;
    expect(run.error).toContain("step budget");
  });

  it("stops at the token and time budgets", async () => {
    engine.script = () => ({
      decision: { action: "tool", tool: "notes.search", arguments: { query: "x" } },
      promptTokens: 3000,
    });
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "expensive");
    expect(done(ev).run.status).toBe("budget_exceeded");
    expect(done(ev).run.steps).toBe(2);

    engine.script = () => ({ decision: { action: "answer", answer: "late" }, delayMs: 10_000 });
    const t0 = Date.now();
    const slow = await ask(member.client, conv, "slow");
    expect(done(slow).run.status).toBe("budget_exceeded");
    expect(Date.now() - t0).toBeLessThan(9000);
  });

  it("turns a failing tool into an error observation and keeps going", async () => {
    engine.script = (s) =>
      s.step === 1
        ? { action: "tool", tool: "test.broken", arguments: { n: 1 } }
        : { action: "answer", answer: s.prompt.includes("The backend said no.") ? "It failed." : "?" };
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "use the broken tool");
    expect(steps(ev)[0]).toMatchObject({ outcome: "error", summary: "The backend said no." });
    expect(done(ev).message.content).toBe("It failed.");
  });

  it("treats malformed decisions as invalid steps and a cancelled stream as stopped", async () => {
    engine.script = (s) => (s.step === 1 ? "not json at all" : { action: "answer", answer: "recovered" });
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "garbage first");
    expect(done(ev).message.content).toBe("recovered");
    const log = await outcomes(done(ev).run.id);
    expect(log).toEqual(["invalid", "answered"]);

    engine.script = () => ({ decision: { action: "answer", answer: "never" }, delayMs: 3000 });
    const ac = new AbortController();
    const r = await member.client.request(
      "POST",
      `/api/assistant/conversations/${conv}/messages`,
      { content: "stop me", grounded: false },
      { signal: ac.signal },
    );
    expect(r.status).toBe(200);
    setTimeout(() => ac.abort(), 300);
    await r.text().catch(() => undefined);
    // The run ends as cancelled.
    let status = "";
    for (let i = 0; i < 50 && status !== "cancelled"; i++) {
      await new Promise((res) => setTimeout(res, 100));
      status = await rows(
        org.orgId,
        async (trx) =>
          (await trx("ai_runs").where({ question: "stop me" }).first("status"))?.status as string,
      );
    }
    expect(status).toBe("cancelled");
  });

  it("ends a run that cannot get the model (busy) as failed, with the reason, instead of leaving it running", async () => {
    engine.failOpen = AppError.unavailable("The AI is busy. Try again in a few seconds.", 2);
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "are you there?");
    expect(done(ev).run.status).toBe("failed");
    expect(
      (ev.find((e) => e.event === "error")?.data as { error: { message: string } }).error.message,
    ).toContain("busy");
    const run = (
      await auditor.client.json<Data<{ status: string; error: string }>>(
        "GET",
        `/api/assistant/runs/${done(ev).run.id}`,
      )
    ).data;
    expect(run).toMatchObject({ status: "failed", error: "The AI is busy. Try again in a few seconds." });
  });

  it("applies organization policies: deny hides a tool, allow runs a write without asking (audited)", async () => {
    await org.owner.json("PUT", "/api/assistant/policies", { tool: "notes.search", policy: "deny" }, 204);
    await org.owner.json("PUT", "/api/assistant/policies", { tool: "notes.create", policy: "allow" }, 204);
    try {
      let step = 0;
      engine.script = () => {
        step += 1;
        if (step === 1) return { action: "tool", tool: "notes.search", arguments: { query: "x" } };
        if (step === 2)
          return { action: "tool", tool: "notes.create", arguments: { title: "By policy", body: "b" } };
        return { action: "answer", answer: "ok" };
      };
      const conv = await conversation(member.client);
      const ev = await ask(member.client, conv, "policies");
      expect(steps(ev).map((s) => [s.tool, s.outcome])).toEqual([
        ["notes.search", "blocked"],
        ["notes.create", "ok"],
      ]);
      expect(await noteCount(org.orgId, "By policy")).toBe(1);
      // A member cannot change policies; a tool the user picked but the org denies is refused up front.
      expect(
        (
          await member.client.request("PUT", "/api/assistant/policies", {
            tool: "notes.create",
            policy: "allow",
          })
        ).status,
      ).toBe(403);
      const r = await member.client.request("POST", `/api/assistant/conversations/${conv}/messages`, {
        content: "search",
        tool: "notes.search",
      });
      expect(r.status).toBe(403);
      const list = (
        await member.client.json<Data<{ name: string; policy: string }[]>>("GET", "/api/assistant/policies")
      ).data;
      expect(list.find((p) => p.name === "notes.search")?.policy).toBe("deny");
      expect(list.find((p) => p.name === "kb.search")?.policy).toBe("allow");
    } finally {
      await org.owner.json("PUT", "/api/assistant/policies", { tool: "notes.search", policy: "allow" }, 204);
      await org.owner.json("PUT", "/api/assistant/policies", { tool: "notes.create", policy: "ask" }, 204);
    }
  });

  it("forces the tool a person picked on the first step", async () => {
    engine.script = (s) =>
      s.step === 1
        ? { action: "answer", answer: "I refuse to use tools." }
        : { action: "answer", answer: "fine" };
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "find notes", { tool: "notes.search" });
    // The first decision offered only that tool; the scripted answer there was invalid.
    const first = engine.prompts.at(-2) as { schema: Record<string, unknown> };
    expect(JSON.stringify(first.schema)).toContain('"notes.search"');
    expect(JSON.stringify(first.schema)).not.toContain('"answer"');
    const log = await outcomes(done(ev).run.id);
    expect(log).toEqual(["invalid", "answered"]);
    const r = await member.client.request("POST", `/api/assistant/conversations/${conv}/messages`, {
      content: "x",
      tool: "test.secret",
    });
    expect(r.status).toBe(400);
  });
});

describe("@assistant in chat", () => {
  interface ChatMsg {
    id: string;
    body: string;
    author: string;
    askedBy: string | null;
    parentId: string | null;
    pendingAction: { id: string; tool: string } | null;
  }
  const thread = async (c: Client, channel: string, id: string) =>
    (await c.json<Data<ChatMsg[]>>("GET", `/api/chat/channels/${channel}/messages?thread=${id}`)).data;
  async function replyWhen(c: Client, channel: string, id: string, ok: (m: ChatMsg) => boolean) {
    for (let i = 0; i < 100; i++) {
      const reply = (await thread(c, channel, id)).find((m) => m.author === "assistant");
      if (reply && ok(reply)) return reply;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no such reply: ${JSON.stringify(await thread(c, channel, id))}`);
  }

  it("answers in the thread, as the asker, and asks the asker (not the channel) to approve", async () => {
    const channel = (
      await member.client.json<Data<{ id: string }>>(
        "POST",
        "/api/chat/channels",
        { kind: "public", name: `ask-${org.marker.toLowerCase()}`, memberIds: [org.ownerId] },
        201,
      )
    ).data.id;
    engine.script = () => ({ action: "answer", answer: "Visiting hours are two to eight." });
    const q = (
      await member.client.json<Data<{ id: string }>>(
        "POST",
        `/api/chat/channels/${channel}/messages`,
        { body: "@assistant when are visiting hours?" },
        201,
      )
    ).data;
    const reply = await replyWhen(member.client, channel, q.id, (m) => m.body.includes("two to eight"));
    expect(reply).toMatchObject({
      author: "assistant",
      askedBy: member.id,
      parentId: q.id,
      pendingAction: null,
    });
    // The question went to the model without the mention, and the run is the asker's.
    expect(engine.prompts.at(-1)?.prompt).toBe("when are visiting hours?");
    const runs = (
      await auditor.client.json<{ data: { userId: string; question: string }[] }>(
        "GET",
        "/api/assistant/runs?limit=5",
      )
    ).data;
    expect(runs[0]).toMatchObject({ userId: member.id, question: "when are visiting hours?" });

    // A write: the reply waits for the asker's approval; a colleague in the channel cannot give it.
    const title = `From chat ${org.marker}`;
    let calls = 0;
    engine.script = () =>
      ++calls === 1
        ? { action: "tool", tool: "notes.create", arguments: { title, body: "b" } }
        : { action: "answer", answer: "The note is made." };
    const q2 = (
      await member.client.json<Data<{ id: string }>>(
        "POST",
        `/api/chat/channels/${channel}/messages`,
        { body: "@assistant make a note of it" },
        201,
      )
    ).data;
    const waiting = await replyWhen(member.client, channel, q2.id, (m) => m.pendingAction !== null);
    expect(waiting.pendingAction?.tool).toBe("notes.create");
    expect(waiting.body).toContain("Waiting for approval");
    expect(await noteCount(org.orgId, title)).toBe(0);
    const other = await org.owner.request("POST", `/api/assistant/approvals/${waiting.pendingAction?.id}`, {
      decision: "approve",
    });
    expect(other.status).toBe(404);
    await decide(member.client, waiting.pendingAction?.id as string, "approve");
    const answered = await replyWhen(member.client, channel, q2.id, (m) =>
      m.body.includes("The note is made."),
    );
    expect(answered.pendingAction).toBeNull();
    expect(await noteCount(org.orgId, title)).toBe(1);
  });
});

describe("conversations, memory and bad input", () => {
  it("lists, searches, renames, exports and deletes conversations (owner only)", async () => {
    engine.script = () => ({ action: "answer", answer: "The capital of Freedonia is Fredville." });
    const conv = await conversation(member.client);
    await ask(member.client, conv, "What is the capital of Freedonia?");
    const found = await member.client.json<{ data: { id: string; snippet: string | null }[] }>(
      "GET",
      "/api/assistant/conversations?q=Fredville",
    );
    expect(found.data.map((c) => c.id)).toEqual([conv]);
    expect(found.data[0]?.snippet).toContain("Fredville");
    // Not anyone else's, not even an admin's of the same organization.
    expect(
      (await org.owner.json<{ data: unknown[] }>("GET", "/api/assistant/conversations?q=Fredville")).data,
    ).toEqual([]);
    expect((await org.owner.request("GET", `/api/assistant/conversations/${conv}`)).status).toBe(404);
    await member.client.json("PATCH", `/api/assistant/conversations/${conv}`, { title: "Geography" });
    const md = await member.client.request("GET", `/api/assistant/conversations/${conv}/export`);
    expect(md.headers.get("content-disposition")).toContain("attachment");
    const text = await md.text();
    expect(text).toContain("# Geography");
    expect(text).toContain("Fredville");
    const json = await member.client.request(
      "GET",
      `/api/assistant/conversations/${conv}/export?format=json`,
    );
    expect(((await json.json()) as { messages: unknown[] }).messages).toHaveLength(2);
    // Regenerate replaces the last answer; edit changes the last question.
    engine.script = () => ({ action: "answer", answer: "Second answer." });
    const regen = await readEvents(
      await member.client.request("POST", `/api/assistant/conversations/${conv}/regenerate`, {
        grounded: false,
      }),
    );
    expect(done(regen).message.content).toBe("Second answer.");
    const edited = await readEvents(
      await member.client.request("POST", `/api/assistant/conversations/${conv}/regenerate`, {
        content: "What is the capital of Sylvania?",
        grounded: false,
      }),
    );
    expect(done(edited).message.content).toBe("Second answer.");
    const detail = (
      await member.client.json<Data<{ messages: { role: string; content: string }[] }>>(
        "GET",
        `/api/assistant/conversations/${conv}`,
      )
    ).data;
    expect(detail.messages.map((m) => m.content)).toEqual([
      "What is the capital of Sylvania?",
      "Second answer.",
    ]);
    await member.client.json("DELETE", `/api/assistant/conversations/${conv}`, undefined, 204);
    expect((await member.client.request("GET", `/api/assistant/conversations/${conv}`)).status).toBe(404);
    // Its runs stay in the execution log.
    const runs = (
      await auditor.client.json<{ data: { question: string; conversationId: string | null }[] }>(
        "GET",
        "/api/assistant/runs?limit=100",
      )
    ).data;
    expect(
      runs.some((r) => r.question === "What is the capital of Freedonia?" && r.conversationId === null),
    ).toBe(true);
  });

  it("keeps memory facts per user, puts them in the context, and remembers only with approval", async () => {
    const fact = (
      await member.client.json<Data<{ id: string }>>(
        "POST",
        "/api/assistant/memories",
        { text: "I work night shifts." },
        201,
      )
    ).data;
    await member.client.json("PATCH", `/api/assistant/memories/${fact.id}`, {
      text: "I work night shifts on ward 7.",
    });
    expect((await org.owner.json<Data<unknown[]>>("GET", "/api/assistant/memories")).data).toEqual([]);
    expect((await org.owner.request("DELETE", `/api/assistant/memories/${fact.id}`)).status).toBe(404);
    engine.script = (s) =>
      s.step === 1
        ? { action: "tool", tool: "assistant.remember", arguments: { fact: "Prefers short answers." } }
        : { action: "answer", answer: "Noted." };
    const conv = await conversation(member.client);
    const ev = await ask(member.client, conv, "Remember that I prefer short answers");
    expect(engine.prompts.at(-1)?.system).toContain("ward 7");
    const a = approvalOf(ev);
    expect((await member.client.json<Data<unknown[]>>("GET", "/api/assistant/memories")).data).toHaveLength(
      1,
    );
    await decide(member.client, a.id, "approve");
    const facts = (await member.client.json<Data<{ text: string }[]>>("GET", "/api/assistant/memories")).data;
    expect(facts.map((f) => f.text).sort()).toEqual([
      "I work night shifts on ward 7.",
      "Prefers short answers.",
    ]);
    await member.client.json("DELETE", `/api/assistant/memories/${fact.id}`, undefined, 204);
  });

  it("fits long conversations into the context and summarizes the turns left out", async () => {
    const long = (n: number) =>
      `Turn ${n}: ${"the ward handover covers beds, staffing and medication. ".repeat(40)}`;
    engine.script = (s) =>
      s.prompt.includes("Add these turns to the summary")
        ? { summary: "SUMMARY: the ward handover was discussed at length." }
        : { action: "answer", answer: `Answer to ${s.prompt.slice(0, 7)}` };
    const conv = await conversation(member.client);
    for (let i = 1; i <= 4; i++) await ask(member.client, conv, long(i));
    const row = await rows(org.orgId, (trx) => trx("ai_conversations").where({ id: conv }).first());
    expect(row.summary).toContain("SUMMARY");
    expect(row.summary_upto).toBeGreaterThan(0);
    // The next run carries the summary and only the newer turns.
    await ask(member.client, conv, "And now?");
    const last = engine.prompts.filter((p) => !p.prompt.includes("Add these turns")).at(-1);
    expect(last?.system).toContain("SUMMARY: the ward handover");
  });

  it("answers bad input with clear 4xx errors", async () => {
    const conv = await conversation(member.client);
    const bad = async (method: string, p: string, body: unknown, status: number, code?: string) => {
      const r = await member.client.request(method, p, body);
      expect(r.status, `${method} ${p} ${JSON.stringify(body)}`).toBe(status);
      const j = (await r.json()) as { error: { code: string; message: string } };
      expect(j.error.message).toBeTruthy();
      if (code) expect(j.error.code).toBe(code);
    };
    await bad("POST", `/api/assistant/conversations/${conv}/messages`, { content: "" }, 400);
    await bad("POST", `/api/assistant/conversations/${conv}/messages`, { content: "x".repeat(20_001) }, 400);
    await bad("POST", `/api/assistant/conversations/${conv}/messages`, { content: "hi", evil: 1 }, 400);
    await bad("POST", `/api/assistant/conversations/${conv}/messages`, "{not json", 400);
    await bad(
      "POST",
      `/api/assistant/conversations/${conv}/messages`,
      { content: "hi", tool: "DROP TABLE" },
      400,
    );
    await bad("POST", "/api/assistant/conversations/not-a-uuid/messages", { content: "hi" }, 400);
    await bad("POST", `/api/assistant/conversations/${crypto.randomUUID()}/messages`, { content: "hi" }, 404);
    await bad("POST", `/api/assistant/conversations/${conv}/regenerate`, {}, 409);
    await bad("POST", `/api/assistant/approvals/${crypto.randomUUID()}`, { decision: "approve" }, 404);
    await bad("POST", `/api/assistant/approvals/${crypto.randomUUID()}`, { decision: "maybe" }, 400);
    await bad("POST", "/api/assistant/memories", { text: "" }, 400);
    await bad("PUT", "/api/assistant/policies", { tool: "nope.nothing", policy: "allow" }, 403);
    await org.owner.json("PUT", "/api/assistant/policies", { tool: "nope.nothing", policy: "allow" }, 404);
    await bad("PATCH", `/api/assistant/conversations/${conv}`, { title: "" }, 400);
    await bad("GET", `/api/assistant/conversations/${conv}/export?format=pdf`, undefined, 400);
    await bad("GET", "/api/assistant/conversations?limit=1000", undefined, 400);
    await bad("POST", "/api/assistant/memories", { text: "x".repeat(501) }, 400);
    await bad("PATCH", `/api/assistant/memories/${crypto.randomUUID()}`, { text: "y" }, 404);
    await bad("POST", "/api/assistant/approvals/not-a-uuid", { decision: "approve" }, 400);
    const runs = await auditor.client.request("GET", "/api/assistant/runs?status=exploded");
    expect(runs.status).toBe(400);
    // Nothing partial: the failed asks stored no message.
    const detail = (
      await member.client.json<Data<{ messages: unknown[] }>>("GET", `/api/assistant/conversations/${conv}`)
    ).data;
    expect(detail.messages).toEqual([]);
    // Unauthenticated.
    expect((await srv.fetch("/api/assistant/conversations")).status).toBe(401);
  });
});

describe("@assistant in chat under the plan's quota", () => {
  it("goes through the same admission as every AI request: past the daily limit it answers why, and nothing runs", async () => {
    const limited = await createTestOrg(srv, "chatquota");
    await srv.db.knex.transaction(async (trx) => {
      await trx.raw("select set_config('app.org_id', ?, true)", [limited.orgId]);
      await trx("organizations")
        .where({ id: limited.orgId })
        .update({ plan_overrides: JSON.stringify({ aiRequestsPerDay: 0 }) });
    });
    const channel = (
      await limited.owner.json<Data<{ id: string }>>(
        "POST",
        "/api/chat/channels",
        { kind: "public", name: `quota-${limited.marker.toLowerCase()}`, memberIds: [] },
        201,
      )
    ).data.id;
    const prompts = engine.prompts.length;
    engine.script = () => ({ action: "answer", answer: "This must not be said." });
    const q = (
      await limited.owner.json<Data<{ id: string }>>(
        "POST",
        `/api/chat/channels/${channel}/messages`,
        { body: "@assistant what is on today?" },
        201,
      )
    ).data;
    let reply: { author: string; body: string } | undefined;
    for (let i = 0; i < 100 && !reply; i++) {
      const msgs = (
        await limited.owner.json<Data<{ author: string; body: string }[]>>(
          "GET",
          `/api/chat/channels/${channel}/messages?thread=${q.id}`,
        )
      ).data;
      reply = msgs.find((m) => m.author === "assistant");
      if (!reply) await new Promise((r) => setTimeout(r, 100));
    }
    expect(reply?.body).toMatch(
      /The assistant cannot answer: The organization's plan allows 0 ai\.requests per day/,
    );
    expect(engine.prompts.length).toBe(prompts);
    const runs = await limited.owner.json<Data<unknown[]>>("GET", "/api/assistant/runs?limit=5");
    expect(runs.data).toEqual([]);
  });
});
