import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import type { Outbox } from "../../platform/bus/outbox.js";
import { withDeadline } from "../../platform/deadline.js";
import { withOrg } from "../../platform/db/tenant.js";
import type { Logger } from "../../platform/log.js";
import { KB_INDEX_QUEUE } from "./kb.events.js";
import type { KbIndex } from "./kb.index.js";

/**
 * The worker's start-up check of the index: each organization's LanceDB table is read end to end; one that
 * cannot be read (damaged files, a write cut off in a way LanceDB cannot recover from) is dropped and rebuilt
 * from the database's record of the organization's documents (a re-index job). Returns the organizations
 * rebuilt.
 */
export async function repairIndexes(deps: {
  knex: Knex;
  index: KbIndex;
  outbox: Outbox;
  log: Logger;
}): Promise<string[]> {
  const rebuilt: string[] = [];
  for (const orgId of await deps.index.organizations()) {
    try {
      await withDeadline(
        deps.index.check(orgId),
        60_000,
        () => new Error("the table did not answer within 60 s"),
      );
    } catch (err) {
      deps.log.error({ err, orgId }, "knowledge-base index damaged; rebuilding it from the documents");
      await deps.index
        .drop(orgId)
        .catch((e: unknown) => deps.log.error({ err: e, orgId }, "could not drop it"));
      await withOrg(deps.knex, orgId, (trx) =>
        deps.outbox.job(
          trx,
          KB_INDEX_QUEUE,
          { orgId, generation: 0, reindex: true },
          `kb:repair:${orgId}:${randomUUID()}`,
        ),
      );
      rebuilt.push(orgId);
    }
  }
  return rebuilt;
}
