// The webhook receiver's two shortcuts, each measured by bench:gateway:
// - HookTargets: what a delivery is checked against (its connection, organization, plugin state and opened
//   secret), cached for a second per connection and dropped at once when this process changes the connection;
// - DeliveryBatcher: group commit. Verified deliveries wait while a statement is writing, then go in the next
//   one together (one webhook_ingest call per organization: the rows and their queue jobs, one round trip), and
//   each request is answered once the statement holding its delivery has committed. A lone delivery is written
//   at once.
import type { Knex } from "knex";
import type { Outbox } from "../../platform/bus/outbox.js";
import { jobSubject } from "../../platform/bus/topology.js";
import { withOrg } from "../../platform/db/tenant.js";
import { WEBHOOK_QUEUE } from "./integrations.queue.js";

/** What a delivery is checked against. */
export interface HookTarget {
  orgId: string;
  connectionId: string;
  pluginId: string;
  /** The connection is on and its plugin enabled for the organization. */
  accepting: boolean;
  /** The opened webhook secret (null: the connection takes no webhooks). */
  secret: string | null;
}

/** Connections by id, as the webhook receiver needs them, for at most `ttlMs`. */
export class HookTargets {
  private readonly cache = new Map<string, { at: number; target: HookTarget | null }>();

  constructor(
    private readonly knex: Knex,
    private readonly open: (row: { id: string; webhook_secret: string | null }) => string | null,
    private readonly ttlMs = 1000,
    private readonly max = 10_000,
  ) {}

  /** The connection's target, or null when there is no such connection. */
  async get(connectionId: string): Promise<HookTarget | null> {
    const hit = this.cache.get(connectionId);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.target;
    const orgId = (await this.knex.raw("select integration_hook_org(?) as org", [connectionId])).rows[0]
      ?.org as string | null;
    const target = orgId
      ? await withOrg(this.knex, orgId, async (trx) => {
          const row = await trx("integration_connections")
            .where({ id: connectionId })
            .first("id", "plugin_id", "enabled", "webhook_secret");
          if (!row) return null;
          const plugin = await trx("plugin_settings").where({ plugin_id: row.plugin_id }).first("enabled");
          return {
            orgId,
            connectionId,
            pluginId: row.plugin_id as string,
            accepting: !!row.enabled && !!plugin?.enabled,
            secret: this.open(row),
          };
        })
      : null;
    if (this.cache.size >= this.max) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(connectionId, { at: Date.now(), target });
    return target;
  }

  /** Forgets a connection (changed here); another process's change is seen within `ttlMs`. */
  forget(connectionId?: string): void {
    if (connectionId) this.cache.delete(connectionId);
    else this.cache.clear();
  }
}

/** A verified delivery, to be stored. */
export interface IncomingDelivery {
  orgId: string;
  connectionId: string;
  key: string;
  event: string;
  headers: Record<string, string>;
  contentType: string;
  body: string;
}

interface Pending {
  d: IncomingDelivery;
  resolve: (r: { id: string | null }) => void;
  reject: (err: unknown) => void;
}

/**
 * Writes deliveries in groups: up to `writers` statements at a time (a commit's round trip overlaps the next
 * group's), each taking everything that arrived meanwhile. A group is one call of the database's
 * webhook_ingest per organization: the deliveries and their processing jobs (in the outbox) in one statement,
 * one round trip, one commit.
 */
export class DeliveryBatcher {
  private queue: Pending[] = [];
  private writing = 0;

  constructor(
    private readonly knex: Knex,
    private readonly outbox: Outbox,
    private readonly writers = 2,
    private readonly maxBatch = 500,
  ) {}

  /** Stores a delivery (or finds it stored: id null) once its statement commits. */
  add(d: IncomingDelivery): Promise<{ id: string | null }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ d, resolve, reject });
      if (this.writing < this.writers) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.writing += 1;
    try {
      while (this.queue.length) {
        const byOrg = new Map<string, Pending[]>();
        for (const p of this.queue.splice(0, this.maxBatch)) {
          const group = byOrg.get(p.d.orgId);
          if (group) group.push(p);
          else byOrg.set(p.d.orgId, [p]);
        }
        for (const [orgId, group] of byOrg) {
          try {
            const ids = await this.write(
              orgId,
              group.map((p) => p.d),
            );
            group.forEach((p, i) => p.resolve({ id: ids[i] ?? null }));
          } catch (err) {
            group.forEach((p) => p.reject(err));
          }
        }
      }
    } finally {
      this.writing -= 1;
    }
  }

  /** One organization's deliveries: the id of each one stored now, null for one stored before (a replay). */
  private async write(orgId: string, items: IncomingDelivery[]): Promise<(string | null)[]> {
    const keyOf = (d: IncomingDelivery) => `${d.connectionId}\u0000${d.key}`;
    const unique = [...new Map(items.map((d) => [keyOf(d), d])).values()];
    const rows = (
      await this.knex.raw("select connection_id, delivery_key, id from webhook_ingest(?, ?, ?::jsonb)", [
        orgId,
        jobSubject(this.outbox.prefix, WEBHOOK_QUEUE.name),
        JSON.stringify(
          unique.map((d) => ({
            c: d.connectionId,
            k: d.key,
            e: d.event,
            h: d.headers,
            t: d.contentType,
            b: d.body,
          })),
        ),
      ])
    ).rows as { connection_id: string; delivery_key: string; id: string }[];
    if (rows.length) this.outbox.committed();
    const idOf = new Map(rows.map((r) => [`${r.connection_id}\u0000${r.delivery_key}`, r.id]));
    // The same delivery twice in one group: the first is stored, the second is a replay.
    return items.map((d) => {
      const k = keyOf(d);
      const id = idOf.get(k) ?? null;
      idOf.delete(k);
      return id;
    });
  }
}

/** Deletes processed deliveries and recorded events older than `days` (every organization); how many. */
export async function pruneDeliveries(knex: Knex, days: number): Promise<number> {
  const before = new Date(Date.now() - days * 86_400_000);
  return Number((await knex.raw("select integration_prune(?) as n", [before])).rows[0]?.n ?? 0);
}

/** Prunes at start and then hourly; returns the stop function. */
export function startPruner(deps: {
  knex: Knex;
  days: number;
  log: { info(o: object, m: string): void; error(o: object, m: string): void };
}): () => void {
  const run = () =>
    pruneDeliveries(deps.knex, deps.days)
      .then((n) => n && deps.log.info({ removed: n }, "old webhook deliveries and events removed"))
      .catch((err: unknown) => deps.log.error({ err }, "pruning webhook deliveries failed"));
  void run();
  const timer = setInterval(run, 3_600_000);
  timer.unref();
  return () => clearInterval(timer);
}
