import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { CLI, ensureBuilt } from '../helpers/cli.js';
import { machinePg15, slotStreaming, sourceAndTarget, testLogger, waitFor, uniqueName } from '../helpers/postgres.js';

const run = promisify(execFile);

/**
 * Red team (accept3), failed before the fix: with sink.consistency: transactional, a later transaction that touches
 * a row whose earlier change is dead-lettered goes to the queue whole. Its change of that row
 * said TRANSACTION_DEAD_LETTERED, "another change of this source transaction is in the
 * dead-letter queue", also when it was the transaction's only change: the reason is the row
 * (BLOCKED_BY_EARLIER); only its other changes wait for their transaction.
 */
const name = 'syncline_txn_reason';
const slot = uniqueName(name);
describe('transactional dead letters name why each change waits', () => {
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    ensureBuilt();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-txn-reason-'));
    const pair = await sourceAndTarget(await machinePg15(), name);
    ({ source, target } = pair);
    await source.query('CREATE TABLE orders (id integer PRIMARY KEY, amount integer NOT NULL)');
    await target.query('CREATE TABLE orders (id integer PRIMARY KEY, amount integer NOT NULL CONSTRAINT small CHECK (amount < 1000))');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${name}_pub, tables: [orders] }]
stream: { path: ${path.join(dir, 'stream')}, partitions: 4 }
consumer: { group_id: ${slot}, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${pair.targetUrl}, consistency: transactional }
monitoring: { enabled: false }
`,
    );
  }, 60_000);

  afterAll(async () => {
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('BLOCKED_BY_EARLIER for the change of the held row, TRANSACTION_DEAD_LETTERED for the rest of its transaction', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    const list = async (): Promise<{ commit_lsn: string; key: string; error_code: string }[]> =>
      JSON.parse((await run(process.execPath, [CLI, 'dlq', 'list', '--json', '-c', configFile])).stdout) as { commit_lsn: string; key: string; error_code: string }[];
    try {
      await waitFor('slot streaming', () => slotStreaming(source, slot));
      // The poison transaction (row 1 refused by the target, row 3 with it), then later
      // transactions of row 3 in the same batch.
      await source.query('BEGIN');
      await source.query('INSERT INTO orders VALUES (1, 5000)');
      await source.query('INSERT INTO orders VALUES (3, 3)');
      await source.query('COMMIT');
      await source.query('UPDATE orders SET amount = 4 WHERE id = 3'); // alone in its transaction
      await source.query('BEGIN');
      await source.query('INSERT INTO orders VALUES (2, 2)');
      await source.query('UPDATE orders SET amount = 5 WHERE id = 3');
      await source.query('COMMIT');
      await waitFor('the three transactions dead-lettered', async () => (await list()).length === 5, 60_000, 300, async () => JSON.stringify(await list()));
      const entries = await list();
      expect(entries.map((e) => [e.key, e.error_code])).toEqual([
        ['["1"]', 'SINK_23514'],
        ['["3"]', 'SINK_23514'],
        ['["3"]', 'BLOCKED_BY_EARLIER'],
        ['["2"]', 'TRANSACTION_DEAD_LETTERED'],
        ['["3"]', 'BLOCKED_BY_EARLIER'],
      ]);
      await target.query('ALTER TABLE orders DROP CONSTRAINT small');
      const replay = JSON.parse((await run(process.execPath, [CLI, 'dlq', 'replay', '--json', '-c', configFile])).stdout) as { replayed: number; failed: unknown[] };
      expect(replay).toMatchObject({ replayed: 5, failed: [] });
      expect((await target.query('SELECT id, amount FROM orders ORDER BY id')).rows).toEqual([
        { id: 1, amount: 5000 },
        { id: 2, amount: 2 },
        { id: 3, amount: 5 },
      ]);
    } finally {
      ctl.abort();
      await running;
    }
  }, 120_000);
});
