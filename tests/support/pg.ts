import { randomBytes } from "node:crypto";
import pg from "pg";
import { PG_ADMIN_URL } from "./env.js";

/** A throwaway PostgreSQL database for one test file. */
export interface TestDatabase {
  name: string;
  /** URL as the superuser (used as the owner for migrations; the server drops to the app role). */
  url: string;
  drop(): Promise<void>;
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates an empty database with a unique name. */
export async function createTestDatabase(label = "t"): Promise<TestDatabase> {
  const name = `ws_${label}_${randomBytes(5).toString("hex")}`;
  await admin((c) => c.query(`create database ${name}`));
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    drop: () => admin((c) => c.query(`drop database if exists ${name} with (force)`)).then(() => undefined),
  };
}
