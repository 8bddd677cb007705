import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { Events } from '../../src/core/events.js';
import { Metrics } from '../../src/metrics/metrics.js';

const change = { source: 's', schema: 'public', table: 'orders', op: 'INSERT', lsn: '0/10', commit_lsn: '0/20', xid: 1, seq: 1, commit_ts: '2026-01-01T00:00:00.000000Z', key: { id: '1' }, payload: { id: '1' }, _version: '1', _schema_version: 1 } as ChangeEvent;

async function value(metrics: Metrics, name: string): Promise<{ labels: object; value: number }[]> {
  return ((await metrics.registry.getSingleMetric(name)?.get())?.values ?? []).map((v) => ({ labels: v.labels, value: v.value }));
}

describe('pipeline events', () => {
  it('calls listeners in order, and nothing once they are removed', () => {
    const events = new Events();
    const seen: string[] = [];
    expect(events.listens('capture:confirmed')).toBe(false);
    const off = events.on('capture:confirmed', ({ lsn }) => seen.push(`a${lsn}`));
    events.on('capture:confirmed', ({ lsn }) => seen.push(`b${lsn}`));
    events.emit('capture:confirmed', { lsn: 5n });
    off();
    events.emit('capture:confirmed', { lsn: 6n });
    expect(seen).toEqual(['a5', 'b5', 'b6']);
  });

  it('feeds the metrics, capture and apply labelling tables the same way (schema.table)', async () => {
    const metrics = new Metrics();
    const events = new Events();
    const unsubscribe = metrics.subscribe(events);
    events.emit('capture:change', change);
    events.emit('apply:batch:started', { records: 1, changes: [change] });
    events.emit('apply:batch:applied', { changes: [change], outcome: { applied: 1, stale: 0, superseded: 0, byTable: new Map([['public.orders', { applied: 1, stale: 0 }]]) }, records: 1, duplicates: 0, seconds: 0.01, at: Date.now() });
    events.emit('apply:duplicate', change);
    events.emit('apply:table:held', { table: 'public.orders' });
    expect(await value(metrics, 'sync_events_captured_total')).toEqual([{ labels: { table: 'public.orders' }, value: 1 }]);
    expect(await value(metrics, 'sync_events_applied_total')).toEqual([{ labels: { table: 'public.orders' }, value: 1 }]);
    expect(await value(metrics, 'sync_events_duplicate_total')).toEqual([{ labels: { table: 'public.orders' }, value: 1 }]);
    expect(await value(metrics, 'sync_table_blocked')).toEqual([{ labels: { table: 'public.orders' }, value: 1 }]);
    expect(await value(metrics, 'sync_events_consumed_total')).toEqual([{ labels: {}, value: 1 }]);
    expect(await value(metrics, 'sync_apply_lsn')).toEqual([{ labels: {}, value: 0x20 }]);
    // Written tables show their stale and duplicate series at 0 before the first one.
    const other = { ...change, table: 'users' } as ChangeEvent;
    events.emit('apply:batch:applied', { changes: [other], outcome: { applied: 1, stale: 0, superseded: 0, byTable: new Map([['public.users', { applied: 1, stale: 0 }]]) }, records: 1, duplicates: 0, seconds: 0.01, at: Date.now() });
    const text = await metrics.registry.metrics();
    expect(text).toContain('sync_events_stale_total{table="public.users"} 0');
    expect(text).toContain('sync_events_duplicate_total{table="public.users"} 0');
    unsubscribe();
    events.emit('capture:change', change);
    expect(await value(metrics, 'sync_events_captured_total')).toEqual([{ labels: { table: 'public.orders' }, value: 1 }]);
  });

  it('configured tables: apply counters start at 0, sync_lag_seconds reads 0 once caught up, with nothing applied since the start', async () => {
    const metrics = new Metrics();
    const events = new Events();
    metrics.subscribe(events, ['public.orders', 'public.Mixed Case']);
    for (const name of ['sync_events_applied_total', 'sync_events_stale_total', 'sync_events_duplicate_total']) {
      expect(await value(metrics, name), name).toEqual([
        { labels: { table: 'public.orders' }, value: 0 },
        { labels: { table: 'public.Mixed Case' }, value: 0 },
      ]);
    }
    expect(await value(metrics, 'sync_lag_seconds')).toEqual([]);
    events.emit('apply:caught-up', {});
    expect(await value(metrics, 'sync_lag_seconds')).toEqual([
      { labels: { table: 'public.orders' }, value: 0 },
      { labels: { table: 'public.Mixed Case' }, value: 0 },
    ]);
  });
});
