import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log/logger.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { pipelineFixture, type PipelineFixture } from '../helpers/pipeline-fixture.js';
import { uniqueName, waitFor } from '../helpers/postgres.js';

// The design lists the captured total and the slot's retained WAL among the metrics: a scrape
// of an idle capture that just started finds them, not only after the first change or the
// first heartbeat (source.heartbeat_interval_ms, here one minute).
describe('metrics of a capture that just started, before any change', () => {
  let fx: PipelineFixture;

  beforeAll(async () => {
    fx = await pipelineFixture(uniqueName('syncline_metrics_start'));
    for (const c of [fx.source, fx.target]) await c.query('CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE notes (v text)');
    await fx.source.query("ALTER TABLE notes REPLICA IDENTITY FULL; INSERT INTO notes VALUES ('a'), ('b'), ('a')");
  }, 120_000);

  afterAll(async () => {
    await fx?.close();
  });

  it('exports sync_events_captured_total{table} at 0 and sync_slot_retained_wal_bytes within seconds', async () => {
    const metrics = new Metrics();
    const running = await fx.start(await fx.yaml({ slot: 'tables: [items]', source: ['snapshot: never', 'heartbeat_interval_ms: 60000'] }), { metrics, logger: silentLogger() });
    let text = '';
    try {
      await waitFor('start metrics', async () => /^sync_slot_retained_wal_bytes \d/m.test((text = await metrics.registry.metrics())), 5_000, 100);
    } finally {
      await running.stop();
    }
    expect(text).toMatch(/^sync_events_captured_total\{table="public\.items"\} 0$/m);
    expect(text).toMatch(/^sync_slot_retained_wal_bytes \d+$/m);
  }, 60_000);

  // A keyless table's snapshot starts with a reset of the target's copy, which apply counts
  // as applied: capture counted only the rows, so captured read one less than applied
  // (0 against 1 for pgbench's empty pgbench_history).
  it('a keyless snapshot: captured_total and applied_total of the table agree', async () => {
    const metrics = new Metrics();
    const running = await fx.start(await fx.yaml({ slot: 'tables: [notes]' }), { metrics, logger: silentLogger() });
    const count = (text: string, name: string): number => Number(new RegExp(`^${name}\\{table="public\\.notes"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? -1);
    let text = '';
    try {
      await waitFor('the snapshot applied', async () => (await fx.target.query('SELECT count(*)::int AS n FROM notes')).rows[0].n === 3, 30_000);
      await waitFor('the counters', async () => count((text = await metrics.registry.metrics()), 'sync_events_applied_total') >= 3, 10_000, 100);
    } finally {
      await running.stop();
    }
    expect(count(text, 'sync_events_applied_total')).toBeGreaterThanOrEqual(3);
    expect(count(text, 'sync_events_captured_total')).toBe(count(text, 'sync_events_applied_total'));
  }, 60_000);
});
