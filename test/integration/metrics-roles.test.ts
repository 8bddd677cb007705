import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline, type Role } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freshDatabase, machinePg15, slotStreaming, uniqueName, waitFor, withClient, type PgServer } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_metrics_roles');

/** The samples of `name` in a Prometheus text (no labels: these gauges have none). */
function samples(text: string, name: string): number[] {
  return [...text.matchAll(new RegExp(`^${name} (\\S+)$`, 'gm'))].map((m) => Number(m[1]));
}

// A process exports only what its role knows: a capture process knows no applied LSN and an
// apply process no confirmed slot position; a 0 there would read as a real position to
// `min()` and alerts across processes.
describe('metrics of a process that runs one role', () => {
  let server: PgServer;
  let dir: string;
  let sourceUrl: string;
  let targetUrl: string;
  let configText: string;

  beforeAll(async () => {
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-metrics-roles-'));
    sourceUrl = await freshDatabase(server, 'syncline_metrics_roles_src');
    targetUrl = await freshDatabase(server, 'syncline_metrics_roles_tgt');
    for (const url of [sourceUrl, targetUrl]) await withClient(url, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
    configText = `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_metrics_roles_pub, tables: [items] }]
  snapshot: never
  heartbeat_interval_ms: 500
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: metrics_roles }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`;
  }, 120_000);

  afterAll(async () => {
    await withClient(server.url('postgres'), (c) => c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const insert = (from: number, n: number): Promise<unknown> =>
    withClient(sourceUrl, (c) => c.query('INSERT INTO items SELECT g, md5(g::text) FROM generate_series($1::int, $2::int) g', [from, from + n - 1]));
  const targetCount = (): Promise<number> => withClient(targetUrl, async (c) => (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM items')).rows[0]?.n ?? -1);

  /** Runs `role` with its own metrics until `until(metrics text)` holds; returns the last text. */
  async function runUntil(role: Role, until: (text: string) => Promise<boolean>, started?: () => Promise<unknown>): Promise<string> {
    const metrics = new Metrics();
    const ctl = new AbortController();
    const done = runPipeline(parseConfig(configText, {}), role, silentLogger(), ctl.signal, metrics);
    done.catch(() => undefined);
    let text = '';
    try {
      if (started) {
        await waitFor('slot active', () => withClient(sourceUrl, (c) => slotStreaming(c, SLOT)));
        await started();
      }
      await waitFor(`${role} progress`, async () => until((text = await metrics.registry.metrics())), 30_000, 100);
    } finally {
      ctl.abort();
      await done;
    }
    return text;
  }

  it('capture exports sync_capture_lsn and no sync_apply_lsn; apply the other way round; run both', async () => {
    // The slot is created by the first run: changes before it are not captured.
    const capture = await runUntil(
      'capture',
      async (text) => samples(text, 'sync_events_published_total')[0] === 20 && (samples(text, 'sync_capture_lsn')[0] ?? 0) > 0 && samples(text, 'sync_slot_retained_wal_bytes').length === 1,
      () => insert(1, 20),
    );
    expect(samples(capture, 'sync_capture_lsn')[0]).toBeGreaterThan(0);
    expect(samples(capture, 'sync_slot_retained_wal_bytes')).toHaveLength(1);
    expect(samples(capture, 'sync_apply_lsn')).toEqual([]);
    expect(samples(capture, 'sync_stream_consumer_lag')).toEqual([]);
    expect(capture).not.toMatch(/^# HELP sync_apply_lsn /m);

    const apply = await runUntil('apply', async (text) => (await targetCount()) === 20 && (samples(text, 'sync_apply_lsn')[0] ?? 0) > 0 && samples(text, 'sync_stream_consumer_lag').length === 1);
    expect(samples(apply, 'sync_apply_lsn')[0]).toBeGreaterThan(0);
    expect(samples(apply, 'sync_capture_lsn')).toEqual([]);
    expect(samples(apply, 'sync_slot_retained_wal_bytes')).toEqual([]);
    // Labelled and always-known series are unaffected.
    expect(apply).toMatch(/^sync_lag_seconds\{table="public\.items"\} /m);
    expect(samples(apply, 'sync_deadletter_count')).toEqual([0]);

    // Both roles in one process: both positions, the applied one not past the confirmed one's WAL.
    const knownByRun = ['sync_capture_lsn', 'sync_apply_lsn', 'sync_slot_retained_wal_bytes', 'sync_stream_consumer_lag'];
    const both = await runUntil('run', async (text) => (await targetCount()) === 30 && knownByRun.every((name) => samples(text, name).length === 1), () => insert(21, 10));
    for (const name of knownByRun) expect(samples(both, name), name).toHaveLength(1);
    expect(samples(both, 'sync_apply_lsn')[0]).toBeGreaterThan(samples(apply, 'sync_apply_lsn')[0] ?? 0);
  }, 120_000);
});
