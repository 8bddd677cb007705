import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { machinePg15, waitFor, slotStreaming, sourceAndTarget, uniqueName, testLogger } from '../helpers/postgres.js';

/**
 * red18: `ALTER TABLE t ALTER COLUMN c TYPE text USING upper(c)` on a column that is already
 * text (or `TYPE varchar(40) USING code || '-x'` on a varchar(20): a modifier-only change)
 * rewrites every row with new values and puts no row change in the WAL. The README promises a
 * re-read for "a column whose type changed (ALTER COLUMN c TYPE t, perhaps USING an
 * expression: the table is rewritten with converted values, also outside the WAL)", but the
 * check compares the recorded types: same type (or only the modifier) means no new definition
 * worth a snapshot, so the target keeps the old values silently (verify: 3 differing; no WARN,
 * no job), also once a later change brought the new definition. Real processes: `syncline run`, then the ALTER, then `verify` exit 1.
 * (PostgreSQL's `table_rewrite` event trigger fires for exactly these rewrites.)
 *
 * Fixed: the DDL history's table_rewrite trigger records such rewrites (REWRITE_TAG), and the
 * Relation message pgoutput sends before the table's next change queues a snapshot of it
 * (SchemaVersionStore.rewriteSql). Failed before with the target at 'lower1'/'k1' where the
 * source has 'LOWER1'/'k1-x'. The second case: a restart replays nothing into a second job,
 * and VACUUM FULL, CLUSTER and a varchar widening (no new values) queue none.
 */
describe('ALTER COLUMN ... TYPE <same type> USING <expression> while capture runs', () => {
  const prefix = 'red18_using';
  const slot = uniqueName(prefix);
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'red18-using-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    await source.query('CREATE TABLE t (id int PRIMARY KEY, c text, code varchar(20))');
    await target.query('CREATE TABLE t (id int PRIMARY KEY, c text, code varchar(20))');
    // Published through its root (capture makes the publication so): the partitions are rewritten.
    await source.query('CREATE TABLE p (id int PRIMARY KEY, c text) PARTITION BY RANGE (id)');
    await source.query('CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10)');
    await source.query('CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20)');
    await target.query('CREATE TABLE p (id int PRIMARY KEY, c text)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [t, p] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: using }
sink: { url: ${pair.targetUrl}, schema_evolution: full }
monitoring: { enabled: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const rows = async (c: pg.Client): Promise<unknown[]> => (await c.query('SELECT id, c, code FROM t ORDER BY id')).rows;
  const jobs = async (): Promise<number> => (await source.query<{ n: number }>('SELECT count(*)::int AS n FROM syncline.snapshots WHERE slot_name = $1', [slot])).rows[0]?.n ?? -1;
  /** The initial snapshot's job. */
  let initialJobs = 0;

  it('brings the rewritten values to the target', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    try {
      await waitFor('slot streaming', async () => await slotStreaming(source, slot), 30_000);
      await source.query(`INSERT INTO t SELECT g, 'lower' || g, 'k' || g FROM generate_series(1, 3) g`);
      await waitFor('rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM t')).rows[0]?.n === 3, 30_000);
      initialJobs = await jobs();
      await source.query('ALTER TABLE t ALTER COLUMN c TYPE text USING upper(c)');
      await source.query(`ALTER TABLE t ALTER COLUMN code TYPE varchar(40) USING code || '-x'`);
      // A change after the ALTERs, so capture meets the table's definition as it is now.
      await source.query(`INSERT INTO t VALUES (4, 'four', 'k4')`);
      // Wait as long as a snapshot of three rows could possibly take.
      await waitFor('target equal to the source', async () => JSON.stringify(await rows(target)) === JSON.stringify(await rows(source)), 20_000).catch(() => undefined);
      expect(failure).toBeUndefined();
      expect(await rows(target)).toEqual(await rows(source));
      // Both rewrites came before the one Relation message: one job.
      expect(await jobs()).toBe(initialJobs + 1);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);

  it('queues nothing again after a restart, nor for VACUUM FULL, CLUSTER or a widening', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    try {
      await waitFor('slot streaming', async () => await slotStreaming(source, slot), 30_000);
      await source.query('VACUUM FULL t');
      await source.query('CLUSTER t USING t_pkey');
      await source.query('ALTER TABLE t ALTER COLUMN code TYPE varchar(60)');
      await source.query(`INSERT INTO t VALUES (5, 'five', 'k5')`);
      await waitFor('row 5 applied', async () => (await target.query('SELECT count(*)::int AS n FROM t')).rows[0]?.n === 5, 30_000);
      expect(failure).toBeUndefined();
      expect(await jobs()).toBe(initialJobs + 1);
      const { rows: entries } = await source.query<{ n: number }>(`SELECT count(*)::int AS n FROM syncline.ddl_history WHERE table_name = 't' AND command_tag = 'table_rewrite'`);
      expect(entries[0]?.n).toBe(2);
      expect(await rows(target)).toEqual(await rows(source));
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);

  it('a partitioned table published through its root: the rewritten partitions reach the target', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    const prows = async (c: pg.Client): Promise<unknown[]> => (await c.query('SELECT id, c FROM p ORDER BY id')).rows;
    try {
      await waitFor('slot streaming', async () => await slotStreaming(source, slot), 30_000);
      await source.query(`INSERT INTO p VALUES (1, 'one'), (11, 'eleven')`);
      await waitFor('rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM p')).rows[0]?.n === 2, 30_000);
      await source.query('ALTER TABLE p ALTER COLUMN c TYPE text USING upper(c)');
      await source.query(`INSERT INTO p VALUES (2, 'two')`);
      await waitFor('target equal to the source', async () => JSON.stringify(await prows(target)) === JSON.stringify(await prows(source)), 20_000).catch(() => undefined);
      expect(failure).toBeUndefined();
      expect(await prows(target)).toEqual([{ id: 1, c: 'ONE' }, { id: 2, c: 'two' }, { id: 11, c: 'ELEVEN' }]);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
