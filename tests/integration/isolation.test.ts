import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { getTestServer, type TestServer } from "../support/server.js";
import { createMember, createTestOrg, PASSWORD, signIn, type TestOrg } from "../support/identity.js";
import { fill, operations } from "../support/openapi.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";

let srv: TestServer;
let a: TestOrg;
let b: TestOrg;
const bIds: Record<string, string[]> = {};

/** Every row of organization B in every tenant table, as the superuser sees it. */
async function snapshotB(): Promise<string> {
  const c = new pg.Client({ connectionString: srv.pg.url });
  await c.connect();
  try {
    const tables = (
      await c.query(
        "select distinct table_name from information_schema.columns where column_name = 'org_id' and table_schema = 'public' order by 1",
      )
    ).rows as { table_name: string }[];
    const out: Record<string, unknown> = {};
    for (const { table_name } of tables) {
      // last_seen_at/last_used_at move when B uses its own session; B is idle during the replay.
      out[table_name] = (
        await c.query(`select * from ${table_name} where org_id = $1 order by 1, 2`, [b.orgId])
      ).rows;
    }
    out.organizations = (await c.query("select * from organizations where id = $1", [b.orgId])).rows;
    return JSON.stringify(out);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  // Thousands of calls from one owner in seconds: the per-key limit is tested in bruteforce.test.ts.
  srv = await getTestServer({ env: { WORKSYNAPSE_AUTH_API_PER_MINUTE: "1000000" } });
  a = await createTestOrg(srv, "alpha", { plan: "professional" });
  b = await createTestOrg(srv, "bravo", { plan: "professional" });
  // Give B one of everything, each carrying B's marker.
  const member = await createMember(b, ["member"], "bmember");
  const roles = (await b.owner.json<{ data: { id: string; key: string }[] }>("GET", "/api/roles")).data;
  const custom = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/roles",
    { name: `Role ${b.marker}`, permissions: ["org.read"] },
    201,
  );
  const group = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/groups",
    { name: `Group ${b.marker}` },
    201,
  );
  await b.owner.json("PUT", `/api/groups/${group.data.id}/members`, { userIds: [member.id] });
  const inv = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/invitations",
    { email: `inv-${b.marker.toLowerCase()}@example.org`, roleId: roles[0]?.id },
    201,
  );
  const key = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/api-keys",
    { name: `Key ${b.marker}`, permissions: ["org.read"] },
    201,
  );
  const folder = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/note-folders",
    { name: `Folder ${b.marker}` },
    201,
  );
  const note = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/notes",
    {
      title: `Note ${b.marker}`,
      body: `Text ${b.marker}`,
      folderId: folder.data.id,
      tags: [`tag${b.marker}`],
    },
    201,
  );
  await b.owner.json("PUT", `/api/notes/${note.data.id}/shares`, {
    shares: [{ granteeType: "user", granteeId: member.id, access: "edit" }],
  });
  const versions = (
    await b.owner.json<{ data: { id: string }[] }>("GET", `/api/notes/${note.data.id}/versions`)
  ).data;
  const collection = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/kb/collections",
    { name: `Collection ${b.marker}` },
    201,
  );
  const form = new FormData();
  form.append("files", new Blob([`Document text ${b.marker}`]), `doc-${b.marker}.txt`);
  const uploaded = (await (
    await srv.fetch(`/api/kb/collections/${collection.data.id}/documents`, {
      method: "POST",
      headers: b.owner.headers(),
      body: form,
    })
  ).json()) as { data: { document: { id: string } }[] };
  // B's snapshot must not move during the replay: let its ingestion finish first.
  for (let i = 0; i < 300; i++) {
    const docs = (
      await b.owner.json<{ data: { status: string }[] }>(
        "GET",
        `/api/kb/collections/${collection.data.id}/documents`,
      )
    ).data;
    if (docs.every((d) => d.status === "indexed")) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  // B's chat: a private channel with a message, and a direct conversation.
  const chatRoom = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/chat/channels",
    { kind: "private", name: `Room ${b.marker}`, topic: `Topic ${b.marker}`, memberIds: [member.id] },
    201,
  );
  const chatMessage = await b.owner.json<{ data: { id: string } }>(
    "POST",
    `/api/chat/channels/${chatRoom.data.id}/messages`,
    // @channel: B's member gets a notification, which A must never see nor mark read.
    { body: `Chat ${b.marker} @channel` },
    201,
  );
  const chatDirect = await b.owner.json<{ data: { id: string } }>("POST", "/api/chat/direct", {
    userIds: [member.id],
  });
  // B's project: a member, a label, a milestone, a task with a due time, a comment, a file and a summary.
  const project = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/projects",
    { name: `Project ${b.marker}`, members: [{ userId: member.id, role: "editor" }] },
    201,
  );
  const pLabel = await b.owner.json<{ data: { id: string } }>(
    "POST",
    `/api/projects/${project.data.id}/labels`,
    { name: `Label ${b.marker}` },
    201,
  );
  const pMilestone = await b.owner.json<{ data: { id: string } }>(
    "POST",
    `/api/projects/${project.data.id}/milestones`,
    { name: `Milestone ${b.marker}`, startDate: "2026-11-01", dueDate: "2027-03-01" },
    201,
  );
  const task = await b.owner.json<{ data: { id: string } }>(
    "POST",
    `/api/projects/${project.data.id}/tasks`,
    {
      title: `Task ${b.marker}`,
      assigneeIds: [b.ownerId],
      labelIds: [pLabel.data.id],
      milestoneId: pMilestone.data.id,
      dueAt: new Date(Date.now() + 30 * 86400_000).toISOString(),
    },
    201,
  );
  const taskComment = await b.owner.json<{ data: { id: string } }>(
    "POST",
    `/api/tasks/${task.data.id}/comments`,
    { body: `Comment ${b.marker}` },
    201,
  );
  const taskFile = new FormData();
  taskFile.append("files", new Blob([`File ${b.marker}`]), `file-${b.marker}.txt`);
  const taskFiles = (await (
    await srv.fetch(`/api/tasks/${task.data.id}/attachments`, {
      method: "POST",
      headers: b.owner.headers(),
      body: taskFile,
    })
  ).json()) as { data: { id: string }[] };
  const pSummary = await withOrg(srv.db.knex, b.orgId, async (trx) => {
    const [row] = (await trx("project_summaries")
      .insert({
        org_id: b.orgId,
        project_id: project.data.id,
        week_start: "2026-11-30",
        claims: JSON.stringify([{ text: `Claim ${b.marker}`, tasks: [] }]),
        model: "none",
      })
      .returning("id")) as { id: string }[];
    return row?.id as string;
  });
  // B's assistant: a conversation with a message, a memory fact, and a run waiting for approval.
  const conversation = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/assistant/conversations",
    { title: `Conversation ${b.marker}` },
    201,
  );
  const memory = await b.owner.json<{ data: { id: string } }>(
    "POST",
    "/api/assistant/memories",
    { text: `Fact ${b.marker}` },
    201,
  );
  const assistantRun = await withOrg(srv.db.knex, b.orgId, async (trx) => {
    await trx("ai_messages").insert({
      org_id: b.orgId,
      conversation_id: conversation.data.id,
      seq: 1,
      role: "user",
      content: `Question ${b.marker}`,
    });
    const [run] = (await trx("ai_runs")
      .insert({
        org_id: b.orgId,
        user_id: b.ownerId,
        conversation_id: conversation.data.id,
        status: "awaiting_approval",
        model: "none",
        question: `Question ${b.marker}`,
      })
      .returning("id")) as { id: string }[];
    const [approval] = (await trx("ai_approvals")
      .insert({
        org_id: b.orgId,
        user_id: b.ownerId,
        run_id: run?.id,
        tool: "notes.create",
        arguments: JSON.stringify({ title: b.marker }),
        args_hash: "0".repeat(64),
        summary: `Create ${b.marker}`,
        expires_at: trx.raw("now() + interval '1 day'"),
      })
      .returning("id")) as { id: string }[];
    return { run: run?.id as string, approval: approval?.id as string };
  });
  const notifications = await withOrg(srv.db.knex, b.orgId, (trx) => trx("notifications").pluck("id"));
  expect(notifications.length).toBe(1);
  const sessions = (await b.owner.json<{ data: { id: string }[] }>("GET", "/api/auth/sessions")).data;
  const audit = (await b.owner.json<{ data: { id: string }[] }>("GET", "/api/audit?limit=200")).data;
  await b.owner.json("PUT", "/api/integrations/plugins/webhook", { enabled: true });
  const connection = await b.owner.json<{ data: { connection: { id: string } } }>(
    "POST",
    "/api/integrations/connections",
    {
      plugin: "webhook",
      name: `hook ${b.marker}`,
      baseUrl: "https://hooks.bravo.example",
      auth: { kind: "none" },
    },
    201,
  );
  const delivery = await withOrg(srv.db.knex, b.orgId, (trx) =>
    trx("webhook_deliveries")
      .insert({
        org_id: b.orgId,
        connection_id: connection.data.connection.id,
        delivery_key: "k1",
        event: "deploy",
        headers: "{}",
        content_type: "application/json",
        body: JSON.stringify({ summary: b.marker }),
        status: "processed",
      })
      .returning("id"),
  );
  Object.assign(bIds, {
    integrationConnection: [connection.data.connection.id],
    webhookDelivery: delivery.map((d: { id: string }) => d.id),
    org: [b.orgId],
    user: [b.ownerId, member.id],
    role: [...roles.map((r) => r.id), custom.data.id],
    group: [group.data.id],
    invitation: [inv.data.id],
    apiKey: [key.data.id],
    session: sessions.map((s) => s.id),
    noteFolder: [folder.data.id],
    kbCollection: [collection.data.id],
    kbDocument: uploaded.data.map((u) => u.document.id),
    note: [note.data.id],
    noteVersion: versions.map((v) => v.id),
    audit: audit.map((x) => x.id),
    chatChannel: [chatRoom.data.id, chatDirect.data.id],
    chatMessage: [chatMessage.data.id],
    assistantConversation: [conversation.data.id],
    assistantMemory: [memory.data.id],
    assistantRun: [assistantRun.run],
    assistantApproval: [assistantRun.approval],
    notification: notifications as string[],
    project: [project.data.id],
    projectLabel: [pLabel.data.id],
    milestone: [pMilestone.data.id],
    task: [task.data.id],
    taskComment: [taskComment.data.id],
    taskAttachment: taskFiles.data.map((f) => f.id),
    projectSummary: [pSummary],
  });
  // B's single sign-on settings (A's GET /api/sso must show none of them).
  await b.owner.json("PUT", "/api/sso/ldap", {
    enabled: true,
    label: `Directory ${b.marker}`,
    config: {
      // A closed loopback port: nothing in this test may reach another host.
      url: "ldaps://127.0.0.1:9",
      security: "ldaps",
      bindDn: `cn=svc-${b.marker},dc=b,dc=example`,
      userBase: "dc=b,dc=example",
      userFilter: "(uid={login})",
      groupBase: "dc=b,dc=example",
    },
    secret: `secret-${b.marker}`,
    groupRoles: [{ group: `cn=${b.marker},dc=b,dc=example`, roleId: roles[0]?.id }],
    defaultRoleId: null,
  });
  await signIn(srv, member.email, PASSWORD);
});
afterAll(() => srv?.close());

/** A body that passes validation for each operation, so the replay reaches the service. */
function bodyFor(operationId: string, id: string): unknown {
  const bodies: Record<string, unknown> = {
    updateUser: { displayName: "pwned", status: "deactivated" },
    setUserRoles: { roleIds: [id] },
    resetUserPassword: { password: "pwned-password-123" },
    updateRole: { name: "pwned", permissions: ["org.read"] },
    updateGroup: { name: "pwned" },
    setGroupMembers: { userIds: [id] },
    setGroupRoles: { roleIds: [id] },
    setOrganizationPlan: { plan: "enterprise" },
    createUser: {
      email: "x-pwn@example.org",
      displayName: "x",
      password: "pwned-password-123",
      roleIds: [id],
    },
    createInvitation: { email: "y-pwn@example.org", roleId: id },
    createNote: { title: "pwned", folderId: id },
    saveNote: { title: "pwned", body: "pwned", baseVersion: 1 },
    updateNote: { starred: true, tags: ["pwned"], folderId: id },
    setNoteShares: { shares: [{ granteeType: "user", granteeId: id, access: "edit" }] },
    createNoteFolder: { name: "pwned", parentId: id },
    createKbCollection: { name: "pwned" },
    updateKbCollection: { name: "pwned" },
    setKbCollectionShares: { shares: [{ granteeType: "user", granteeId: id, access: "manage" }] },
    searchKb: { query: "document text", collectionIds: [id] },
    updateNoteFolder: { name: "pwned", parentId: id },
    createChatChannel: { kind: "private", name: `pwned-${id}`, memberIds: [id] },
    openDirectConversation: { userIds: [id] },
    updateChatChannel: { topic: "pwned" },
    addChatMembers: { userIds: [id] },
    postChatMessage: { body: "pwned" },
    editChatMessage: { body: "pwned" },
    reactToChatMessage: { emoji: "👍", on: true },
    markChatRead: { seq: 1 },
    renameAssistantConversation: { title: "pwned" },
    askAssistant: { content: "pwned", grounded: false },
    regenerateAssistantAnswer: { content: "pwned" },
    decideAssistantAction: { decision: "approve" },
    updateAssistantMemory: { text: "pwned" },
    createAssistantConversation: { title: "pwned" },
    addAssistantMemory: { text: "pwned" },
    markNotificationsRead: { ids: [id] },
    createProject: { name: "pwned", members: [{ userId: id, role: "editor" }] },
    updateProject: { name: "pwned", archived: true },
    setProjectMembers: { members: [{ userId: id, role: "owner" }] },
    setProjectStatuses: {
      statuses: [
        { id, name: "pwned", category: "todo" },
        { name: "done", category: "done" },
      ],
    },
    createProjectLabel: { name: "pwned" },
    createMilestone: { name: "pwned", startDate: "2026-01-01", dueDate: "2026-02-01" },
    updateMilestone: { name: "pwned" },
    createTask: { title: "pwned", assigneeIds: [id], blockedBy: [id] },
    updateTask: { title: "pwned", assigneeIds: [id], statusId: id },
    moveTask: { statusId: id, beforeId: id },
    addTaskComment: { body: "pwned" },
    setTaskReminders: { muted: true },
    setPluginEnabled: { enabled: false },
    updateConnection: { name: "pwned", enabled: false },
    createConnection: {
      plugin: "webhook",
      name: `pwned ${id}`,
      baseUrl: "https://pwned.example",
      auth: { kind: "none" },
    },
    setWebhookSecret: { secret: "pwned-secret-123" },
    proposeBreakdown: { goal: "pwned goal" },
    acceptBreakdown: { runId: id, tasks: [{ ref: "1", title: "pwned", assigneeId: id }] },
  };
  return bodies[operationId] ?? {};
}

describe("organization isolation", () => {
  it("replays every object id of organization B on every route with A's credentials: no B data out, no B row changed", async () => {
    const before = await snapshotB();
    const ops = (await operations(srv)).filter(
      (o) =>
        o.auth === "user" && // Event streams never end; their isolation is tested with the module (kb.test.ts).
        !["signOut", "revokeMySession", "kbEvents"].includes(o.operationId),
    );
    // Audit records have no route of their own; their ids are replayed in query strings below.
    const allIds = Object.entries(bIds)
      .filter(([kind]) => kind !== "audit")
      .flatMap(([, ids]) => ids);
    expect(allIds.length).toBeGreaterThan(10);
    let calls = 0;
    const leaks: string[] = [];
    const wrongStatus: string[] = [];
    for (const op of ops) {
      const targets = op.pathParams.length ? allIds : [""];
      for (const id of targets) {
        const path = fill(op.path, { id });
        const r = await a.owner.request(
          op.method,
          path,
          op.hasBody ? bodyFor(op.operationId, id) : undefined,
        );
        const text = await r.text();
        calls += 1;
        if (text.includes(b.marker)) leaks.push(`${op.method} ${path} -> ${r.status}`);
        // Path ids of another organization are not found, never forbidden (no existence oracle).
        // Installation-wide routes (organizations, the model catalog) answer 403 to non-system-administrators
        // before any lookup: they hold no organization's data, so there is nothing to hide.
        const installationWide = op.scope === "installation";
        if (op.pathParams.length && r.status !== 404 && !installationWide) {
          wrongStatus.push(`${op.method} ${path} -> ${r.status} ${text.slice(0, 120)}`);
        }
      }
      // Ids of B in bodies of A's own objects are refused too.
      if (op.hasBody && !op.pathParams.length) {
        for (const id of allIds) {
          const r = await a.owner.request(op.method, op.path, bodyFor(op.operationId, id));
          const text = await r.text();
          calls += 1;
          if (text.includes(b.marker)) leaks.push(`${op.method} ${op.path} body ${id} -> ${r.status}`);
        }
      }
    }
    // Query-string ids: filters by B's actor or target find nothing.
    for (const id of [...allIds, ...(bIds.audit ?? [])]) {
      const r = await a.owner.request("GET", `/api/audit?actorId=${id}&targetId=${id}`);
      const body = (await r.json()) as { data: unknown[] };
      expect(body.data).toEqual([]);
      calls += 1;
    }
    // A's own objects with B's ids inside: setting B's user into A's group, B's role on A's user.
    const aGroup = await a.owner.json<{ data: { id: string } }>(
      "POST",
      "/api/groups",
      { name: "alpha group" },
      201,
    );
    for (const userId of bIds.user ?? []) {
      expect(
        (await a.owner.request("PUT", `/api/groups/${aGroup.data.id}/members`, { userIds: [userId] })).status,
      ).toBe(404);
    }
    for (const roleId of bIds.role ?? []) {
      expect(
        (await a.owner.request("PUT", `/api/users/${a.ownerId}/roles`, { roleIds: [roleId] })).status,
      ).toBe(404);
      expect(
        (await a.owner.request("PUT", `/api/groups/${aGroup.data.id}/roles`, { roleIds: [roleId] })).status,
      ).toBe(404);
    }
    // every route at least once, every id route once per id of B
    expect(calls).toBeGreaterThan(ops.length + allIds.length * 10);
    expect(leaks).toEqual([]);
    expect(wrongStatus).toEqual([]);
    expect(await snapshotB()).toBe(before);
    // B still works.
    expect((await b.owner.json<{ data: { id: string } }>("GET", "/api/auth/me")).data.id).toBe(b.ownerId);
  });
});
