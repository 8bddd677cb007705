/**
 * A record in the stream that capture did not write, carrying a `_schema_version` capture
 * never recorded for its table (another producer's, a hand-made one): found by hand in
 * session 17 with a Kafka topic. It held the whole table (TABLE_BLOCKED: "_schema_version 999
 * is not recorded in the source's schema_versions"): every later real change of the table
 * went to the dead-letter queue, for good. A version capture cannot be recording any more
 * (the change's LSN is one the slot was confirmed past) or not yet (beyond the source's WAL)
 * is that record's error alone: SCHEMA_UNKNOWN, dead-lettered (its row waits behind it, as
 * behind any poison, until it is purged or replayed), and the table flows.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import { parseConfig } from '../../src/config/load.js';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';
import { pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { slotStreaming, testLogger, uniqueName, waitFor } from '../helpers/postgres.js';

describe('a record with a _schema_version capture never recorded', () => {
  const name = uniqueName('syncline_forged_version');
  let f: PipelineFixture;
  let yaml: string;

  beforeAll(async () => {
    f = await pipelineFixture(name);
    await f.source.query('CREATE TABLE orders (id int PRIMARY KEY, v text NOT NULL)');
    yaml = await f.yaml({ slot: 'tables: [orders]', extra: ['consumer: { retry: { backoff_base_ms: 50, backoff_max_ms: 500, held_table_interval_ms: 500 } }'], sink: 'create_tables: true, schema_evolution: full' });
  }, 60_000);

  afterAll(async () => {
    await f?.close();
  }, 60_000);

  it('goes to the dead-letter queue alone (SCHEMA_UNKNOWN) and the table keeps flowing', async () => {
    // Capture alone first: the slot is made and confirmed past these rows.
    const config = parseConfig(yaml);
    const metrics = new Metrics();
    let ctl = new AbortController();
    let running = runPipeline(config, 'capture', silentLogger(), ctl.signal, metrics);
    await waitFor('streaming', () => slotStreaming(f.source, name));
    await f.source.query("INSERT INTO orders SELECT i, 'a' FROM generate_series(1, 5) i");
    const published = async (): Promise<number> => Number((await metrics.registry.getSingleMetric('sync_events_published_total')?.get())?.values.reduce((s, v) => s + v.value, 0) ?? 0);
    await waitFor('published', async () => (await published()) >= 5, 30_000, 100);
    ctl.abort();
    await running;

    // Two records capture did not write: at an LSN the slot was confirmed past, and beyond the source's WAL.
    const forged = (id: number, commitLsn: string): ChangeEvent => ({
      source: name, schema: 'public', table: 'orders', op: 'UPDATE', lsn: commitLsn, commit_lsn: commitLsn, xid: 1, seq: id,
      commit_ts: new Date().toISOString(), key: { id: String(id) }, payload: { id: String(id), v: 'forged' }, _version: '1', _schema_version: 999,
    });
    const stream = await openEmbeddedStream({ path: path.join(f.dir, 'stream'), partitions: 2 });
    const producer = await stream.producer();
    await producer.publish([forged(1, '0/10'), forged(2, 'FFFF/0')].map((c) => ({ key: partitionKeyOf(c), value: Buffer.from(JSON.stringify(c)) })));
    await producer.close();

    ctl = new AbortController();
    running = runPipeline(parseConfig(yaml), 'run', await testLogger(), ctl.signal);
    running.catch(() => undefined);
    try {
      await f.source.query("INSERT INTO orders SELECT i, 'b' FROM generate_series(6, 10) i");
      await f.source.query("UPDATE orders SET v = 'c'");
      const rows = async (): Promise<string> => JSON.stringify((await f.target.query("SELECT array_agg(id ORDER BY id) FILTER (WHERE v = 'c') AS c, array_agg(id ORDER BY id) FILTER (WHERE v <> 'c') AS other FROM orders")).rows[0]);
      // Rows 1 and 2 wait behind their forged entries (a row is never applied around a dead-lettered change of it); the table flows.
      await waitFor('rows 3-10 at the target', async () => (await rows().catch(() => '')) === JSON.stringify({ c: [3, 4, 5, 6, 7, 8, 9, 10], other: [1, 2] }), 60_000, 250);
      const letters = await f.target.query<{ id: string; error_code: string; error: string }>("SELECT id::text, error_code, error FROM syncline.dead_letter WHERE error_code = 'SCHEMA_UNKNOWN' ORDER BY id");
      expect(letters.rows).toHaveLength(2);
      expect(letters.rows[0]?.error).toMatch(/_schema_version 999, which capture never recorded/);
      // Purged (as `syncline dlq purge --error SCHEMA_UNKNOWN` does): the rows' held changes apply by themselves.
      const queue = openDeadLetterQueue(parseConfig(yaml)) as DeadLetterQueue;
      try {
        expect(await queue.remove(letters.rows.map((r) => r.id))).toBe(2);
      } finally {
        await queue.close();
      }
      await waitFor('rows 1 and 2 at the target', async () => (await rows().catch(() => '')) === JSON.stringify({ c: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], other: null }), 60_000, 250);
    } finally {
      ctl.abort();
      await running.catch(() => undefined);
    }
  }, 120_000);
});
