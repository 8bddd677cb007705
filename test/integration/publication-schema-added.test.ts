/**
 * Tables that join a `FOR TABLES IN SCHEMA` publication with rows already in them, while the
 * pipeline runs: `ALTER PUBLICATION ... ADD TABLES IN SCHEMA s2` (s2's tables existed, with
 * rows) and `ALTER TABLE s3.m SET SCHEMA s1` (into a schema the publication takes whole).
 * Their rows from before are in no change the slot sends, as for a table added by name
 * (`ADD TABLE`, table-renamed.test.ts); 1e9d4fc took every table met through a schema for
 * one created since capture started, so their target tables held only the rows changed
 * since, silently.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable } from '../../src/verify/compare.js';
import { countRows, pipelineFixture, type PipelineFixture, type RunningPipeline } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

describe('tables joining a schema publication with rows', () => {
  const name = uniqueName('syncline_pubschema');
  let f: PipelineFixture;
  let running: RunningPipeline | undefined;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query(`CREATE SCHEMA s1; CREATE SCHEMA s2; CREATE SCHEMA s3;
      CREATE TABLE s1.first (id int PRIMARY KEY); INSERT INTO s1.first VALUES (1);
      CREATE PUBLICATION ${name}_pub FOR TABLES IN SCHEMA s1`);
    const yaml = await f.yaml({ sink: 'create_tables: true, schema_evolution: full' });
    await f.target.query('CREATE SCHEMA s1; CREATE SCHEMA s2');
    running = await f.start(yaml);
    await waitFor('s1.first replicated', async () => (await countRows(f.target, 's1.first')) === 1, 60_000, 250);
  }, 120_000);

  afterAll(async () => {
    await running?.stop();
    await f?.close();
  }, 60_000);

  const equal = async (schema: string, table: string): Promise<boolean> => (await compareTable(f.source, f.target, { schema, table })).differing === 0;

  it('ALTER PUBLICATION ... ADD TABLES IN SCHEMA: the schema tables reach the target whole', async () => {
    await f.source.query(`CREATE TABLE s2.t (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      INSERT INTO s2.t SELECT i, 0 FROM generate_series(1, 50) i`);
    await f.source.query(`ALTER PUBLICATION ${name}_pub ADD TABLES IN SCHEMA s2`);
    await f.source.query('UPDATE s2.t SET v = 1 WHERE id <= 5');
    await waitFor('target s2.t equals source s2.t', async () => equal('s2', 't').catch(() => false), 30_000, 500);
    expect(await countRows(f.target, 's2.t')).toBe(50);
  }, 120_000);

  it('ALTER TABLE ... SET SCHEMA into the published schema: the table reaches the target whole', async () => {
    await f.source.query(`CREATE TABLE s3.m (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      INSERT INTO s3.m SELECT i, 0 FROM generate_series(1, 40) i`);
    await f.source.query('ALTER TABLE s3.m SET SCHEMA s1');
    await f.source.query('UPDATE s1.m SET v = 1 WHERE id <= 4');
    await waitFor('target s1.m equals source s1.m', async () => equal('s1', 'm').catch(() => false), 30_000, 500);
    expect(await countRows(f.target, 's1.m')).toBe(40);
  }, 120_000);
});
