/**
 * Tables that join a `FOR TABLES IN SCHEMA` publication with rows already in them, while the
 * pipeline runs: `ALTER PUBLICATION ... ADD TABLES IN SCHEMA s2` (s2's tables existed, with
 * rows) and `ALTER TABLE s3.m SET SCHEMA s1` (into a schema the publication takes whole).
 * Their rows from before are in no change the slot sends, as for a table added by name
 * (`ADD TABLE`, table-renamed.test.ts); 1e9d4fc took every table met through a schema for
 * one created since capture started, so their target tables held only the rows changed
 * since, silently.
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

describe('tables joining a schema publication with rows', () => {
  const name = uniqueName('syncline_pubschema');
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  const ctl = new AbortController();
  let running: Promise<unknown> = Promise.resolve();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-pubschema-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE SCHEMA s1; CREATE SCHEMA s2; CREATE SCHEMA s3;
      CREATE TABLE s1.first (id int PRIMARY KEY); INSERT INTO s1.first VALUES (1);
      CREATE PUBLICATION ${name}_pub FOR TABLES IN SCHEMA s1`);
    const yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
sink: { url: ${pair.targetUrl}, create_tables: true, schema_evolution: full }
monitoring: { port: ${await freePort()} }
`;
    await target.query('CREATE SCHEMA s1; CREATE SCHEMA s2');
    running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    await waitFor('streaming', () => slotStreaming(source, name));
    await waitFor('s1.first replicated', async () => Number((await target.query('SELECT count(*) AS n FROM s1.first').catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n) === 1, 60_000, 250);
  }, 120_000);

  afterAll(async () => {
    ctl.abort();
    await running.catch(() => undefined);
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const equal = async (schema: string, table: string): Promise<boolean> => (await compareTable(source, target, { schema, table })).differing === 0;

  it('ALTER PUBLICATION ... ADD TABLES IN SCHEMA: the schema tables reach the target whole', async () => {
    await source.query(`CREATE TABLE s2.t (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      INSERT INTO s2.t SELECT i, 0 FROM generate_series(1, 50) i`);
    await source.query(`ALTER PUBLICATION ${name}_pub ADD TABLES IN SCHEMA s2`);
    await source.query('UPDATE s2.t SET v = 1 WHERE id <= 5');
    await waitFor('target s2.t equals source s2.t', async () => equal('s2', 't').catch(() => false), 30_000, 500);
    expect(Number((await target.query('SELECT count(*) AS n FROM s2.t')).rows[0]?.n)).toBe(50);
  }, 120_000);

  it('ALTER TABLE ... SET SCHEMA into the published schema: the table reaches the target whole', async () => {
    await source.query(`CREATE TABLE s3.m (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      INSERT INTO s3.m SELECT i, 0 FROM generate_series(1, 40) i`);
    await source.query('ALTER TABLE s3.m SET SCHEMA s1');
    await source.query('UPDATE s1.m SET v = 1 WHERE id <= 4');
    await waitFor('target s1.m equals source s1.m', async () => equal('s1', 'm').catch(() => false), 30_000, 500);
    expect(Number((await target.query('SELECT count(*) AS n FROM s1.m')).rows[0]?.n)).toBe(40);
  }, 120_000);
});
