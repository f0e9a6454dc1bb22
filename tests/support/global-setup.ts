import pg from "pg";
import { APP_ROLE, PG_ADMIN_URL } from "./env.js";

/** Creates the cluster-wide application role once, so parallel test files never race on it. */
export default async function setup(): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    const r = await client.query("select 1 from pg_roles where rolname = $1", [APP_ROLE]);
    if (r.rowCount === 0) await client.query(`create role ${APP_ROLE} nologin nobypassrls`);
  } finally {
    await client.end();
  }
}
