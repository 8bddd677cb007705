import type pg from 'pg';

/**
 * Runs `ddl` (CREATE ... IF NOT EXISTS and the like) in one transaction that first takes a
 * transaction-level advisory lock named `lockName`.
 *
 * Why: `CREATE SCHEMA/TABLE/INDEX IF NOT EXISTS` is not safe against itself. Two processes
 * starting together (three captures on one source, three applies into one target) both find
 * the object missing and the loser fails with a unique violation on the catalog
 * (`pg_type_typname_nsp_index`, SQLSTATE 23505). Serialising the statements makes the second
 * one see what the first created. The lock is released by COMMIT or ROLLBACK.
 */
export async function serializedDdl<T>(client: pg.ClientBase, lockName: string, ddl: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [lockName]);
    const result = await ddl();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** The one lock name every syncline state-table creation takes, wherever the tables live. */
export const STATE_DDL_LOCK = 'syncline.state.ddl';
