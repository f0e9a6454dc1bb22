// Chat on two core processes sharing PostgreSQL and NATS: REST for channels and messages, live events over
// /ws on either node, resume after a node goes away with nothing lost and nothing twice, and who may see what.
import { existsSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { getTestServer, type TestServer } from "../support/server.js";
import { Client, createMember, createTestOrg, type TestOrg } from "../support/identity.js";
import { testConfig } from "../support/config.js";
import { startServer, type RunningServer } from "../../core/src/server.js";
import { silentLogger } from "../../core/src/platform/log.js";
import { spawnCore } from "../support/process.js";

type Data<T> = { data: T };
interface Channel {
  id: string;
  kind: string;
  name: string;
  unread: number;
  lastSeq: number;
  joined: boolean;
}
interface Message {
  id: string;
  seq: number;
  body: string;
  deleted: boolean;
  editedAt: string | null;
  userId: string;
}
type Person = { id: string; email: string; client: Client };

let srv: TestServer;
let node2: RunningServer;
let org: TestOrg;
let other: TestOrg;
let alice: Person;
let bob: Person;
let carol: Person;

beforeAll(async () => {
  srv = await getTestServer({ env: { WORKSYNAPSE_CHAT_MAX_FILE_BYTES: "100000" } });
  // A second web node on the same database and bus (same subject prefix), as behind a load balancer.
  node2 = await startServer(
    testConfig({
      DATABASE_URL: srv.pg.url,
      WORKSYNAPSE_NATS_PREFIX: srv.config.nats.prefix,
      WORKSYNAPSE_ROLES: "web",
    }),
    silentLogger(),
  );
  org = await createTestOrg(srv, "chat");
  other = await createTestOrg(srv, "elsewhere");
  alice = await createMember(org, ["member"], "alice");
  bob = await createMember(org, ["member"], "bob");
  carol = await createMember(org, ["member"], "carol");
});
afterAll(async () => {
  await node2?.stop();
  await srv?.close();
});

/** A live socket that records every event it receives. */
class Live {
  readonly events: Record<string, unknown>[] = [];
  closed: { code: number; reason: string } | null = null;
  private constructor(readonly ws: WebSocket) {
    ws.on("message", (d) => this.events.push(JSON.parse(d.toString()) as Record<string, unknown>));
    ws.on("close", (code, reason) => (this.closed = { code, reason: reason.toString() }));
  }
  static open(base: string, who: Person | null, origin = base): Promise<Live> {
    const cookie = who ? (who.client.headers().cookie as string) : undefined;
    const ws = new WebSocket(`${base.replace("http", "ws")}/ws`, {
      headers: { ...(cookie ? { cookie } : {}), origin },
    });
    const live = new Live(ws);
    return new Promise((resolve, reject) => {
      ws.once("unexpected-response", (_req, res) => reject(new Error(`handshake ${res.statusCode}`)));
      ws.once("error", reject);
      const started = Date.now();
      const ready = () =>
        live.events.some((e) => e.type === "ready")
          ? resolve(live)
          : Date.now() - started > 5000
            ? reject(new Error("no ready"))
            : setTimeout(ready, 10);
      ws.once("open", ready);
    });
  }
  /** Waits until `n` events of a type arrived (or fails after 5 s). */
  async waitFor(type: string, n = 1): Promise<Record<string, unknown>[]> {
    for (let i = 0; i < 500; i++) {
      const got = this.events.filter((e) => e.type === type);
      if (got.length >= n) return got;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`expected ${n} ${type} events, got ${this.events.filter((e) => e.type === type).length}`);
  }
  messages(channelId: string): Message[] {
    return this.events
      .filter((e) => e.type === "message" && e.channelId === channelId)
      .map((e) => e.message as Message);
  }
  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }
  close(): void {
    this.ws.close();
  }
}

/** Posts a message as a person, on node 1 or on the node at `base`. */
async function post(p: Person, channelId: string, body: string, base = srv.url): Promise<Data<Message>> {
  const r = await fetch(`${base}/api/chat/channels/${channelId}/messages`, {
    method: "POST",
    headers: { ...p.client.headers({ "content-type": "application/json" }), origin: base },
    body: JSON.stringify({ body }),
  });
  if (r.status !== 201) throw new Error(`post: ${r.status} ${await r.text()}`);
  return (await r.json()) as Data<Message>;
}

describe("chat", () => {
  let room: Channel;

  it("channels: create private, direct conversations are found again, outsiders and other organizations get 404", async () => {
    room = (
      await alice.client.json<Data<Channel>>(
        "POST",
        "/api/chat/channels",
        { kind: "private", name: `ops-${org.marker}`, memberIds: [bob.id] },
        201,
      )
    ).data;
    expect(room).toMatchObject({ kind: "private", joined: true, lastSeq: 0 });
    const dm1 = (await alice.client.json<Data<Channel>>("POST", "/api/chat/direct", { userIds: [bob.id] }))
      .data;
    const dm2 = (await bob.client.json<Data<Channel>>("POST", "/api/chat/direct", { userIds: [alice.id] }))
      .data;
    expect(dm2.id).toBe(dm1.id);
    expect(dm1.kind).toBe("direct");
    expect(
      (await bob.client.json<Data<Channel[]>>("GET", "/api/chat/channels")).data.map((c) => c.id),
    ).toEqual(expect.arrayContaining([room.id, dm1.id]));
    expect(
      (await carol.client.json<Data<Channel[]>>("GET", "/api/chat/channels")).data.map((c) => c.id),
    ).not.toContain(room.id);
    for (const c of [carol.client, other.owner]) {
      expect((await c.request("GET", `/api/chat/channels/${room.id}`)).status).toBe(404);
      expect((await c.request("GET", `/api/chat/channels/${room.id}/messages`)).status).toBe(404);
      expect((await c.request("POST", `/api/chat/channels/${room.id}/messages`, { body: "hi" })).status).toBe(
        404,
      );
      expect((await c.request("POST", `/api/chat/channels/${room.id}/join`)).status).toBe(404);
    }
    // A person of another organization cannot be added.
    expect(
      (await alice.client.request("POST", "/api/chat/direct", { userIds: [other.ownerId] })).status,
    ).toBe(404);
    const dup = await alice.client.request("POST", "/api/chat/channels", {
      kind: "public",
      name: `OPS-${org.marker}`,
    });
    expect(dup.status).toBe(409);
  });

  it("messages: numbered in order, edit marks, delete marks, unread counts and read positions; bad input gets 400", async () => {
    const m1 = (await post(alice, room.id, "Morning **team**")).data;
    const m2 = (await post(bob, room.id, "Hello")).data;
    expect([m1.seq, m2.seq]).toEqual([1, 2]);
    expect((await alice.client.json<Data<Channel>>("GET", `/api/chat/channels/${room.id}`)).data.unread).toBe(
      1,
    );
    await alice.client.json("POST", `/api/chat/channels/${room.id}/read`, { seq: 2 }, 204);
    expect((await alice.client.json<Data<Channel>>("GET", `/api/chat/channels/${room.id}`)).data.unread).toBe(
      0,
    );
    // Bob sees how far Alice has read ("seen by"), also after a reload.
    const reads = (
      await bob.client.json<Data<{ reads: { userId: string; seq: number }[] }>>(
        "GET",
        `/api/chat/channels/${room.id}`,
      )
    ).data.reads;
    expect(reads).toContainEqual({ userId: alice.id, seq: 2 });
    const edited = (
      await alice.client.json<Data<Message>>("PATCH", `/api/chat/channels/${room.id}/messages/${m1.id}`, {
        body: "Morning all",
      })
    ).data;
    expect(edited.editedAt).not.toBeNull();
    expect(
      (
        await bob.client.request("PATCH", `/api/chat/channels/${room.id}/messages/${m1.id}`, {
          body: "pwned",
        })
      ).status,
    ).toBe(403);
    expect(
      (await bob.client.request("DELETE", `/api/chat/channels/${room.id}/messages/${m1.id}`)).status,
    ).toBe(403);
    await bob.client.json("DELETE", `/api/chat/channels/${room.id}/messages/${m2.id}`, undefined, 204);
    const list = (await alice.client.json<Data<Message[]>>("GET", `/api/chat/channels/${room.id}/messages`))
      .data;
    expect(list.map((m) => [m.seq, m.body, m.deleted])).toEqual([
      [1, "Morning all", false],
      [2, "", true],
    ]);
    for (const body of [
      { body: "" },
      { body: "   " },
      { body: "x".repeat(8001) },
      { body: 5 },
      { text: "hi" },
    ]) {
      const r = await alice.client.request("POST", `/api/chat/channels/${room.id}/messages`, body);
      expect(r.status).toBe(400);
    }
    for (const [path, body] of [
      [`/api/chat/channels/${room.id}/read`, { seq: -1 }],
      ["/api/chat/channels", { kind: "public", name: "bad\u0000name" }],
      ["/api/chat/channels", { kind: "secret", name: "x" }],
      ["/api/chat/direct", { userIds: [] }],
    ] as const) {
      expect((await alice.client.request("POST", path, body)).status).toBe(400);
    }
    const search = (await bob.client.json<Data<Message[]>>("GET", "/api/chat/search?q=morning")).data;
    expect(search.map((m) => m.id)).toEqual([m1.id]);
    expect((await carol.client.json<Data<Message[]>>("GET", "/api/chat/search?q=morning")).data).toEqual([]);
  });

  it("threads and reactions: replies stay out of the channel's timeline, counts and reactions ride along, live", async () => {
    const a = await Live.open(srv.url, alice);
    const top = (await post(alice, room.id, "Shift handover at 7?")).data;
    const reply = await bob.client.json<Data<Message & { parentId: string }>>(
      "POST",
      `/api/chat/channels/${room.id}/messages`,
      { body: "Yes, 7 works", parentId: top.id },
      201,
    );
    expect(reply.data.parentId).toBe(top.id);
    // A reply to a reply is refused; a parent from another channel is not found.
    expect(
      (
        await alice.client.request("POST", `/api/chat/channels/${room.id}/messages`, {
          body: "x",
          parentId: reply.data.id,
        })
      ).status,
    ).toBe(400);
    const dm = (await alice.client.json<Data<Channel>>("POST", "/api/chat/direct", { userIds: [bob.id] }))
      .data;
    expect(
      (
        await alice.client.request("POST", `/api/chat/channels/${dm.id}/messages`, {
          body: "x",
          parentId: top.id,
        })
      ).status,
    ).toBe(404);
    const timeline = (
      await alice.client.json<Data<(Message & { replyCount: number })[]>>(
        "GET",
        `/api/chat/channels/${room.id}/messages`,
      )
    ).data;
    expect(timeline.map((m) => m.id)).not.toContain(reply.data.id);
    expect(timeline.find((m) => m.id === top.id)?.replyCount).toBe(1);
    const thread = (
      await alice.client.json<Data<Message[]>>(
        "GET",
        `/api/chat/channels/${room.id}/messages?thread=${top.id}`,
      )
    ).data;
    expect(thread.map((m) => m.body)).toEqual(["Shift handover at 7?", "Yes, 7 works"]);
    // Reactions: on, on again (no double), another person, off.
    await bob.client.json("POST", `/api/chat/channels/${room.id}/messages/${top.id}/reactions`, {
      emoji: "👍",
      on: true,
    });
    await bob.client.json("POST", `/api/chat/channels/${room.id}/messages/${top.id}/reactions`, {
      emoji: "👍",
      on: true,
    });
    const both = await alice.client.json<Data<{ reactions: { emoji: string; userIds: string[] }[] }>>(
      "POST",
      `/api/chat/channels/${room.id}/messages/${top.id}/reactions`,
      { emoji: "👍", on: true },
    );
    expect(both.data.reactions).toEqual([{ emoji: "👍", userIds: [bob.id, alice.id] }]);
    const off = await bob.client.json<Data<{ reactions: { emoji: string; userIds: string[] }[] }>>(
      "POST",
      `/api/chat/channels/${room.id}/messages/${top.id}/reactions`,
      { emoji: "👍", on: false },
    );
    expect(off.data.reactions).toEqual([{ emoji: "👍", userIds: [alice.id] }]);
    for (const emoji of ["", "not an emoji", "👍".repeat(40), "<b>", "123"]) {
      expect(
        (
          await bob.client.request("POST", `/api/chat/channels/${room.id}/messages/${top.id}/reactions`, {
            emoji,
            on: true,
          })
        ).status,
      ).toBe(400);
    }
    await a.waitFor("message.reactions", 3);
    expect(a.messages(room.id).map((m) => m.id)).toContain(reply.data.id);
    a.close();
  });

  it("files: shared through the upload path, downloaded only by people who can read the channel, limits hold", async () => {
    const form = (files: [string, Blob][], body?: string) => {
      const f = new FormData();
      for (const [name, blob] of files) f.append("files", blob, name);
      if (body) f.append("body", body);
      return f;
    };
    const send = (p: Person, f: FormData | string, type?: string) =>
      srv.fetch(`/api/chat/channels/${room.id}/files`, {
        method: "POST",
        headers: { ...p.client.headers(type ? { "content-type": type } : {}) },
        body: f,
      });
    const ok = await send(
      alice,
      form(
        [
          ["rota.txt", new Blob(["night shift: Bob"])],
          ["page.html", new Blob(["<script>alert(1)</script>"])],
        ],
        "The rota",
      ),
    );
    expect(ok.status, await ok.clone().text()).toBe(201);
    const m = (
      (await ok.json()) as Data<Message & { attachments: { id: string; name: string; mime: string }[] }>
    ).data;
    expect(m.body).toBe("The rota");
    expect(m.attachments.map((a) => [a.name, a.mime])).toEqual([
      ["rota.txt", "application/octet-stream"],
      ["page.html", "application/octet-stream"],
    ]);
    const url = (id: string) => `/api/chat/channels/${room.id}/files/${id}`;
    const dl = await bob.client.request("GET", url(m.attachments[0]?.id as string));
    expect(dl.status).toBe(200);
    expect(dl.headers.get("content-disposition")).toContain('attachment; filename="rota.txt"');
    expect(dl.headers.get("x-content-type-options")).toBe("nosniff");
    expect(await dl.text()).toBe("night shift: Bob");
    for (const c of [carol.client, other.owner])
      expect((await c.request("GET", url(m.attachments[0]?.id as string))).status).toBe(404);
    // Limits and bad uploads: too large, empty, not multipart; nothing is posted for them.
    const before = (await alice.client.json<Data<Channel>>("GET", `/api/chat/channels/${room.id}`)).data
      .lastSeq;
    expect((await send(alice, form([["big.bin", new Blob([new Uint8Array(150_000)])]]))).status).toBe(413);
    expect((await send(alice, form([["empty.txt", new Blob([])]]))).status).toBe(400);
    expect((await send(alice, "hello", "text/plain")).status).toBe(415);
    expect((await send(carol, form([["x.txt", new Blob(["x"])]]))).status).toBe(404);
    expect(
      (await alice.client.json<Data<Channel>>("GET", `/api/chat/channels/${room.id}`)).data.lastSeq,
    ).toBe(before);
    // Deleting the message takes its files away.
    await alice.client.json("DELETE", `/api/chat/channels/${room.id}/messages/${m.id}`, undefined, 204);
    expect((await bob.client.request("GET", url(m.attachments[0]?.id as string))).status).toBe(404);
    const stored = path.join(srv.config.dataDir, "chat", "files", org.orgId, m.attachments[0]?.id as string);
    for (let i = 0; i < 50 && existsSync(stored); i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(stored)).toBe(false);
  });

  it("live on two nodes: messages, edits, typing and read receipts flow both ways in order; outsiders receive nothing", async () => {
    const node2Url = node2.url as string;
    const a = await Live.open(srv.url, alice);
    const b = await Live.open(node2Url, bob);
    const c = await Live.open(node2Url, carol);
    const x = await Live.open(srv.url, { id: other.ownerId, email: other.ownerEmail, client: other.owner });
    const start = (await alice.client.json<Data<Channel>>("GET", `/api/chat/channels/${room.id}`)).data
      .lastSeq;
    for (let i = 0; i < 20; i++)
      await post(i % 2 ? bob : alice, room.id, `message ${i}`, i % 2 ? node2Url : undefined);
    await a.waitFor("message", 20);
    await b.waitFor("message", 20);
    const seqs = Array.from({ length: 20 }, (_, i) => start + i + 1);
    expect(a.messages(room.id).map((m) => m.seq)).toEqual(seqs);
    expect(b.messages(room.id).map((m) => m.seq)).toEqual(seqs);
    expect(b.messages(room.id).map((m) => m.body)).toEqual(seqs.map((_, i) => `message ${i}`));
    const last = b.messages(room.id).at(-1) as Message;
    await bob.client.json("PATCH", `/api/chat/channels/${room.id}/messages/${last.id}`, {
      body: "message 19 (edited)",
    });
    await a.waitFor("message.edited");
    b.send({ type: "typing", channelId: room.id });
    const typing = await a.waitFor("typing");
    expect(typing[0]).toMatchObject({ channelId: room.id, typing: { userId: bob.id } });
    await alice.client.json("POST", `/api/chat/channels/${room.id}/read`, { seq: seqs.at(-1) }, 204);
    const receipt = await b.waitFor("read");
    expect(receipt.at(-1)).toMatchObject({
      channelId: room.id,
      read: { userId: alice.id, seq: seqs.at(-1) },
    });
    // No event carries the server-side audience list.
    expect(JSON.stringify(a.events)).not.toContain("audience");
    // Presence lists colleagues; nothing of the channel reaches a non-member or another organization.
    const quiet = (l: Live) => l.events.filter((e) => e.type !== "ready" && e.type !== "presence");
    expect(quiet(c)).toEqual([]);
    expect(quiet(x)).toEqual([]);
    expect(JSON.stringify(x.events)).not.toContain(alice.id);
    for (const s of [a, b, c, x]) s.close();
  });

  it("a node goes away: its clients reconnect to the other and resume with nothing lost and nothing twice", async () => {
    const extra = await startServer(
      testConfig({
        DATABASE_URL: srv.pg.url,
        WORKSYNAPSE_NATS_PREFIX: srv.config.nats.prefix,
        WORKSYNAPSE_ROLES: "web",
      }),
      silentLogger(),
    );
    const b = await Live.open(extra.url as string, bob);
    await post(alice, room.id, "before the restart");
    await b.waitFor("message", 1);
    const seen = new Map<number, Message>(b.messages(room.id).map((m) => [m.seq, m]));
    // Messages keep coming while the node stops.
    const posting = (async () => {
      for (let i = 0; i < 15; i++) {
        await post(alice, room.id, `during ${i}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await extra.stop();
    expect(b.closed?.code).toBe(1012);
    await posting;
    const cursor = Math.max(...seen.keys());
    const again = await Live.open(srv.url, bob);
    again.send({ type: "resume", cursors: { [room.id]: cursor } });
    await again.waitFor("resumed");
    for (const m of again.messages(room.id)) {
      expect(seen.has(m.seq)).toBe(false);
      seen.set(m.seq, m);
    }
    const all = (
      await bob.client.json<Data<Message[]>>("GET", `/api/chat/channels/${room.id}/messages?limit=200`)
    ).data;
    const expected = all.filter((m) => m.seq >= Math.min(...seen.keys())).map((m) => m.seq);
    expect([...seen.keys()].sort((p, q) => p - q)).toEqual(expected);
    expect(expected.length).toBeGreaterThanOrEqual(16);
    again.close();
  });

  it("a node killed with SIGKILL: its clients reconnect to the other and resume with nothing lost and nothing twice", async () => {
    const killed = spawnCore({
      DATABASE_URL: srv.pg.url,
      NATS_URL: srv.config.nats.url,
      WORKSYNAPSE_NATS_PREFIX: srv.config.nats.prefix,
      WORKSYNAPSE_ROLES: "web",
    });
    const base = await killed.url;
    const b = await Live.open(base, bob);
    await post(alice, room.id, "before the kill");
    await b.waitFor("message", 1);
    const seen = new Map<number, Message>(b.messages(room.id).map((m) => [m.seq, m]));
    const posting = (async () => {
      for (let i = 0; i < 15; i++) {
        await post(alice, room.id, `around the kill ${i}`);
        await new Promise((r) => setTimeout(r, 15));
      }
    })();
    await new Promise((r) => setTimeout(r, 60));
    killed.child.kill("SIGKILL");
    await killed.exit;
    for (let i = 0; i < 300 && !b.closed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(b.closed).not.toBeNull();
    await posting;
    for (const m of b.messages(room.id)) seen.set(m.seq, m);
    const again = await Live.open(srv.url, bob);
    again.send({ type: "resume", cursors: { [room.id]: Math.max(...seen.keys()) } });
    await again.waitFor("resumed");
    for (const m of again.messages(room.id)) {
      expect(seen.has(m.seq)).toBe(false);
      seen.set(m.seq, m);
    }
    const all = (
      await bob.client.json<Data<Message[]>>("GET", `/api/chat/channels/${room.id}/messages?limit=200`)
    ).data;
    const first = Math.min(...seen.keys());
    expect([...seen.keys()].sort((p, q) => p - q)).toEqual(
      all.filter((m) => m.seq >= first).map((m) => m.seq),
    );
    again.close();
  });

  it("presence: who is connected, on either node, reaches colleagues and ends when they leave", async () => {
    const a = await Live.open(srv.url, alice);
    const b = await Live.open(node2.url as string, bob);
    const hasBob = () =>
      a.events.some(
        (e) => (e.type === "presence" || e.type === "ready") && (e.online as string[]).includes(bob.id),
      );
    for (let i = 0; i < 300 && !hasBob(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(hasBob()).toBe(true);
    // Another organization's people never appear.
    const x = await Live.open(srv.url, { id: other.ownerId, email: other.ownerEmail, client: other.owner });
    b.close();
    const lastOnline = () => (a.events.filter((e) => e.type === "presence").at(-1)?.online as string[]) ?? [];
    for (let i = 0; i < 300 && lastOnline().includes(bob.id); i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(lastOnline()).not.toContain(bob.id);
    expect(lastOnline()).toContain(alice.id);
    expect(lastOnline()).not.toContain(other.ownerId);
    const xReady = x.events.find((e) => e.type === "ready") as { online: string[] };
    expect(xReady.online).toEqual([other.ownerId]);
    a.close();
    x.close();
  });

  it("posts over the socket: stored, numbered and delivered like HTTP posts, with the same checks", async () => {
    const channel = (
      await alice.client.json<Data<Channel>>(
        "POST",
        "/api/chat/channels",
        { kind: "public", name: `sock-${org.marker.toLowerCase()}`, memberIds: [bob.id] },
        201,
      )
    ).data;
    const a = await Live.open(srv.url, alice);
    const b = await Live.open(node2.url as string, bob);
    const c = await Live.open(srv.url, carol);
    a.send({ type: "post", channelId: channel.id, body: "over the socket", ref: "r1" });
    const [posted] = await a.waitFor("posted");
    expect(posted).toMatchObject({
      ref: "r1",
      message: { body: "over the socket", seq: 1, userId: alice.id },
    });
    const id = (posted?.message as Message).id;
    // Bob, on the other node, receives it; the stored message is the same.
    for (let i = 0; i < 200 && !b.messages(channel.id).length; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(b.messages(channel.id).map((m) => m.id)).toEqual([id]);
    const listed = (
      await bob.client.json<Data<Message[]>>("GET", `/api/chat/channels/${channel.id}/messages`)
    ).data;
    expect(listed.map((m) => [m.id, m.seq])).toEqual([[id, 1]]);
    // A reply in its thread; and an HTTP post right after gets the next number.
    a.send({ type: "post", channelId: channel.id, body: "a reply", parentId: id, ref: "r2" });
    await a.waitFor("posted", 2);
    expect((await post(alice, channel.id, "over http")).data.seq).toBe(3);
    // The same refusals as over HTTP, answered to the frame's ref; nothing is stored.
    a.send({ type: "post", channelId: channel.id, body: "x", parentId: crypto.randomUUID(), ref: "r3" });
    c.send({ type: "post", channelId: channel.id, body: "not a member", ref: "r4" });
    a.send({ type: "post", channelId: crypto.randomUUID(), body: "nowhere", ref: "r5" });
    const errors = [...(await a.waitFor("error", 2)), ...(await c.waitFor("error", 1))];
    expect(errors.map((e) => [e.ref, e.code]).sort()).toEqual([
      ["r3", "not_found"],
      ["r4", "forbidden"],
      ["r5", "not_found"],
    ]);
    a.send({ type: "post", channelId: channel.id, body: "", ref: "r6" });
    a.send({ type: "post", channelId: channel.id, body: "x".repeat(12_000), ref: "r7" });
    expect((await a.waitFor("error", 4)).slice(2).map((e) => e.code)).toEqual(["bad_frame", "bad_frame"]);
    // A mention takes the transactional path: Bob is notified.
    const bobName = bob.email.split("@")[0] as string;
    a.send({ type: "post", channelId: channel.id, body: `@${bobName} look`, ref: "r8" });
    await a.waitFor("posted", 3);
    const inbox = await bob.client.json<{ unread: number }>("GET", "/api/notifications?unread=true");
    expect(inbox.unread).toBeGreaterThan(0);
    const all = (await alice.client.json<Data<Message[]>>("GET", `/api/chat/channels/${channel.id}/messages`))
      .data;
    expect(all.map((m) => m.body)).toEqual(["over the socket", "over http", `@${bobName} look`]);
    // Someone deactivated while their socket is open cannot post through it (before the revalidation).
    const dora = await createMember(org, ["member"], "dora");
    await alice.client.json("POST", `/api/chat/channels/${channel.id}/members`, { userIds: [dora.id] });
    const d = await Live.open(srv.url, dora);
    await org.owner.json("PATCH", `/api/users/${dora.id}`, { status: "deactivated" });
    d.send({ type: "post", channelId: channel.id, body: "after deactivation", ref: "d1" });
    for (let i = 0; i < 300 && !d.closed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(d.closed?.code).toBe(4001);
    const bodies = (
      await alice.client.json<Data<Message[]>>("GET", `/api/chat/channels/${channel.id}/messages`)
    ).data.map((m) => m.body);
    expect(bodies).not.toContain("after deactivation");
    for (const l of [a, b, c]) l.close();
  });

  it("a socket added to a channel while connected hears that channel from then on, on either node", async () => {
    const channel = (
      await alice.client.json<Data<Channel>>(
        "POST",
        "/api/chat/channels",
        { kind: "private", name: `join-${org.marker.toLowerCase()}`, memberIds: [] },
        201,
      )
    ).data;
    const a = await Live.open(srv.url, alice);
    const near = await Live.open(srv.url, carol);
    const far = await Live.open(node2.url as string, carol);
    const post = (body: string) =>
      alice.client.json("POST", `/api/chat/channels/${channel.id}/messages`, { body }, 201);
    await post("before");
    await a.waitFor("message", 1);
    await alice.client.json("POST", `/api/chat/channels/${channel.id}/members`, { userIds: [carol.id] });
    for (const l of [near, far]) await l.waitFor("channel");
    await post("after");
    for (const l of [near, far]) {
      for (let i = 0; i < 300 && l.messages(channel.id).length === 0; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(l.messages(channel.id).map((m) => m.body)).toEqual(["after"]);
    }
    for (const l of [a, near, far]) l.close();
  });

  it("a burst of socket posts (stored together in batches): each numbered once, in order per channel; a refused one fails alone", async () => {
    const make = async (name: string) =>
      (
        await alice.client.json<Data<Channel>>(
          "POST",
          "/api/chat/channels",
          { kind: "public", name: `${name}-${org.marker.toLowerCase()}`, memberIds: [bob.id] },
          201,
        )
      ).data;
    const [one, two] = [await make("burst-a"), await make("burst-b")];
    const a = await Live.open(srv.url, alice);
    const b = await Live.open(srv.url, bob);
    const c = await Live.open(srv.url, carol);
    for (let i = 0; i < 30; i++) {
      (i % 2 ? b : a).send({
        type: "post",
        channelId: (i % 3 ? one : two).id,
        body: `burst ${i}`,
        ref: `b${i}`,
      });
      if (i === 10) c.send({ type: "post", channelId: one.id, body: "not a member", ref: "c1" });
    }
    await a.waitFor("posted", 15);
    await b.waitFor("posted", 15);
    expect((await c.waitFor("error", 1)).map((e) => [e.ref, e.code])).toEqual([["c1", "forbidden"]]);
    for (const ch of [one, two]) {
      const listed = (await alice.client.json<Data<Message[]>>("GET", `/api/chat/channels/${ch.id}/messages`))
        .data;
      const sent = Array.from({ length: 30 }, (_, i) => i).filter((i) => (i % 3 ? one : two) === ch);
      expect(listed.map((m) => m.seq)).toEqual(sent.map((_, k) => k + 1));
      expect(listed.map((m) => m.body).sort()).toEqual(sent.map((i) => `burst ${i}`).sort());
      // Each sender's posts keep their order (two sockets' posts may interleave either way).
      for (const parity of [0, 1])
        expect(listed.map((m) => Number(m.body.split(" ")[1])).filter((i) => i % 2 === parity)).toEqual(
          sent.filter((i) => i % 2 === parity),
        );
    }
    for (const l of [a, b, c]) l.close();
  });

  it("the handshake refuses other sites, strangers and bad frames; floods are cut off; the server stays up", async () => {
    await expect(Live.open(srv.url, alice, "https://evil.example")).rejects.toThrow("handshake 403");
    await expect(Live.open(srv.url, null)).rejects.toThrow("handshake 401");
    const a = await Live.open(srv.url, alice);
    a.send("not json");
    a.send({ type: "resume", cursors: "nope" });
    a.send({ type: "subscribe", channelId: room.id });
    await a.waitFor("error", 3);
    expect((await a.waitFor("error", 3)).map((e) => e.code)).toEqual(["bad_frame", "bad_frame", "bad_frame"]);
    for (let i = 0; i < 150; i++) a.send({ type: "ping" });
    for (let i = 0; i < 300 && !a.closed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(a.closed?.code).toBe(1008);
    const big = await Live.open(srv.url, alice);
    big.send("x".repeat(20_000));
    for (let i = 0; i < 300 && !big.closed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(big.closed?.code).toBe(1009);
    expect((await srv.fetch("/livez")).status).toBe(200);
    const ok = await Live.open(srv.url, alice);
    ok.send({ type: "ping" });
    await ok.waitFor("pong");
    ok.close();
  });

  it("a client that stops reading is cut off (server memory stays bounded) and resumes with nothing lost; concurrent posts arrive in order", async () => {
    const dave = await createMember(org, ["member"], "dave");
    const ch = (
      await alice.client.json<Data<Channel>>(
        "POST",
        "/api/chat/channels",
        { kind: "private", name: `slow-${org.marker}`, memberIds: [dave.id] },
        201,
      )
    ).data;
    const watcher = await Live.open(srv.url, alice);
    const slow = await Live.open(srv.url, dave);
    const online = () =>
      (watcher.events.filter((e) => e.type === "presence" || e.type === "ready").at(-1)
        ?.online as string[]) ?? [];
    for (let i = 0; i < 300 && !online().includes(dave.id); i++) await new Promise((r) => setTimeout(r, 10));
    // The client reads nothing more: what the server sends piles up in the kernel, then in the server's buffer.
    (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const body = "x".repeat(7_900);
    let posted = 0;
    // Two lanes post through this node, two through the other (whose posts come here over NATS).
    const lane = async (base: string) => {
      while (online().includes(dave.id) && posted < 3_000) {
        posted++;
        await post(alice, ch.id, `${posted} ${body}`, base);
      }
    };
    const second = node2.url as string;
    await Promise.all([lane(srv.url), lane(second), lane(srv.url), lane(second)]);
    // Cut off once more than 1 MiB waited for it, long before everything posted could pile up.
    expect(online()).not.toContain(dave.id);
    expect(posted).toBeLessThan(3_000);
    expect((await srv.fetch("/livez")).status).toBe(200);
    (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.resume();
    for (let i = 0; i < 500 && !slow.closed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(slow.closed).not.toBeNull();
    // It reconnects and resumes from the last message it saw: the rest arrives once, in order.
    const seen = slow.messages(ch.id).map((m) => m.seq);
    const again = await Live.open(srv.url, dave);
    let cursor = seen.length ? Math.max(...seen) : 0;
    for (;;) {
      const before = again.events.filter((e) => e.type === "resumed").length;
      again.send({ type: "resume", cursors: { [ch.id]: cursor } });
      await again.waitFor("resumed", before + 1);
      const got = again.messages(ch.id).map((m) => m.seq);
      const next = got.length ? Math.max(...got) : cursor;
      if (next === cursor) break;
      cursor = next;
    }
    const all = [...seen, ...again.messages(ch.id).map((m) => m.seq)];
    expect(all).toEqual(Array.from({ length: posted }, (_, i) => i + 1));
    // A colleague reading along got every one live, in order, though four were posted at a time on two nodes.
    for (let i = 0; i < 300 && watcher.messages(ch.id).length < posted; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(watcher.messages(ch.id).map((m) => m.seq)).toEqual(all);
    watcher.close();
    again.close();
  });
});
