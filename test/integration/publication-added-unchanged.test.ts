/**
 * A table added to the publication by hand (`ALTER PUBLICATION ... ADD TABLE`) that nobody
 * writes afterwards: a lookup table, a table of reference data. c174051 snapshots a table added
 * by hand when its first definition is recorded, i.e. at its first change: one that never
 * changes sends no Relation message, so its rows never reached the target (not even the
 * table), silently, for good, although with `tables: []` the publication is the list of what
 * to replicate. The heartbeat now queues the snapshot of a table in the publication by name
 * that this slot never recorded a definition of and never queued a job for.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { compareTable } from '../../src/verify/compare.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe('a table added to the publication by hand and never written since', () => {
  const name = uniqueName('syncline_addedstatic');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  const ctl = new AbortController();
  let running: Promise<unknown> = Promise.resolve();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-addedstatic-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); INSERT INTO r SELECT i, 0 FROM generate_series(1, 10) i;
      CREATE PUBLICATION ${name}_pub FOR TABLE r WITH (publish_via_partition_root = true)`);
    const yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub }]
  heartbeat_interval_ms: 300
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${pair.targetUrl}, create_tables: true, schema_evolution: full }
monitoring: { port: ${await freePort()} }
`;
    running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    await waitFor('streaming', () => slotStreaming(source, name));
    await waitFor('r replicated', async () => Number((await target.query('SELECT count(*) AS n FROM r').catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n) === 10, 60_000, 250);
  }, 120_000);

  afterAll(async () => {
    ctl.abort();
    await running.catch(() => undefined);
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('reaches the target whole', async () => {
    await source.query(`CREATE TABLE lookup (code text PRIMARY KEY, label text NOT NULL);
      INSERT INTO lookup SELECT 'c' || i, 'label ' || i FROM generate_series(1, 25) i`);
    await source.query(`ALTER PUBLICATION ${name}_pub ADD TABLE lookup`);
    await source.query('UPDATE r SET v = 1 WHERE id = 1'); // the stream moves on; lookup is not written
    const equal = async (): Promise<boolean> => (await compareTable(source, target, { schema: 'public', table: 'lookup' })).differing === 0;
    await waitFor('target lookup equals source lookup', async () => equal().catch(() => false), 20_000, 500);
    expect(Number((await target.query('SELECT count(*) AS n FROM lookup')).rows[0]?.n)).toBe(25);
  }, 120_000);
});
