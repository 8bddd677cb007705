import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freshDatabase, machinePg15, slotStreaming, uniqueName, waitFor, withClient, type PgServer } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_lag_backoff');

/** The value of `name` in a Prometheus text (undefined: no such sample). */
function sample(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * While capture waits to start again after a failure (the backoff of consumer.retry: the
 * broker away, a dropped replication connection), the source goes on writing and nothing of
 * it reaches the stream: sync_capture_lag_seconds must grow. Before, the gauge kept the value
 * it had when capture failed (0 here: it was caught up) for the whole wait, so
 * SynclineLagCritical could not fire however long the stream stayed away.
 */
describe('sync_capture_lag_seconds while capture waits to start again (PostgreSQL 15)', () => {
  let server: PgServer;
  let dir: string;
  let sourceUrl: string;

  beforeAll(async () => {
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-lag-backoff-'));
    sourceUrl = await freshDatabase(server, 'syncline_lag_backoff_src');
    await withClient(sourceUrl, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
  }, 120_000);

  afterAll(async () => {
    await withClient(server.url('postgres'), (c) => c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('grows during the wait and falls once capture streams again', async () => {
    const config = parseConfig(
      `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_lag_backoff_pub, tables: [items] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: g, retry: { backoff_base_ms: 14000, backoff_max_ms: 14000, jitter: false } }
sink: { url: ${sourceUrl} }
monitoring: { enabled: false }
`,
      {},
    );
    const metrics = new Metrics();
    const lag = async (): Promise<number | undefined> => sample(await metrics.registry.metrics(), 'sync_capture_lag_seconds');
    const ctl = new AbortController();
    const done = runPipeline(config, 'capture', silentLogger(), ctl.signal, metrics);
    done.catch(() => undefined);
    let writing = true;
    let id = 0;
    const writer = (async () => {
      while (writing) {
        await withClient(sourceUrl, (c) => c.query('INSERT INTO items VALUES ($1, $2)', [++id, 'v']));
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    try {
      await waitFor('slot active', () => withClient(sourceUrl, (c) => slotStreaming(c, SLOT)), 60_000, 50);
      await waitFor('capture caught up', async () => ((await lag()) ?? 99) <= 1.5, 30_000, 100);
      // Capture's walsender ends: capture fails and waits 14 s (the source and stream answer) before it starts again.
      const pid = await withClient(sourceUrl, async (c) => (await c.query<{ pid: number }>('SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1', [SLOT])).rows[0]?.pid);
      await withClient(server.url('postgres'), (c) => c.query('SELECT pg_terminate_backend($1)', [pid]));
      await new Promise((r) => setTimeout(r, 9000));
      const during = await lag();
      expect(during).toBeGreaterThanOrEqual(6); // the writes of the last ~9 s are not in the stream
      // Capture starts again and catches up: the lag falls back.
      await waitFor('capture caught up again', async () => ((await lag()) ?? 99) <= 1.5, 30_000, 100);
    } finally {
      writing = false;
      await writer;
      ctl.abort();
      await done.catch(() => undefined);
    }
  }, 120_000);
});
