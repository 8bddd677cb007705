import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPipeline } from '../../src/api/run-pipeline.js';
import { parseConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { freshDatabase, machinePg15, slotStreaming, uniqueName, waitFor, withClient, type PgServer } from '../helpers/postgres.js';

const SLOT = uniqueName('syncline_metrics_start');

// The design lists the captured total and the slot's retained WAL among the metrics: a scrape
// of an idle capture that just started finds them, not only after the first change or the
// first heartbeat (source.heartbeat_interval_ms, here one minute).
describe('metrics of a capture that just started, before any change', () => {
  let server: PgServer;
  let dir: string;
  let configText: string;

  beforeAll(async () => {
    server = await machinePg15();
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncline-metrics-start-'));
    const sourceUrl = await freshDatabase(server, 'syncline_metrics_start_src');
    const targetUrl = await freshDatabase(server, 'syncline_metrics_start_tgt');
    for (const url of [sourceUrl, targetUrl]) await withClient(url, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text)'));
    configText = `source:
  url: ${sourceUrl}
  slots: [{ name: ${SLOT}, publication: syncline_metrics_start_pub, tables: [items] }]
  snapshot: never
  heartbeat_interval_ms: 60000
stream: { path: ${path.join(dir, 'stream')}, partitions: 2 }
consumer: { group_id: metrics_start }
sink: { url: ${targetUrl} }
monitoring: { enabled: false }
`;
  }, 120_000);

  afterAll(async () => {
    await withClient(server.url('postgres'), (c) => c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [SLOT]));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('exports sync_events_captured_total{table} at 0 and sync_slot_retained_wal_bytes within seconds', async () => {
    const metrics = new Metrics();
    const ctl = new AbortController();
    const done = runPipeline(parseConfig(configText, {}), 'capture', silentLogger(), ctl.signal, metrics);
    done.catch(() => undefined);
    let text = '';
    try {
      await waitFor('slot active', () => withClient(server.url('postgres'), (c) => slotStreaming(c, SLOT)));
      await waitFor('start metrics', async () => /^sync_slot_retained_wal_bytes \d/m.test((text = await metrics.registry.metrics())), 5_000, 100);
    } finally {
      ctl.abort();
      await done;
    }
    expect(text).toMatch(/^sync_events_captured_total\{table="public\.items"\} 0$/m);
    expect(text).toMatch(/^sync_slot_retained_wal_bytes \d+$/m);
  }, 60_000);
});
