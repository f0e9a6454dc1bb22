/** Where the test services are: the machine's PostgreSQL (trust auth) and NATS with JetStream. */
export const PG_ADMIN_URL = process.env.TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
export const NATS_URL = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";
/** The application role every test database uses (created once in global setup). */
export const APP_ROLE = "worksynapse_app";
