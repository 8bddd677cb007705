/**
 * `ALTER TABLE t DROP COLUMN c, ADD COLUMN c text DEFAULT 'cc'` while a writer runs, into a
 * postgres target with `schema_evolution: full`. An acceptance pass found the target's old
 * `c integer` kept (the name was there, so nothing was planned) and every change of the table
 * failing alone on `'cc'` (SQLSTATE 22P02): thousands of dead letters, each row blocked
 * until `dlq replay` after a manual fix. Now `drop_columns: drop` drops the old column and
 * adds the new one; `keep` holds the table (TABLE_BLOCKED, SCHEMA_MISMATCH) until the old
 * column is renamed aside, then the held changes apply by themselves.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { compareTable } from '../../src/verify/compare.js';
import { ensureBuilt, runCli } from '../helpers/cli.js';
import { freePort, machinePg15, slotStreaming, sourceAndTarget, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe.each(['drop', 'keep'] as const)('a column dropped and re-added under its name, another type (drop_columns: %s)', (dropColumns) => {
  const name = uniqueName(`syncline_acc2_readd_${dropColumns}`);
  let dir: string;
  let source: pg.Client;
  let target: pg.Client;
  let configFile: string;
  const ctl = new AbortController();
  let running: Promise<unknown> = Promise.resolve();

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-acc2-readd-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query(`CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL DEFAULT 0, c int);
      INSERT INTO r SELECT i, 0, i FROM generate_series(1, 200) i`);
    const yaml = `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${name}, publication: ${name}_pub, tables: [r] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { retry: { backoff_base_ms: 50, backoff_max_ms: 500, held_table_interval_ms: 500 } }
sink: { url: ${pair.targetUrl}, create_tables: true, schema_evolution: full, drop_columns: ${dropColumns} }
monitoring: { port: ${await freePort()} }
`;
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(configFile, yaml);
    running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    await waitFor('streaming', () => slotStreaming(source, name));
    await waitFor('r replicated', async () => Number((await target.query('SELECT count(*) AS n FROM r').catch(() => ({ rows: [{ n: 0 }] }))).rows[0]?.n) === 200, 60_000, 250);
  }, 120_000);

  afterAll(async () => {
    ctl.abort();
    await running.catch(() => undefined);
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [name]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('the target follows (drop) or holds the table until the old column is renamed aside (keep); no poison dead letters', async () => {
    await source.query('UPDATE r SET v = v + 1 WHERE id <= 50');
    await source.query(`ALTER TABLE r DROP COLUMN c, ADD COLUMN c text DEFAULT 'cc'`);
    await source.query('UPDATE r SET v = v + 1 WHERE id > 100');
    await source.query(`INSERT INTO r (id, v, c) VALUES (500, 1, 'new')`);
    const equal = async (): Promise<boolean> => (await compareTable(source, target, { schema: 'public', table: 'r' })).differing === 0;
    if (dropColumns === 'keep') {
      await waitFor('table held', async () => (await runCli('status', '-c', configFile)).stdout.includes('BLOCKED'), 60_000, 500);
      const list = await runCli('dlq', 'list', '-c', configFile, '--json');
      expect(list.stdout).toContain('TABLE_BLOCKED');
      expect(list.stdout).toContain('SCHEMA_MISMATCH');
      expect(list.stdout).not.toContain('22P02');
      await target.query('ALTER TABLE r RENAME COLUMN c TO c_old');
    }
    await waitFor('target equals source', async () => equal().catch(() => false), 60_000, 500);
    const { rows } = await target.query<{ type: string }>(`SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = 'r'::regclass AND attname = 'c'`);
    expect(rows).toEqual([{ type: 'text' }]);
    await waitFor('dead-letter queue empty', async () => (await runCli('dlq', 'list', '-c', configFile)).stdout.includes('is empty'), 30_000, 500);
  }, 120_000);
});
