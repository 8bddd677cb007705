import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { countRows, pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

/**
 * Kafka red team: after a held table's target was fixed, ~7k held changes of rows with no
 * failing change stayed in the dead-letter queue for good while the table counted as
 * released (target 1,563 rows against 37 at the source). HeldTables.retry read the table's
 * oldest 1,000 entries; when those were all of rows whose held changes had become real
 * failures (values the fixed target refuses), nothing was ready, and it took that for "all
 * applied" and released the table: the entries after them were never tried again.
 */
describe('a held table whose oldest 1,000 entries are failures', () => {
  let fx: PipelineFixture;
  let queue: DeadLetterQueue;
  let yaml: string;

  beforeAll(async () => {
    fx = await pipelineFixture(uniqueName('held_front'));
    await fx.source.query('CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL)');
    yaml = await fx.yaml({
      slot: 'tables: [t]',
      source: ['snapshot: never'],
      sink: 'schema_evolution: none',
      extra: ['consumer: { group_id: heldfront, retry: { backoff_base_ms: 10, backoff_max_ms: 100, held_table_interval_ms: 500 } }'],
    });
    queue = openDeadLetterQueue(parseConfig(yaml)) as DeadLetterQueue;
    await queue.prepare();
  }, 60_000);

  afterAll(async () => {
    await queue?.close();
    await fx?.close();
  });

  it('applies the rows behind them once the target is fixed, and leaves only the failures queued', async () => {
    const running = await fx.start(yaml);
    try {
      // Held (no target table): 1,100 rows the fixed target will refuse, then 50 it takes.
      await fx.source.query('INSERT INTO t SELECT g, 40000 FROM generate_series(1, 1100) g');
      await fx.source.query('INSERT INTO t SELECT g, g FROM generate_series(2001, 2050) g');
      await waitFor('all held', async () => (await queue.list({ table: 't', limit: 2000 })).length === 1150, 30_000);

      // The fix, with a narrower column than the source's: the first 1,100 become failures.
      await fx.target.query('CREATE TABLE t (id integer PRIMARY KEY, v smallint NOT NULL)');
      await waitFor('the rows behind the failures applied', async () => (await countRows(fx.target, 't')) === 50, 60_000);
      const left = await queue.list({ table: 't', limit: 2000 });
      expect(left.length).toBe(1100);
      expect(left.every((e) => e.errorCode !== 'TABLE_BLOCKED' && e.errorCode !== 'BLOCKED_BY_EARLIER')).toBe(true);
    } finally {
      await running.stop();
    }
  }, 180_000);
});
