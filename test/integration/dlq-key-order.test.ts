import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { replayDeadLetterQueue } from '../../src/ops/replay-dead-letters.js';
import { compareTable } from '../../src/verify/compare.js';
import { machinePg15, testLogger, waitFor, slotStreaming, sourceAndTarget, uniqueName } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_dlqkey');

/**
 * The dead-letter table keeps each change as jsonb, which stores an object's keys shortest
 * first: a composite key (order_id, line) came back as { line, order_id }. Replay then took
 * the row's key as ["2","1"] instead of ["1","2"], met the tombstone of row (2,1) deleted
 * after it, counted the change "stale" and removed it from the queue: the row kept its old
 * value at the target and nothing said so.
 */
describe('dead-letter replay of a composite key whose column names jsonb reorders', () => {
  let dir: string;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;
  let queue: DeadLetterQueue;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-dlqkey-'));
    const pair = await sourceAndTarget(server, 'syncline_dlqkey');
    ({ source, target } = pair);
    await source.query('CREATE TABLE items (order_id integer, line integer, qty integer, PRIMARY KEY (order_id, line))');
    await target.query('CREATE TABLE items (order_id integer, line integer, qty integer CONSTRAINT no_negative CHECK (qty >= 0), PRIMARY KEY (order_id, line))');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_dlqkey_pub, tables: [items] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: dlqkey, retry: { backoff_base_ms: 10, backoff_max_ms: 50 } }
sink: { url: ${pair.targetUrl} }
monitoring: { enabled: false }
`,
    );
    queue = openDeadLetterQueue(loadConfigFile(configFile)) as DeadLetterQueue;
    await queue.prepare();
  }, 60_000);

  afterAll(async () => {
    await queue?.close();
    await source?.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]).catch(() => undefined);
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('replays the change to its own row, not as stale behind the tombstone of the row with the key reversed', async () => {
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', await testLogger(), ctl.signal, new Metrics());
    running.catch(() => undefined);
    await waitFor('slot active', () => slotStreaming(source, SLOT));
    await source.query('INSERT INTO items VALUES (1, 2, 5), (2, 1, 5)');
    await waitFor('both rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM items')).rows[0]?.n === 2, 30_000);
    // The update is refused at the target (dead-lettered); row (2,1) is deleted after it.
    await source.query('UPDATE items SET qty = -1 WHERE order_id = 1 AND line = 2');
    await source.query('DELETE FROM items WHERE order_id = 2 AND line = 1');
    await waitFor('the update dead-lettered and the delete applied', async () =>
      (await queue.depth()).count === 1 && (await target.query('SELECT count(*)::int AS n FROM items')).rows[0]?.n === 1, 30_000);
    ctl.abort();
    await running;

    const [entry] = await queue.list({});
    expect(entry?.rowKey).toBe('["1","2"]');
    expect(Object.keys(entry?.change?.key ?? {})).toEqual(['order_id', 'line']);

    await target.query('ALTER TABLE items DROP CONSTRAINT no_negative');
    const result = await replayDeadLetterQueue(loadConfigFile(configFile), {});
    expect(result).toMatchObject({ replayed: 1, stale: 0, failed: [] });
    expect((await target.query('SELECT qty FROM items WHERE order_id = 1 AND line = 2')).rows[0]?.qty).toBe(-1);
    expect((await compareTable(source, target, { schema: 'public', table: 'items' })).differing).toBe(0);
  }, 120_000);
});
