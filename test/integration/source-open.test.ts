import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { PostgresSource, type PostgresSourceOptions } from '../../src/source/postgres-source.js';
import { freshDatabase, machinePg15, testLogger, uniqueName, withClient } from '../helpers/postgres.js';

/**
 * PostgresSource.open connects the replication connection and the snapshot readers ahead,
 * while it prepares the slot: they must stream and read as before, and end with it when it
 * fails (no connection left behind).
 */
describe('PostgresSource.open: connections made ahead', () => {
  let url: string;
  let admin: pg.Client;

  beforeAll(async () => {
    url = await freshDatabase(await machinePg15(), 'syncline_srcopen');
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query('CREATE TABLE t (id integer PRIMARY KEY, v text)');
  }, 60_000);

  afterAll(async () => {
    await admin?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active').catch(() => undefined);
    await admin?.end();
  });

  const options = async (slot: string): Promise<PostgresSourceOptions> => ({
    connection: { connectionString: url, application_name: `srcopen_${slot}` },
    slot,
    publication: 'srcopen_pub',
    tables: [{ schema: 'public', table: 't' }],
    createPublication: true,
    stateSchema: 'syncline',
    initialSnapshot: false,
    heartbeatIntervalMs: 60_000,
    heartbeatPrefix: 'syncline.heartbeat',
    snapshotParallelism: 2,
    clock: systemClock,
    log: await testLogger(),
  });
  /** This test's connections to the database (walsenders included), by application_name. */
  const connections = (slot: string): Promise<number> =>
    withClient(url, async (c) => (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [`srcopen_${slot}`])).rows[0]?.n ?? -1);

  it('streams from the slot with the replication connection made ahead, and its readers read', async () => {
    const slot = uniqueName('srcopen_ok');
    const source = await PostgresSource.open(await options(slot), new AbortController().signal);
    if (!source) throw new Error('not the leader');
    try {
      const [reader, second] = await source.snapshotReaders();
      expect((await reader?.query<{ tz: string }>("SELECT current_setting('timezone') AS tz"))?.rows[0]?.tz).toBe('UTC');
      expect(second).toBeDefined();
      await admin.query("INSERT INTO t VALUES (1, 'one')");
      const chunks: Buffer[] = [];
      void source.start((c) => chunks.push(Buffer.from(c)));
      // An XLogData frame ('w') whose pgoutput message is the insert ('I').
      await expect.poll(() => chunks.some((c) => c[0] === 0x77 && c[25] === 0x49), { timeout: 10_000 }).toBe(true);
    } finally {
      await source.close();
      await source.release();
    }
    await expect.poll(() => connections(slot), { timeout: 10_000 }).toBe(0);
  });

  it('ends the replication connection and the readers it made ahead when it fails after making them', async () => {
    // Upper case is not allowed in a slot name: the slot is refused after leadership, once
    // the replication connection and the readers are under way.
    const slot = `${uniqueName('srcopen_bad')}_BAD`;
    await expect(PostgresSource.open(await options(slot), new AbortController().signal)).rejects.toThrow(/replication slot name/);
    await expect.poll(() => connections(slot), { timeout: 10_000 }).toBe(0);
  });
});
