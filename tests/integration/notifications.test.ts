import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createMember, createTestOrg, type Client, type TestOrg } from "../support/identity.js";

// The notification center through chat mentions: stored with the message, only for members of the channel,
// never for the author, listed and marked read by their recipient only.

let srv: TestServer;
let org: TestOrg;
let other: TestOrg;
let ada: { id: string; email: string; client: Client };
let bob: { id: string; email: string; client: Client };
let cleo: { id: string; email: string; client: Client };
type Data<T> = { data: T };
interface Note {
  id: string;
  kind: string;
  title: string;
  body: string;
  link: string;
  actorName: string | null;
  readAt: string | null;
}
const inbox = (c: Client, q = "") =>
  c.json<{ data: Note[]; unread: number }>("GET", `/api/notifications${q}`);

beforeAll(async () => {
  srv = await getTestServer();
  org = await createTestOrg(srv, "notif");
  other = await createTestOrg(srv, "notifother");
  ada = await createMember(org, ["member"], "ada");
  bob = await createMember(org, ["member"], "bob");
  cleo = await createMember(org, ["member"], "cleo");
});
afterAll(() => srv?.close());

describe("notifications from chat mentions", () => {
  it("notifies mentioned members, not the author, not people outside the channel", async () => {
    const channel = (
      await ada.client.json<Data<{ id: string }>>(
        "POST",
        "/api/chat/channels",
        { kind: "private", name: `ward-${org.marker.toLowerCase()}`, memberIds: [bob.id] },
        201,
      )
    ).data.id;
    const bobLocal = bob.email.split("@")[0] as string;
    const cleoLocal = cleo.email.split("@")[0] as string;
    await ada.client.json(
      "POST",
      `/api/chat/channels/${channel}/messages`,
      { body: `@${bobLocal} can you check bed 4? cc @${cleoLocal} and me @${ada.email.split("@")[0]}` },
      201,
    );
    const b = await inbox(bob.client);
    expect(b.unread).toBe(1);
    expect(b.data[0]).toMatchObject({
      kind: "chat.mention",
      link: `/chat?channel=${channel}`,
      readAt: null,
    });
    expect(b.data[0]?.title).toContain(`mentioned you in #ward-${org.marker.toLowerCase()}`);
    expect(b.data[0]?.body).toContain("bed 4");
    // Cleo is not in the private channel; Ada wrote it.
    expect((await inbox(cleo.client)).unread).toBe(0);
    expect((await inbox(ada.client)).unread).toBe(0);

    // By first name, and @channel for everyone; in a thread reply too.
    const first = (
      await bob.client.json<Data<{ id: string }>>(
        "POST",
        `/api/chat/channels/${channel}/messages`,
        { body: "@channel handover at 7" },
        201,
      )
    ).data;
    expect((await inbox(ada.client)).unread).toBe(1);
    await bob.client.json(
      "POST",
      `/api/chat/channels/${channel}/messages`,
      { body: `thanks @${ada.email.split("@")[0]}`, parentId: first.id },
      201,
    );
    expect((await inbox(ada.client)).unread).toBe(2);

    // Read one, then all; someone else's ids change nothing.
    const adas = await inbox(ada.client, "?unread=true");
    await bob.client.json("POST", "/api/notifications/read", { ids: adas.data.map((n) => n.id) }, 204);
    expect((await inbox(ada.client)).unread).toBe(2);
    await ada.client.json("POST", "/api/notifications/read", { ids: [adas.data[0]?.id] }, 204);
    expect((await inbox(ada.client)).unread).toBe(1);
    await ada.client.json("POST", "/api/notifications/read", { all: true }, 204);
    const after = await inbox(ada.client);
    expect(after.unread).toBe(0);
    expect(after.data.every((n) => n.readAt !== null)).toBe(true);
    // Another organization sees none of it.
    expect((await inbox(other.owner)).data).toEqual([]);
  });

  it("refuses bad input and anonymous callers", async () => {
    for (const body of [{}, { ids: [] }, { ids: ["nope"] }, { all: true, extra: 1 }, "{bad"]) {
      const r = await ada.client.request("POST", "/api/notifications/read", body);
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
    expect((await ada.client.request("GET", "/api/notifications?limit=1000")).status).toBe(400);
    expect((await srv.fetch("/api/notifications")).status).toBe(401);
  });
});
