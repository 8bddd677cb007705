import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { machinePg15, waitFor, slotStreaming, sourceAndTarget, uniqueName, testLogger } from '../helpers/postgres.js';

/**
 * Kafka red team: after a held table's target was fixed, ~7k held changes of rows with no
 * failing change stayed in the dead-letter queue for good while the table counted as
 * released (target 1,563 rows against 37 at the source). HeldTables.retry read the table's
 * oldest 1,000 entries; when those were all of rows whose held changes had become real
 * failures (values the fixed target refuses), nothing was ready, and it took that for "all
 * applied" and released the table: the entries after them were never tried again.
 */
describe('a held table whose oldest 1,000 entries are failures', () => {
  const prefix = 'held_front';
  const slot = uniqueName(prefix);
  let dir: string;
  let queue: DeadLetterQueue;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'held-front-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    await source.query('CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [t] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: heldfront, retry: { backoff_base_ms: 10, backoff_max_ms: 100, held_table_interval_ms: 500 } }
sink: { url: ${pair.targetUrl}, schema_evolution: none }
monitoring: { enabled: false }
`,
    );
    queue = openDeadLetterQueue(loadConfigFile(configFile)) as DeadLetterQueue;
    await queue.prepare();
  }, 60_000);

  afterAll(async () => {
    await queue?.close();
    await source?.end();
    await target?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('applies the rows behind them once the target is fixed, and leaves only the failures queued', async () => {
    const config = loadConfigFile(configFile);
    const ctl = new AbortController();
    const running = runPipeline(config, 'run', await testLogger(), ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    try {
      await waitFor('slot streaming', async () => await slotStreaming(source, slot), 30_000);
      // Held (no target table): 1,100 rows the fixed target will refuse, then 50 it takes.
      await source.query('INSERT INTO t SELECT g, 40000 FROM generate_series(1, 1100) g');
      await source.query('INSERT INTO t SELECT g, g FROM generate_series(2001, 2050) g');
      await waitFor('all held', async () => (await queue.list({ table: 't', limit: 2000 })).length === 1150, 30_000);

      // The fix, with a narrower column than the source's: the first 1,100 become failures.
      await target.query('CREATE TABLE t (id integer PRIMARY KEY, v smallint NOT NULL)');
      await waitFor('the rows behind the failures applied', async () => (await target.query('SELECT count(*)::int AS n FROM t')).rows[0]?.n === 50, 60_000);
      const left = await queue.list({ table: 't', limit: 2000 });
      expect(left.length).toBe(1100);
      expect(left.every((e) => e.errorCode !== 'TABLE_BLOCKED' && e.errorCode !== 'BLOCKED_BY_EARLIER')).toBe(true);
      expect(failure).toBeUndefined();
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 180_000);
});
