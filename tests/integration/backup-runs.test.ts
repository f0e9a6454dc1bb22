// Backups taken by the worker: asked for by a system administrator (API; the admin page is in tests/e2e) or
// queued by the daily schedule, run by the real worker of a real server (pg_dump against real PostgreSQL,
// age encryption), one at a time, with a run whose process died marked failed instead of blocking the next.
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrganization } from "../../core/src/modules/identity/identity.service.js";
import { verifyBackup } from "../../core/src/modules/system/backup.js";
import {
  backupRequested,
  expireDeadRuns,
  lastSlot,
  queueScheduled,
  requestBackup,
} from "../../core/src/modules/system/backups.service.js";
import { getTestServer, type TestServer } from "../support/server.js";
import { PASSWORD, createTestOrg, signIn, type Client } from "../support/identity.js";

const PASSPHRASE = "harbor-lantern-quiet-42";
let srv: TestServer;
let admin: Client;
let owner: Client;
const dir = mkdtempSync(path.join(tmpdir(), "ws-backup-runs-"));

interface Run {
  id: string;
  trigger: string;
  status: string;
  file: string | null;
  bytes: number | null;
  files: number | null;
  error: string | null;
}
interface Status {
  available: boolean;
  reason: string | null;
  encryption: string | null;
  keep: number;
  runs: Run[];
}

const status = async () => (await admin.json<{ data: Status }>("GET", "/api/system/backups")).data;
const finished = async (id: string) => {
  const end = Date.now() + 60_000;
  while (Date.now() < end) {
    const run = (await status()).runs.find((r) => r.id === id);
    if (run && (run.status === "succeeded" || run.status === "failed")) return run;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`backup ${id} did not finish`);
};

beforeAll(async () => {
  srv = await getTestServer({
    env: {
      WORKSYNAPSE_BACKUP_PASSPHRASE: PASSPHRASE,
      WORKSYNAPSE_BACKUP_DIR: dir,
      WORKSYNAPSE_BACKUP_KEEP: "3",
    },
  });
  await createOrganization(
    srv.db.knex,
    {
      name: "Ops",
      ownerEmail: "root@ops.example",
      ownerName: "Root",
      ownerPassword: PASSWORD,
      systemAdmin: true,
    },
    { actorType: "system", actorId: "test" },
  );
  admin = await signIn(srv, "root@ops.example");
  owner = (await createTestOrg(srv, "tenant")).owner;
}, 60_000);

afterAll(async () => {
  await srv?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("backups taken by the worker", () => {
  it("are for system administrators only", async () => {
    expect((await owner.request("GET", "/api/system/backups")).status).toBe(403);
    expect((await owner.request("POST", "/api/system/backups")).status).toBe(403);
    const s = await status();
    expect(s).toMatchObject({ available: true, reason: null, encryption: "passphrase", keep: 3, runs: [] });
  });

  it("a run whose worker died blocks nothing: it is marked failed, then a backup is asked for and written", async () => {
    // A run left "running" by a process that stopped two hours ago.
    await srv.db.knex("backup_runs").insert({
      trigger: "manual",
      status: "running",
      started_at: srv.db.knex.raw("now() - interval '2 hours'"),
      alive_at: srv.db.knex.raw("now() - interval '2 hours'"),
    });
    const busy = await admin.request("POST", "/api/system/backups");
    expect(busy.status).toBe(409);
    expect(((await busy.json()) as { error: { code: string } }).error.code).toBe("backup_in_progress");
    expect(await expireDeadRuns(srv.db.knex)).toBe(1);
    const dead = (await status()).runs[0];
    expect(dead).toMatchObject({
      status: "failed",
      error: expect.stringMatching(/stopped before it finished/),
    });

    const asked = await admin.json<{ data: Run }>("POST", "/api/system/backups", undefined, 202);
    expect(asked.data).toMatchObject({ trigger: "manual", status: "queued" });
    const run = await finished(asked.data.id);
    expect(run).toMatchObject({ status: "succeeded", error: null });
    expect(run.file && path.dirname(run.file)).toBe(dir);
    expect(existsSync(run.file as string)).toBe(true);
    expect(statSync(run.file as string).size).toBe(run.bytes);
    expect(statSync(run.file as string).mode & 0o777).toBe(0o600);
    // The archive opens with the passphrase and every file matches the manifest.
    const manifest = await verifyBackup(run.file as string, { passphrase: PASSPHRASE }, srv.config.dataDir);
    expect(manifest.database.kind).toBe("postgres");
    expect(manifest.files.length).toBe(run.files);
  });

  it("the daily time queues one backup once it has passed, and no second until the next day", async () => {
    // "Now" is a day ahead: the backups of the tests above were asked for before that day's time.
    const now = new Date(Date.now() + 86_400_000);
    const past = new Date(now.getTime() - 60_000);
    const hhmm = `${String(past.getHours()).padStart(2, "0")}:${String(past.getMinutes()).padStart(2, "0")}`;
    const config = { ...srv.config, backup: { ...srv.config.backup, schedule: hhmm } };
    expect(await queueScheduled(srv.db.knex, config, now)).toBe(true);
    expect(await queueScheduled(srv.db.knex, config, now)).toBe(false);
    const queued = (await status()).runs[0] as Run;
    expect(queued.trigger).toBe("schedule");
    // The worker runs it at its next pass (every 30 s), or at once when woken as a request from the web role does.
    srv.bus.notify(backupRequested(srv.bus.prefix), {});
    expect((await finished(queued.id)).status).toBe("succeeded");
    // The slot is the latest passed time of day: before today's time it is yesterday's.
    expect(lastSlot("23:59", new Date(2026, 0, 2, 0, 10))).toEqual(new Date(2026, 0, 1, 23, 59));
    expect(lastSlot("00:05", new Date(2026, 0, 2, 0, 10))).toEqual(new Date(2026, 0, 2, 0, 5));
  });

  it("refuses with the reason when no key is configured", async () => {
    const config = { ...srv.config, backup: { ...srv.config.backup, passphrase: undefined, recipients: [] } };
    await expect(requestBackup(srv.db.knex, config, "manual", null)).rejects.toMatchObject({
      status: 409,
      code: "backup_unavailable",
    });
  });
});
