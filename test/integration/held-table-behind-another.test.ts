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
 * red18: two held tables. `a_stuck` is held first (its target table is missing and stays
 * missing); `b_fixed` is held next, then its target table is created. The README promises
 * that every `held_table_interval_ms` apply tries the held changes again and that once the
 * target is fixed "they apply by themselves, in order, leave the queue, and the table flows
 * again". HeldTables.retry walks the held tables in the order they were held and *returns*
 * on the first one that still does not apply (PrerequisiteError), so `b_fixed` is never
 * tried while `a_stuck` is held: its fixed target stays empty for good, and `syncline
 * status` keeps showing it BLOCKED. Found by hand: a table held by a REPLICA IDENTITY change
 * kept a table whose column type had been fixed at the target held for minutes, released
 * the moment the first table's entries were purged.
 */
describe('a fixed held table is released while another held table stays broken', () => {
  const prefix = 'red18_held2';
  const slot = uniqueName(prefix);
  let dir: string;
  let queue: DeadLetterQueue;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'red18-held2-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    await source.query('CREATE TABLE a_stuck (id integer PRIMARY KEY, v integer NOT NULL)');
    await source.query('CREATE TABLE b_fixed (id integer PRIMARY KEY, v integer NOT NULL)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${pair.sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [a_stuck, b_fixed] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: held2, retry: { backoff_base_ms: 10, backoff_max_ms: 100, held_table_interval_ms: 500 } }
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

  it('applies b_fixed once its target exists, though a_stuck is still held', async () => {
    const config = loadConfigFile(configFile);
    const ctl = new AbortController();
    const running = runPipeline(config, 'run', await testLogger(), ctl.signal);
    let failure: unknown;
    running.catch((err: unknown) => (failure = err));
    try {
      await waitFor('slot streaming', async () => await slotStreaming(source, slot), 30_000);
      // a_stuck is held first, so it comes first in the held tables' order.
      await source.query('INSERT INTO a_stuck SELECT g, g FROM generate_series(1, 5) g');
      await waitFor('a_stuck held', async () => (await queue.list({ table: 'public.a_stuck', limit: 10 })).length === 5, 30_000);
      await source.query('INSERT INTO b_fixed SELECT g, g FROM generate_series(1, 5) g');
      await waitFor('b_fixed held', async () => (await queue.list({ table: 'public.b_fixed', limit: 10 })).length === 5, 30_000);

      // The fix of b_fixed's target; a_stuck's stays missing.
      await target.query('CREATE TABLE b_fixed (id integer PRIMARY KEY, v integer NOT NULL)');
      // 20 retry intervals of 500 ms: plenty for "they apply by themselves".
      await waitFor(
        'b_fixed applied from the dead-letter queue',
        async () => (await target.query('SELECT count(*)::int AS n FROM b_fixed')).rows[0]?.n === 5,
        10_000,
      );
      expect((await queue.list({ table: 'public.b_fixed', limit: 10 })).length).toBe(0);
      expect(failure).toBeUndefined();
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
