import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { Client, createMember, createTestOrg, type TestOrg } from "../support/identity.js";
import type { Caller } from "../../core/src/platform/auth/caller.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";

let srv: TestServer;
let org: TestOrg;
let other: TestOrg;
let alice: { id: string; email: string; client: Client };
let bob: { id: string; email: string; client: Client };
let carol: { id: string; email: string; client: Client };
let guest: { id: string; email: string; client: Client };

interface Note {
  id: string;
  title: string;
  body: string;
  version: number;
  tags: string[];
  access: string;
  starred: boolean;
  pinned: boolean;
  folderId: string | null;
  snippet: { text: string; match: boolean }[] | null;
  shares: { granteeType: string; granteeId: string; access: string; name: string }[];
}
type Data<T> = { data: T };
type ErrorBody = { error: { code: string; message: string; details?: Record<string, unknown> } };

const create = async (c: Client, body: Record<string, unknown>) =>
  (await c.json<Data<Note>>("POST", "/api/notes", body, 201)).data;
const search = async (c: Client, q: string) =>
  (await c.json<{ data: Note[]; page: { total: number } }>("GET", `/api/notes?q=${encodeURIComponent(q)}`))
    .data;

beforeAll(async () => {
  srv = await getTestServer();
  org = await createTestOrg(srv, "notes");
  other = await createTestOrg(srv, "elsewhere");
  alice = await createMember(org, ["member"], "alice");
  bob = await createMember(org, ["member"], "bob");
  carol = await createMember(org, ["member"], "carol");
  guest = await createMember(org, ["guest"], "guest");
});
afterAll(() => srv?.close());

describe("notes: writing, folders, tags, stars, trash", () => {
  it("creates a note in a folder with tags, lists it by folder, tag and star, and keeps stars per person", async () => {
    const folder = (
      await alice.client.json<Data<{ id: string }>>("POST", "/api/note-folders", { name: "Runbooks" }, 201)
    ).data;
    const sub = (
      await alice.client.json<Data<{ id: string; parentId: string }>>(
        "POST",
        "/api/note-folders",
        { name: "Database", parentId: folder.id },
        201,
      )
    ).data;
    expect(sub.parentId).toBe(folder.id);
    const note = await create(alice.client, {
      title: "Failover drill",
      body: "# Steps\nPromote the replica.",
      folderId: sub.id,
      tags: ["ops", "Database", "ops"],
    });
    expect(note).toMatchObject({ version: 1, access: "owner", folderId: sub.id, tags: ["Database", "ops"] });

    const inFolder = await alice.client.json<Data<Note[]>>("GET", `/api/notes?folderId=${sub.id}`);
    expect(inFolder.data.map((n) => n.id)).toEqual([note.id]);
    const byTag = await alice.client.json<Data<Note[]>>("GET", "/api/notes?tag=OPS");
    expect(byTag.data.map((n) => n.id)).toEqual([note.id]);

    await alice.client.json("PATCH", `/api/notes/${note.id}`, { starred: true, pinned: true });
    const starred = await alice.client.json<Data<Note[]>>("GET", "/api/notes?starred=true");
    expect(starred.data.map((n) => n.id)).toEqual([note.id]);
    expect(starred.data[0]).toMatchObject({ starred: true, pinned: true });

    // A folder cannot move into its own subfolder.
    const cycle = await alice.client.request("PATCH", `/api/note-folders/${folder.id}`, { parentId: sub.id });
    expect(cycle.status).toBe(400);
    // Another person's folder is not theirs to file into.
    const foreign = await bob.client.request("POST", "/api/notes", { title: "x", folderId: folder.id });
    expect(foreign.status).toBe(400);
    expect(((await foreign.json()) as ErrorBody).error.details).toEqual({ field: "folderId" });

    // Deleting the folder keeps the note.
    await alice.client.json("DELETE", `/api/note-folders/${folder.id}`, undefined, 204);
    const kept = await alice.client.json<Data<Note>>("GET", `/api/notes/${note.id}`);
    expect(kept.data.folderId).toBeNull();
    const tags = await alice.client.json<Data<{ name: string; notes: number }[]>>("GET", "/api/note-tags");
    expect(tags.data.map((t) => t.name)).toEqual(expect.arrayContaining(["Database", "ops"]));
  });

  it("moves notes to the trash, restores them, and deletes them for good", async () => {
    const note = await create(alice.client, { title: "Scratch", body: "temporary" });
    await alice.client.json("DELETE", `/api/notes/${note.id}`, undefined, 204);
    const all = await alice.client.json<Data<Note[]>>("GET", "/api/notes");
    expect(all.data.map((n) => n.id)).not.toContain(note.id);
    const trash = await alice.client.json<Data<Note[]>>("GET", "/api/notes?view=trash");
    expect(trash.data.map((n) => n.id)).toContain(note.id);
    // A trashed note cannot be edited until restored.
    const save = await alice.client.request("PUT", `/api/notes/${note.id}`, {
      title: "Scratch",
      body: "edited",
      baseVersion: 1,
    });
    expect(save.status).toBe(409);
    await alice.client.json("POST", `/api/notes/${note.id}/restore`);
    await alice.client.json("DELETE", `/api/notes/${note.id}`, undefined, 204);
    await alice.client.json("DELETE", `/api/notes/${note.id}/permanent`, undefined, 204);
    expect((await alice.client.request("GET", `/api/notes/${note.id}`)).status).toBe(404);
  });

  it("keeps a version history that coalesces one person's autosaves, and restores an old version", async () => {
    const note = await create(alice.client, { title: "Policy", body: "v1" });
    let n = (
      await alice.client.json<Data<Note>>("PUT", `/api/notes/${note.id}`, {
        title: "Policy",
        body: "v2",
        baseVersion: 1,
      })
    ).data;
    n = (
      await alice.client.json<Data<Note>>("PUT", `/api/notes/${note.id}`, {
        title: "Policy",
        body: "v3",
        baseVersion: n.version,
      })
    ).data;
    expect(n.version).toBe(3);
    // Alice's quick saves fold into one history entry after her first.
    const versions = await alice.client.json<Data<{ id: string; version: number; body: string }[]>>(
      "GET",
      `/api/notes/${note.id}/versions`,
    );
    expect(versions.data.map((v) => v.body)).toEqual(["v3"]);
    await alice.client.json("PUT", `/api/notes/${note.id}/shares`, {
      shares: [{ granteeType: "user", granteeId: bob.id, access: "edit" }],
    });
    n = (
      await bob.client.json<Data<Note>>("PUT", `/api/notes/${note.id}`, {
        title: "Policy",
        body: "bob's text",
        baseVersion: n.version,
      })
    ).data;
    expect(n.version).toBe(4);
    const history = (
      await alice.client.json<Data<{ id: string; version: number; body: string }[]>>(
        "GET",
        `/api/notes/${note.id}/versions`,
      )
    ).data;
    expect(history.map((v) => [v.version, v.body])).toEqual([
      [4, "bob's text"],
      [3, "v3"],
    ]);
    const restored = await alice.client.json<Data<Note>>(
      "POST",
      `/api/notes/${note.id}/versions/${history[1]?.id}/restore`,
    );
    expect(restored.data).toMatchObject({ body: "v3", version: 5 });
  });
});

describe("notes: sharing", () => {
  it("shares view-only: the recipient reads, finds, stars, but cannot edit, share or trash", async () => {
    const note = await create(alice.client, {
      title: "Quarterly plan",
      body: "Budget for the pelican project.",
    });
    const shares = await alice.client.json<Data<Note["shares"]>>("PUT", `/api/notes/${note.id}/shares`, {
      shares: [{ granteeType: "user", granteeId: bob.id, access: "view" }],
    });
    expect(shares.data[0]).toMatchObject({ granteeId: bob.id, access: "view" });
    expect(shares.data[0]?.name).toContain("bob");

    const seen = await bob.client.json<Data<Note>>("GET", `/api/notes/${note.id}`);
    expect(seen.data).toMatchObject({ access: "view", shares: [] });
    const shared = await bob.client.json<Data<Note[]>>("GET", "/api/notes?view=shared");
    expect(shared.data.map((n) => n.id)).toContain(note.id);

    for (const [method, path, body] of [
      ["PUT", `/api/notes/${note.id}`, { title: "mine now", body: "x", baseVersion: 1 }],
      ["PATCH", `/api/notes/${note.id}`, { tags: ["hijack"] }],
      ["PUT", `/api/notes/${note.id}/shares`, { shares: [] }],
      ["DELETE", `/api/notes/${note.id}`, undefined],
    ] as const) {
      const r = await bob.client.request(method, path, body);
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(((await r.json()) as ErrorBody).error.code).toBe("forbidden");
    }
    const unchanged = await alice.client.json<Data<Note>>("GET", `/api/notes/${note.id}`);
    expect(unchanged.data).toMatchObject({ title: "Quarterly plan", version: 1, tags: [] });
    // Bob's star is his own.
    await bob.client.json("PATCH", `/api/notes/${note.id}`, { starred: true });
    expect((await alice.client.json<Data<Note>>("GET", `/api/notes/${note.id}`)).data.starred).toBe(false);
    // Carol, not shared with, gets 404 (no existence oracle).
    expect((await carol.client.request("GET", `/api/notes/${note.id}`)).status).toBe(404);
  });

  it("shares through a group and a role, and takes access away when the share is removed", async () => {
    const note = await create(alice.client, { title: "Team handbook", body: "How we work." });
    const group = (
      await org.owner.json<Data<{ id: string }>>("POST", "/api/groups", { name: "Handbook readers" }, 201)
    ).data;
    await org.owner.json("PUT", `/api/groups/${group.id}/members`, { userIds: [carol.id] });
    const roles = (await org.owner.json<Data<{ id: string; key: string }[]>>("GET", "/api/roles")).data;
    const guestRole = roles.find((r) => r.key === "guest")!;
    await alice.client.json("PUT", `/api/notes/${note.id}/shares`, {
      shares: [
        { granteeType: "group", granteeId: group.id, access: "edit" },
        { granteeType: "role", granteeId: guestRole.id, access: "view" },
      ],
    });
    expect((await carol.client.json<Data<Note>>("GET", `/api/notes/${note.id}`)).data.access).toBe("edit");
    expect((await guest.client.json<Data<Note>>("GET", `/api/notes/${note.id}`)).data.access).toBe("view");
    await alice.client.json("PUT", `/api/notes/${note.id}/shares`, { shares: [] });
    expect((await carol.client.request("GET", `/api/notes/${note.id}`)).status).toBe(404);
    expect((await guest.client.request("GET", `/api/notes/${note.id}`)).status).toBe(404);
  });

  it("refuses shares with unknown grantees, with oneself, twice, or with another organization's user", async () => {
    const note = await create(alice.client, { title: "Private", body: "x" });
    for (const shares of [
      [{ granteeType: "user", granteeId: other.ownerId, access: "view" }],
      [{ granteeType: "user", granteeId: alice.id, access: "view" }],
      [{ granteeType: "group", granteeId: bob.id, access: "view" }],
      [
        { granteeType: "user", granteeId: bob.id, access: "view" },
        { granteeType: "user", granteeId: bob.id, access: "edit" },
      ],
      [{ granteeType: "user", granteeId: bob.id, access: "admin" }],
    ]) {
      const r = await alice.client.request("PUT", `/api/notes/${note.id}/shares`, { shares });
      expect(r.status, JSON.stringify(shares)).toBe(400);
    }
    expect((await alice.client.json<Data<Note>>("GET", `/api/notes/${note.id}`)).data.shares).toEqual([]);
  });

  it("hides every note of one organization from another, through every notes route", async () => {
    const note = await create(alice.client, { title: `Secret ${org.marker}`, body: "classified" });
    for (const [method, path, body] of [
      ["GET", `/api/notes/${note.id}`, undefined],
      ["PUT", `/api/notes/${note.id}`, { title: "x", body: "x", baseVersion: 1 }],
      ["PATCH", `/api/notes/${note.id}`, { starred: true }],
      ["GET", `/api/notes/${note.id}/versions`, undefined],
      ["PUT", `/api/notes/${note.id}/shares`, { shares: [] }],
      ["DELETE", `/api/notes/${note.id}`, undefined],
    ] as const) {
      const r = await other.owner.request(method, path, body);
      expect(r.status, `${method} ${path}`).toBe(404);
    }
    const hits = await other.owner.json<{ data: Note[] }>("GET", `/api/notes?q=${org.marker}`);
    expect(hits.data).toEqual([]);
  });
});

describe("notes: concurrent edits", () => {
  it("two saves from the same base version: the second gets 409 with the current text; no text is lost", async () => {
    const note = await create(alice.client, { title: "Minutes", body: "Line one.\nLine two.\nLine three." });
    await alice.client.json("PUT", `/api/notes/${note.id}/shares`, {
      shares: [{ granteeType: "user", granteeId: bob.id, access: "edit" }],
    });
    const aliceText = "Line one, by Alice.\nLine two.\nLine three.";
    const bobText = "Line one.\nLine two.\nLine three, by Bob.";
    const [ra, rb] = await Promise.all([
      alice.client.request("PUT", `/api/notes/${note.id}`, {
        title: "Minutes",
        body: aliceText,
        baseVersion: 1,
      }),
      bob.client.request("PUT", `/api/notes/${note.id}`, { title: "Minutes", body: bobText, baseVersion: 1 }),
    ]);
    const statuses = [ra.status, rb.status].sort();
    expect(statuses).toEqual([200, 409]);
    const [winner, loser] = ra.status === 200 ? [aliceText, bobText] : [bobText, aliceText];
    const conflict = ((await (ra.status === 409 ? ra : rb).json()) as ErrorBody).error;
    expect(conflict.code).toBe("conflict");
    const current = (conflict.details as { current: Note }).current;
    expect(current).toMatchObject({ body: winner, version: 2 });
    // The stored note holds the winner's text; the loser's text is still with the loser, who can merge
    // (the editor does a three-way merge) and save on top of version 2.
    const loserClient = ra.status === 409 ? alice.client : bob.client;
    const { merge } = await import("node-diff3");
    const merged = merge(
      loser.split("\n"),
      "Line one.\nLine two.\nLine three.".split("\n"),
      winner.split("\n"),
    );
    expect(merged.conflict).toBe(false);
    const saved = await loserClient.json<Data<Note>>("PUT", `/api/notes/${note.id}`, {
      title: "Minutes",
      body: merged.result.join("\n"),
      baseVersion: current.version,
    });
    expect(saved.data.body).toBe("Line one, by Alice.\nLine two.\nLine three, by Bob.");
    expect(saved.data.version).toBe(3);
  });
});

describe("notes: search", () => {
  it("ranks title hits above body hits, highlights the matched words, and never returns an unreadable note", async () => {
    const word = `zephyr${org.marker.toLowerCase()}`;
    const inTitle = await create(alice.client, { title: `${word} rollout`, body: "Plan for the rollout." });
    const inBody = await create(alice.client, {
      title: "Weekly update",
      body: `Some words first. The ${word} service was updated on Tuesday. More words after.`,
    });
    const hidden = await create(bob.client, { title: `${word} private`, body: `Bob's own ${word} notes.` });
    const trashed = await create(alice.client, { title: `${word} old`, body: "gone" });
    await alice.client.json("DELETE", `/api/notes/${trashed.id}`, undefined, 204);

    const hits = await search(alice.client, word);
    expect(hits.map((h) => h.id)).toEqual([inTitle.id, inBody.id]);
    const snippet = hits[1]?.snippet ?? [];
    expect(snippet.filter((p) => p.match).map((p) => p.text.toLowerCase())).toContain(word);
    expect(snippet.map((p) => p.text).join("")).toContain("service was updated");
    expect(hits.map((h) => h.id)).not.toContain(hidden.id);
    // Stemming and web-search syntax: "updates" finds "updated"; a quoted phrase; a minus excludes.
    expect((await search(alice.client, `${word} updates`)).map((h) => h.id)).toEqual([inBody.id]);
    expect((await search(alice.client, `"${word} service"`)).map((h) => h.id)).toEqual([inBody.id]);
    expect((await search(alice.client, `${word} -rollout`)).map((h) => h.id)).toEqual([inBody.id]);
    // Once shared, Bob's note appears for Alice too.
    await bob.client.json("PUT", `/api/notes/${hidden.id}/shares`, {
      shares: [{ granteeType: "user", granteeId: alice.id, access: "view" }],
    });
    expect((await search(alice.client, word)).map((h) => h.id)).toContain(hidden.id);
    // Query syntax that is not valid tsquery is still just text.
    expect((await alice.client.request("GET", `/api/notes?q=${encodeURIComponent("!!(&|:*")}`)).status).toBe(
      200,
    );
  });
});

describe("notes: AI tools", () => {
  const callerOf = async (userId: string, orgId: string): Promise<Caller> => {
    const permissions = await withOrg(srv.db.knex, orgId, async (trx) => {
      const rows = (
        await trx.raw("select r.key, r.permissions from roles r where r.id in (select user_role_ids(?))", [
          userId,
        ])
      ).rows as { key: string; permissions: string[] }[];
      return rows.map((r) => r.key);
    });
    const { catalogOf } = await import("../../core/src/platform/auth/permissions.js");
    const codes = permissions.flatMap((k) => catalogOf(srv.db.knex).ofBuiltinRole(k as "member"));
    return { orgId, userId, email: "", permissions: new Set(codes), systemAdmin: false, via: "session" };
  };

  it("lists the tools a caller may use", async () => {
    const tools = await alice.client.json<Data<{ name: string; effect: string }[]>>("GET", "/api/ai/tools");
    expect(tools.data.map((t) => t.name)).toEqual(
      expect.arrayContaining(["notes.create", "notes.read", "notes.search"]),
    );
    const auditor = await createMember(org, ["auditor"], "auditor");
    const none = await auditor.client.json<Data<unknown[]>>("GET", "/api/ai/tools");
    expect(none.data).toEqual([]);
  });

  it("searches and reads only what the user may read, needs approval to create, and logs every call", async () => {
    const tools = srv.tools!;
    const word = `quokka${org.marker.toLowerCase()}`;
    const mine = await create(alice.client, { title: `${word} notes`, body: "Alice's" });
    const bobs = await create(bob.client, { title: `${word} bob`, body: "Bob's" });
    const asAlice = await callerOf(alice.id, org.orgId);

    const found = await tools.invoke(srv.db.knex, asAlice, "notes.search", { query: word });
    expect(found.status).toBe("ok");
    expect((found as { output: { id: string }[] }).output.map((n) => n.id)).toEqual([mine.id]);
    const read = await tools.invoke(srv.db.knex, asAlice, "notes.read", { id: bobs.id });
    expect(read).toEqual({ status: "error", error: "Note not found." });

    const ask = await tools.invoke(srv.db.knex, asAlice, "notes.create", {
      title: "From the assistant",
      body: "hi",
    });
    expect(ask).toMatchObject({ status: "approval_required", tool: "notes.create" });
    expect((await search(alice.client, "assistant")).length).toBe(0);
    const done = await tools.invoke(
      srv.db.knex,
      asAlice,
      "notes.create",
      { title: "From the assistant", body: "hi" },
      { approved: true },
    );
    expect(done.status).toBe("ok");
    expect((await search(alice.client, "assistant")).map((n) => n.title)).toEqual(["From the assistant"]);

    const asGuest = await callerOf(guest.id, org.orgId);
    expect(
      await tools.invoke(srv.db.knex, asGuest, "notes.create", { title: "x", body: "y" }, { approved: true }),
    ).toEqual({
      status: "denied",
      error: "This needs the notes.write permission.",
    });
    const asOther = await callerOf(other.ownerId, other.orgId);
    const otherRead = await tools.invoke(srv.db.knex, asOther, "notes.read", { id: mine.id });
    expect(otherRead.status).toBe("error");
    const bad = await tools.invoke(srv.db.knex, asAlice, "notes.search", { query: "" });
    expect(bad.status).toBe("error");

    const log = await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("ai_tool_calls").where({ user_id: alice.id }).orderBy("created_at").select("tool", "status"),
    );
    expect(log).toEqual([
      { tool: "notes.search", status: "ok" },
      { tool: "notes.read", status: "error" },
      { tool: "notes.create", status: "approval_required" },
      { tool: "notes.create", status: "ok" },
      { tool: "notes.search", status: "error" },
    ]);
  });
});
