/**
 * `ALTER TABLE t DROP COLUMN c, ADD COLUMN c text DEFAULT 'cc'` while a writer runs, into a
 * postgres target with `schema_evolution: full`. An acceptance pass found the target's old
 * `c integer` kept (the name was there, so nothing was planned) and every change of the table
 * failing alone on `'cc'` (SQLSTATE 22P02): thousands of dead letters, each row blocked
 * until `dlq replay` after a manual fix. Now `drop_columns: drop` drops the old column and
 * adds the new one; `keep` holds the table (TABLE_BLOCKED, SCHEMA_MISMATCH) until the old
 * column is renamed aside, then the held changes apply by themselves.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareTable } from '../../src/verify/compare.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { countRows, pipelineFixture, type PipelineFixture, type RunningPipeline } from '../helpers/pipeline-fixture.js';
import { freePort, uniqueName, waitFor } from '../helpers/postgres.js';

describe.each(['drop', 'keep'] as const)('a column dropped and re-added under its name, another type (drop_columns: %s)', (dropColumns) => {
  const name = uniqueName(`syncline_acc2_readd_${dropColumns}`);
  let f: PipelineFixture;
  let configFile: string;
  let running: RunningPipeline | undefined;

  beforeAll(async () => {
    ensureBuilt();
    f = await pipelineFixture(name);
    await f.source.query(`CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL DEFAULT 0, c int);
      INSERT INTO r SELECT i, 0, i FROM generate_series(1, 200) i`);
    const yaml = `source:
  url: ${f.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [r] }]
stream: { path: ${path.join(f.dir, 'stream')}, partitions: 2 }
consumer: { retry: { backoff_base_ms: 50, backoff_max_ms: 500, held_table_interval_ms: 500 } }
sink: { url: ${f.targetUrl}, create_tables: true, schema_evolution: full, drop_columns: ${dropColumns} }
monitoring: { port: ${await freePort()} }
`;
    configFile = path.join(f.dir, 'sync.yaml');
    await writeFile(configFile, yaml);
    running = await f.start(yaml);
    await waitFor('r replicated', async () => (await countRows(f.target, 'r')) === 200, 60_000, 250);
  }, 120_000);

  afterAll(async () => {
    await running?.stop();
    await f?.close();
  }, 60_000);

  it('the target follows (drop) or holds the table until the old column is renamed aside (keep); no poison dead letters', async () => {
    await f.source.query('UPDATE r SET v = v + 1 WHERE id <= 50');
    await f.source.query(`ALTER TABLE r DROP COLUMN c, ADD COLUMN c text DEFAULT 'cc'`);
    await f.source.query('UPDATE r SET v = v + 1 WHERE id > 100');
    await f.source.query(`INSERT INTO r (id, v, c) VALUES (500, 1, 'new')`);
    const equal = async (): Promise<boolean> => (await compareTable(f.source, f.target, { schema: 'public', table: 'r' })).differing === 0;
    if (dropColumns === 'keep') {
      await waitFor('table held', async () => (await runCli('status', '-c', configFile)).stdout.includes('BLOCKED'), 60_000, 500);
      const list = await runCli('dlq', 'list', '-c', configFile, '--json');
      expect(list.stdout).toContain('TABLE_BLOCKED');
      expect(list.stdout).toContain('SCHEMA_MISMATCH');
      expect(list.stdout).not.toContain('22P02');
      await f.target.query('ALTER TABLE r RENAME COLUMN c TO c_old');
    }
    await waitFor('target equals source', async () => equal().catch(() => false), 60_000, 500);
    const { rows } = await f.target.query<{ type: string }>(`SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = 'r'::regclass AND attname = 'c'`);
    expect(rows).toEqual([{ type: 'text' }]);
    await waitFor('dead-letter queue empty', async () => (await runCli('dlq', 'list', '-c', configFile)).stdout.includes('is empty'), 30_000, 500);
  }, 120_000);
});
