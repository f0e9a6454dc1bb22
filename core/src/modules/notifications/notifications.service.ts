import type { Knex } from "knex";
import type { Scope } from "../../platform/http/api.js";

/** A notification to write for one person. */
export interface NewNotification {
  userId: string;
  kind: string;
  title: string;
  body?: string;
  /** A path in the app, e.g. /chat?channel=… */
  link: string;
  actorId?: string | null;
  sourceType?: string;
  sourceId?: string;
}

/** Writes notifications in the caller's transaction, so they exist exactly when what caused them does. */
export async function addNotifications(
  trx: Knex.Transaction,
  orgId: string,
  items: NewNotification[],
): Promise<void> {
  if (!items.length) return;
  await trx("notifications").insert(
    items.map((n) => ({
      org_id: orgId,
      user_id: n.userId,
      kind: n.kind,
      title: n.title.slice(0, 300),
      body: (n.body ?? "").slice(0, 500),
      link: n.link,
      actor_id: n.actorId ?? null,
      source_type: n.sourceType ?? null,
      source_id: n.sourceId ?? null,
    })),
  );
}

interface Row {
  id: string;
  kind: string;
  title: string;
  body: string;
  link: string;
  actor_id: string | null;
  actor_name: string | null;
  created_at: Date;
  read_at: Date | null;
}

/** The caller's notifications, newest first, and how many are unread. */
export async function listNotifications(
  { caller, trx }: Scope,
  opts: { unread?: boolean; limit: number; offset: number },
) {
  const q = trx("notifications as n")
    .leftJoin("users as u", "u.id", "n.actor_id")
    .where("n.user_id", caller.userId);
  if (opts.unread) q.whereNull("n.read_at");
  const rows = (await q
    .select("n.*", "u.display_name as actor_name")
    .orderBy("n.created_at", "desc")
    .limit(opts.limit)
    .offset(opts.offset)) as Row[];
  const [{ n }] = (await trx("notifications")
    .where({ user_id: caller.userId })
    .whereNull("read_at")
    .count({ n: "*" })) as [{ n: string }];
  return {
    data: rows.map((r) => ({
      id: r.id,
      kind: r.kind,
      title: r.title,
      body: r.body,
      link: r.link,
      actorName: r.actor_name,
      createdAt: new Date(r.created_at).toISOString(),
      readAt: r.read_at ? new Date(r.read_at).toISOString() : null,
    })),
    unread: Number(n),
  };
}

/** Marks some (or all) of the caller's notifications read. */
export async function markRead(
  { caller, trx }: Scope,
  input: { ids?: string[]; all?: boolean },
): Promise<void> {
  const q = trx("notifications").where({ user_id: caller.userId }).whereNull("read_at");
  if (!input.all) q.whereIn("id", input.ids ?? []);
  await q.update({ read_at: trx.fn.now() });
}
