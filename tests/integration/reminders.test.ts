import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTestServer, type TestServer } from "../support/server.js";
import { createMember, createTestOrg, type Client, type TestOrg } from "../support/identity.js";
import { spawnCore, type CoreProcess } from "../support/process.js";
import { NATS_URL } from "../support/env.js";
import { withOrg } from "../../core/src/platform/db/tenant.js";

// Task reminders across real worker processes: what fell due while no worker ran fires once when one
// starts, and two workers racing for the same due reminders send each exactly once.

let srv: TestServer;
let org: TestOrg;
let bob: { id: string; client: Client };
let projectId: string;
const workers: CoreProcess[] = [];

function startWorker(): CoreProcess {
  const w = spawnCore(
    {
      DATABASE_URL: srv.pg.url,
      NATS_URL,
      WORKSYNAPSE_NATS_PREFIX: srv.config.nats.prefix,
      WORKSYNAPSE_DATABASE_MIGRATE_ON_START: "false",
      WORKSYNAPSE_PROJECTS_REMINDER_INTERVAL_MS: "100",
      WORKSYNAPSE_LOG_LEVEL: "info",
    },
    ["--roles", "worker"],
  );
  workers.push(w);
  return w;
}
const started = async (w: CoreProcess) => {
  const end = Date.now() + 60_000;
  while (!w.lines.some((l) => l.includes('"msg":"started"'))) {
    if (w.child.exitCode !== null || Date.now() > end) throw new Error(`worker did not start: ${w.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};
const sent = () =>
  withOrg(srv.db.knex, org.orgId, async (trx) =>
    Number((await trx("notifications").where({ source_type: "task_reminder" }).count({ n: "*" }).first())?.n),
  );
const waitFor = async (cond: () => Promise<boolean>, ms = 60_000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
};
/** Tasks due at `dueAt`, each assigned to the org's owner and bob. */
async function tasks(n: number, dueAt: string) {
  for (let i = 0; i < n; i++)
    await org.owner.json(
      "POST",
      `/api/projects/${projectId}/tasks`,
      { title: `Task ${i}`, dueAt, assigneeIds: [org.ownerId, bob.id] },
      201,
    );
}

beforeAll(async () => {
  if (!existsSync(new URL("../../core/dist/src/main.js", import.meta.url)))
    throw new Error("core is not built: run `npm run build` first (npm test does)");
  // The web role only: no reminder fires from this process.
  srv = await getTestServer({ env: { WORKSYNAPSE_ROLES: "web" } });
  org = await createTestOrg(srv, "reminders");
  bob = await createMember(org, ["member"], "bob");
  projectId = (
    await org.owner.json<{ data: { id: string } }>(
      "POST",
      "/api/projects",
      { name: "Ward move", members: [{ userId: bob.id, role: "editor" }] },
      201,
    )
  ).data.id;
}, 120_000);
afterAll(async () => {
  for (const w of workers)
    if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
  await srv?.close();
});

describe("task reminders across worker processes", () => {
  it("fire once after a worker restarts, and exactly once with two workers", async () => {
    const past = new Date(Date.now() - 3600_000).toISOString();
    const inAnHour = new Date(Date.now() + 3600_000).toISOString();
    await tasks(30, past); // 60 overdue reminders due now
    await tasks(10, inAnHour); // 20 due-soon reminders due now, 20 overdue ones in an hour
    await new Promise((r) => setTimeout(r, 500));
    expect(await sent()).toBe(0);

    const first = startWorker();
    await started(first);
    await waitFor(async () => (await sent()) === 80);
    first.child.kill("SIGKILL");
    await first.exit;

    // While no worker runs: more tasks fall due, and the hour passes for the due-soon tasks.
    await tasks(40, past);
    await withOrg(srv.db.knex, org.orgId, (trx) =>
      trx("task_reminders")
        .whereNull("fired_at")
        .where({ kind: "overdue" })
        .where("fire_at", ">", trx.fn.now())
        .update({ fire_at: trx.raw("now() - interval '1 second'") }),
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(await sent()).toBe(80);

    const [a, b] = [startWorker(), startWorker()];
    await Promise.all([started(a), started(b)]);
    await waitFor(async () => (await sent()) >= 180);
    // Give both workers several more rounds to send anything twice.
    await new Promise((r) => setTimeout(r, 1000));
    const stats = await withOrg(srv.db.knex, org.orgId, async (trx) => ({
      sent: await sent(),
      reminders: Number((await trx("task_reminders").count({ n: "*" }).first())?.n),
      unfired: Number((await trx("task_reminders").whereNull("fired_at").count({ n: "*" }).first())?.n),
      refired: Number(
        (await trx("task_reminders").where("fired_count", ">", 1).count({ n: "*" }).first())?.n,
      ),
      duplicates: (
        await trx("notifications")
          .where({ source_type: "task_reminder" })
          .groupBy("source_id")
          .havingRaw("count(*) > 1")
          .select("source_id")
      ).length,
    }));
    expect(stats).toEqual({ sent: 180, reminders: 180, unfired: 0, refired: 0, duplicates: 0 });
  }, 180_000);
});
