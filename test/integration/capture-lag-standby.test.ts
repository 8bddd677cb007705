import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freshDatabase, machinePg15, slotStreaming, uniqueName, waitFor, withClient, type PgServer } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_lag_standby');

/** The value of `name` in a Prometheus text (undefined: no such sample). */
function sample(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * A capture that lost the slot to another one (its walsender ended: a source restart, a
 * network cut) and now waits as its standby does not measure anything: it must not keep
 * exporting the sync_capture_lag_seconds it last had. Before, the value it had when it lost
 * the slot stayed for as long as the process ran (here the age of a backlog the new leader
 * has long caught up with), and SynclineLagCritical's max() kept reading it.
 */
describe('sync_capture_lag_seconds of a capture that became a standby (PostgreSQL 15)', () => {
  let server: PgServer;
  let dir: string;
  let sourceUrl: string;
  let config: (group: string, backoffMs: number) => string;

  beforeAll(async () => {
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-lag-standby-'));
    sourceUrl = await freshDatabase(server, 'syncline_lag_standby_src');
    await withClient(sourceUrl, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
    config = (group, backoffMs) => `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_lag_standby_pub, tables: [items] }]
  snapshot: never
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: ${group}, retry: { backoff_base_ms: ${backoffMs}, jitter: false } }
sink: { url: ${sourceUrl} }
monitoring: { enabled: false }
`;
  }, 120_000);

  afterAll(async () => {
    await withClient(server.url('postgres'), (c) => c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const start = (text: string, metrics: Metrics): { stop: () => Promise<void> } => {
    const ctl = new AbortController();
    const done = runPipeline(parseConfig(text, {}), 'capture', silentLogger(), ctl.signal, metrics);
    done.catch(() => undefined);
    return {
      stop: async () => {
        ctl.abort();
        await done.catch(() => undefined);
      },
    };
  };
  const slotPid = (): Promise<number | null> =>
    withClient(sourceUrl, async (c) => (await c.query<{ pid: number | null }>('SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1', [SLOT])).rows[0]?.pid ?? null);

  it('is not exported by the standby once the other capture leads', async () => {
    // The slot exists; then a backlog of published changes, older than a checkpoint, while no capture runs.
    const first = start(config('a', 100), new Metrics());
    await waitFor('slot active', () => withClient(sourceUrl, (c) => slotStreaming(c, SLOT)), 60_000, 50);
    await first.stop();
    await withClient(sourceUrl, async (c) => {
      await c.query("INSERT INTO items SELECT g, repeat('v', 100) FROM generate_series(1, 400000) g");
      await c.query('CHECKPOINT');
    });
    await new Promise((r) => setTimeout(r, 3000));

    const metricsA = new Metrics();
    const a = start(config('a', 5000), metricsA);
    let b: { stop: () => Promise<void> } | undefined;
    const metricsB = new Metrics();
    try {
      await waitFor('A to lead and measure a lag', async () => (sample(await metricsA.registry.metrics(), 'sync_capture_lag_seconds') ?? 0) >= 2, 60_000, 50);
      await waitFor('A to confirm a position', async () => sample(await metricsA.registry.metrics(), 'sync_capture_lsn') !== undefined, 60_000, 50);
      b = start(config('b', 100), metricsB);
      await new Promise((r) => setTimeout(r, 1000)); // B waits as A's standby
      const pidA = await slotPid();
      expect(pidA).not.toBeNull();
      // A's walsender ends: A fails and starts again after 5 s; B takes the slot meanwhile.
      await withClient(server.url('postgres'), (c) => c.query('SELECT pg_terminate_backend($1)', [pidA]));
      await waitFor('B to lead', async () => {
        const pid = await slotPid();
        return pid !== null && pid !== pidA && (sample(await metricsB.registry.metrics(), 'sync_capture_lag_seconds') ?? 1) === 0;
      }, 120_000, 100);
      await new Promise((r) => setTimeout(r, 8000)); // A is back, as B's standby
      const lagA = sample(await metricsA.registry.metrics(), 'sync_capture_lag_seconds');
      expect(sample(await metricsB.registry.metrics(), 'sync_capture_lag_seconds')).toBe(0);
      expect(lagA).toBeUndefined(); // absent: this process does not capture
      // Nor the slot's position and retained WAL it read while it led: B's are the slot's now.
      const textA = await metricsA.registry.metrics();
      expect(sample(textA, 'sync_capture_lsn')).toBeUndefined();
      expect(sample(textA, 'sync_slot_retained_wal_bytes')).toBeUndefined();
    } finally {
      await b?.stop();
      await a.stop();
    }
  }, 300_000);
});
