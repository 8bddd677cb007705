/**
 * A table added to the publication by hand (`ALTER PUBLICATION ... ADD TABLE`) that nobody
 * writes afterwards: a lookup table, a table of reference data. c174051 snapshots a table added
 * by hand when its first definition is recorded, i.e. at its first change: one that never
 * changes sends no Relation message, so its rows never reached the target (not even the
 * table), silently, for good, although with `tables: []` the publication is the list of what
 * to replicate. The heartbeat now queues the snapshot of a table in the publication by name
 * that this slot never recorded a definition of and never queued a job for.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable } from '../../src/verify/compare.js';
import { countRows, pipelineFixture, type PipelineFixture, type RunningPipeline } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

describe('a table added to the publication by hand and never written since', () => {
  const name = uniqueName('syncline_addedstatic');
  let f: PipelineFixture;
  let running: RunningPipeline | undefined;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); INSERT INTO r SELECT i, 0 FROM generate_series(1, 10) i;
      CREATE PUBLICATION ${name}_pub FOR TABLE r WITH (publish_via_partition_root = true)`);
    const yaml = await f.yaml({ source: ['heartbeat_interval_ms: 300'], sink: 'create_tables: true, schema_evolution: full' });
    running = await f.start(yaml);
    await waitFor('r replicated', async () => (await countRows(f.target, 'r')) === 10, 60_000, 250);
  }, 120_000);

  afterAll(async () => {
    await running?.stop();
    await f?.close();
  }, 60_000);

  it('reaches the target whole', async () => {
    await f.source.query(`CREATE TABLE lookup (code text PRIMARY KEY, label text NOT NULL);
      INSERT INTO lookup SELECT 'c' || i, 'label ' || i FROM generate_series(1, 25) i`);
    await f.source.query(`ALTER PUBLICATION ${name}_pub ADD TABLE lookup`);
    await f.source.query('UPDATE r SET v = 1 WHERE id = 1'); // the stream moves on; lookup is not written
    const equal = async (): Promise<boolean> => (await compareTable(f.source, f.target, { schema: 'public', table: 'lookup' })).differing === 0;
    await waitFor('target lookup equals source lookup', async () => equal().catch(() => false), 20_000, 500);
    expect(await countRows(f.target, 'lookup')).toBe(25);
  }, 120_000);
});

/**
 * The heartbeat's snapshot leaves renamed tables to the rename check (5c7e357). A partitioned
 * table published through its root and renamed while capture streams keeps sending its
 * changes under the old name until the walsender restarts (PostgreSQL sends no new Relation
 * message for the root's rename); a snapshot of the new name taken by the heartbeat meanwhile
 * recorded its definition first, so at the restart no rename was seen and the target's table
 * of the new name missed the changes made in between.
 */
describe('a partitioned table renamed while capture streams, then capture restarted', () => {
  const name = uniqueName('syncline_renamedroot');
  let f: PipelineFixture;
  let yaml: string;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE TABLE m (id int PRIMARY KEY, v int NOT NULL DEFAULT 0) PARTITION BY RANGE (id);
      CREATE TABLE m_1 PARTITION OF m FOR VALUES FROM (0) TO (100); CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM (100) TO (1000);
      INSERT INTO m SELECT i, 0 FROM generate_series(1, 200) i;
      CREATE PUBLICATION ${name}_pub FOR TABLE m WITH (publish_via_partition_root = true)`);
    yaml = await f.yaml({ source: ['heartbeat_interval_ms: 300'], sink: 'create_tables: true, schema_evolution: full' });
  }, 120_000);

  afterAll(async () => {
    await f?.close();
  }, 60_000);

  const run = (): Promise<RunningPipeline> => f.start(yaml);

  it('the target table of the new name gets the changes made before the restart', async () => {
    let p = await run();
    try {
      await f.source.query('UPDATE m SET v = 1 WHERE id IN (1, 150)'); // the walsender has sent m's definition
      await waitFor('m replicated', async () => (await countRows(f.target, 'm')) === 200, 60_000, 250);
      await f.source.query('ALTER TABLE m RENAME TO m2');
      await new Promise((r) => setTimeout(r, 1500)); // heartbeats
      await f.source.query('UPDATE m2 SET v = 2 WHERE id IN (2, 160)');
      await new Promise((r) => setTimeout(r, 1500));
    } finally {
      await p.stop();
    }
    p = await run();
    try {
      await f.source.query('UPDATE m2 SET v = 3 WHERE id = 3');
      const equal = async (): Promise<boolean> => (await compareTable(f.source, f.target, { schema: 'public', table: 'm2' })).differing === 0;
      await waitFor('target m2 equals source m2', async () => equal().catch(() => false), 30_000, 500);
      expect(Number((await f.target.query('SELECT v FROM m2 WHERE id = 160')).rows[0]?.v)).toBe(2);
    } finally {
      await p.stop();
    }
  }, 180_000);
});
