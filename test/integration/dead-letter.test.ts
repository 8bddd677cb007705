import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { loadConfigFile } from '../../src/config/load.js';
import { createLogger, silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { openDeadLetterQueue } from '../../src/compose/dead-letters.js';
import type { DeadLetterQueue } from '../../src/dlq/dead-letter-queue.js';
import { machinePg15, waitFor, slotStreaming, sourceAndTarget, uniqueName } from '../helpers/postgres.js';
import { requireListening } from '../contract/broker-check.js';

const CLI = path.resolve('dist/cli/main.js');

/**
 * The same story with both dead-letter stores: the table next to the sink (embedded stream)
 * and the compacted Kafka topic `dead_letter.topic` (Kafka stream, the default there).
 */
for (const store of ['table', 'topic'] as const) describePoison(store);

function describePoison(store: 'table' | 'topic'): void {
describe(`poison changes: isolated, dead-lettered in row order, replayed after the fix (dead-letter ${store})`, () => {
  const prefix = `syncline_dlq${store === 'topic' ? '_k' : ''}`;
  const slot = uniqueName(prefix);
  let dir: string;
  let queue: DeadLetterQueue;
  let configFile: string;
  let source: pg.Client;
  let target: pg.Client;

  beforeAll(async () => {
    const server = await machinePg15();
    if (store === 'topic') await requireListening('127.0.0.1', 9092, 'the Kafka dead-letter topic test needs a broker: bash scripts/kafka.sh start');
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-dlq-'));
    const pair = await sourceAndTarget(server, prefix);
    ({ source, target } = pair);
    const { sourceUrl, targetUrl } = pair;
    await source.query('CREATE TABLE poison (id integer PRIMARY KEY, v integer NOT NULL, note text)');
    // The target refuses v = 13: a permanent error (check_violation) for those changes only.
    await target.query('CREATE TABLE poison (id integer PRIMARY KEY, v integer NOT NULL CONSTRAINT no_thirteen CHECK (v <> 13), note text)');
    configFile = path.join(dir, 'sync.yaml');
    await writeFile(
      configFile,
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${slot}, publication: ${prefix}_pub, tables: [poison] }]
  snapshot: never # the tests count the WAL's changes; a first snapshot running late (busy machine) would dead-letter the poison row again
stream: ${store === 'topic' ? `{ broker: kafka, brokers: ['127.0.0.1:9092'], topic: ${prefix}_${process.pid}, partitions: 2 }` : `{ path: ${path.join(dir, 'stream')}, partitions: 2 }`}
consumer: { group_id: ${slot}, retry: { backoff_base_ms: 10, backoff_max_ms: 100 } }
sink: { url: ${targetUrl} }
dead_letter: { topic: ${prefix}_${process.pid}.dlq }
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

  function cli(...args: string[]): { status: number | null; out: string; err: string } {
    const r = spawnSync(process.execPath, [CLI, ...args, '-c', configFile], { encoding: 'utf8' });
    return { status: r.status, out: r.stdout, err: r.stderr };
  }

  /** Entries in the dead-letter queue, as another process sees them. */
  async function deadLetters(): Promise<number> {
    return (await queue.depth()).count;
  }

  it('one poison row in a batch of 1,000 does not block the other 999; its later change follows it', async () => {
    const metrics = new Metrics();
    const ctl = new AbortController();
    const running = runPipeline(loadConfigFile(configFile), 'run', process.env.DLQ_DEBUG ? createLogger('debug') : silentLogger(), ctl.signal, metrics);
    running.catch(() => undefined);
    await waitFor('slot active', async () => (await slotStreaming(source, slot)));
    await source.query("INSERT INTO poison SELECT g, CASE WHEN g = 500 THEN 13 ELSE g * 2 END, 'n' || g FROM generate_series(1, 1000) g");
    await waitFor('the poison insert dead-lettered', async () => (await deadLetters()) === 1, 30_000);
    await source.query('UPDATE poison SET v = 14 WHERE id = 500'); // must not overtake the dead-lettered insert
    await source.query('UPDATE poison SET v = -1 WHERE id = 501');
    await waitFor('999 rows applied', async () => (await target.query('SELECT count(*)::int AS n FROM poison')).rows[0]?.n === 999, 30_000);
    await waitFor('both changes of row 500 dead-lettered', async () => (await deadLetters()) === 2, 30_000);
    await waitFor('row 501 updated', async () => (await target.query('SELECT v FROM poison WHERE id = 501')).rows[0]?.v === -1, 10_000);
    expect((await target.query('SELECT count(*)::int AS n FROM poison WHERE id = 500')).rows[0]?.n).toBe(0);
    await waitFor('sync_deadletter_count = 2', async () => (await metrics.registry.getSingleMetric('sync_deadletter_count')?.get())?.values[0]?.value === 2, 30_000);
    ctl.abort();
    await running;

    expect(JSON.parse(cli('status', '--json').out).dlq).toMatchObject({ exists: true, count: 2 });
    const list = cli('dlq', 'list', '--json');
    expect(list.status).toBe(0);
    const entries = JSON.parse(list.out) as { id: string; op: string; error_code: string; error: string; attempts: number; commit_lsn: string; stream_offset: string }[];
    expect(entries.map((e) => e.op)).toEqual(['INSERT', 'UPDATE']);
    expect(entries[0]?.error).toMatch(/no_thirteen/);
    expect(entries[0]?.error_code).toBe('SINK_23514');
    expect(entries[1]?.error_code).toBe('BLOCKED_BY_EARLIER');
    expect(entries[0]?.commit_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const show = cli('dlq', 'show', entries[0]?.id ?? '', '--json');
    expect(JSON.parse(show.out).change).toMatchObject({ table: 'poison', op: 'INSERT', key: { id: '500' }, payload: { v: '13' } });
    expect(cli('dlq', 'list', '--table', 'other', '--json').out.trim()).toBe('[]');
    expect(JSON.parse(cli('dlq', 'list', '--error', 'no_thirteen', '--json').out)).toHaveLength(1);

    // Replaying before the fix fails again and keeps both (the update is held behind the insert).
    const early = cli('dlq', 'replay', '--json');
    expect(early.status).toBe(1);
    expect(JSON.parse(early.out)).toMatchObject({ replayed: 0, held: [entries[1]?.id] });

    // Fix the cause, replay: both leave the queue and the row ends as at the source.
    await target.query('ALTER TABLE poison DROP CONSTRAINT no_thirteen');
    const replay = cli('dlq', 'replay', '--json');
    expect(replay.status).toBe(0);
    expect(JSON.parse(replay.out)).toMatchObject({ replayed: 2, failed: [] });
    expect((await target.query('SELECT v FROM poison WHERE id = 500')).rows[0]?.v).toBe(14);
    expect(JSON.parse(cli('dlq', 'list', '--json').out)).toEqual([]);
  }, 120_000);

  it('purge needs a filter and removes what it matches', async () => {
    await queue.add([{ change: undefined, raw: 'garbage', error: 'not JSON', errorCode: 'EVENT_MALFORMED', attempts: 1, partition: 0, offset: 123456n }]);
    expect(cli('dlq', 'purge').status).toBe(2);
    const purge = cli('dlq', 'purge', '--error', 'EVENT_MALFORMED', '--json');
    expect(purge.status).toBe(0);
    expect(JSON.parse(purge.out)).toEqual({ purged: 1 });
  });

  it('purge removes every match (in rounds) unless --limit is given; list and replay say when they stopped at --limit', async () => {
    const bad = Array.from({ length: 2500 }, (_, i) => ({ change: undefined, raw: `garbage ${i}`, error: 'not JSON', errorCode: 'EVENT_MALFORMED', attempts: 1, partition: 1, offset: 200_000n + BigInt(i) }));
    await queue.add(bad);
    const list = cli('dlq', 'list', '--error', 'EVENT_MALFORMED', '--limit', '10', '--json');
    expect(JSON.parse(list.out)).toHaveLength(10);
    expect(list.err).toMatch(/the first 10 matching entries only \(--limit 10\)/);
    const replay = cli('dlq', 'replay', '--error', 'EVENT_MALFORMED', '--limit', '5', '--json');
    expect(JSON.parse(replay.out)).toMatchObject({ undecodable: expect.any(Array), limit_reached: true });
    expect(JSON.parse(cli('dlq', 'purge', '--error', 'EVENT_MALFORMED', '--limit', '3', '--json').out)).toEqual({ purged: 3 });
    expect(JSON.parse(cli('dlq', 'purge', '--error', 'EVENT_MALFORMED', '--json').out)).toEqual({ purged: 2497 });
    expect((await queue.depth()).count).toBe(0);
  }, 120_000);
});
}
