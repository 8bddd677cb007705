import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { Events } from '../../src/core/events.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { WalClock } from '../../src/source/wal-clock.js';

const change = { source: 's', schema: 'public', table: 'orders', op: 'INSERT', lsn: '0/10', commit_lsn: '0/20', xid: 1, seq: 1, commit_ts: '2026-01-01T00:00:00.000000Z', key: { id: '1' }, payload: { id: '1' }, _version: '1', _schema_version: 1 } as ChangeEvent;

describe('WalClock: the age of the WAL capture has not confirmed', () => {
  it('is the time since the first sample beyond the confirmed position, 0 when none is', () => {
    const c = new WalClock();
    c.sample(1000, 100n);
    c.sample(2000, 100n); // no new WAL: the older sample stands
    c.sample(3000, 200n);
    c.sample(4000, 300n);
    expect(c.ageSeconds(50n, 10_000)).toBe(9);
    // The WAL right after 100 was written after 2000 (the source was at 100 then) and by 3000.
    expect(c.ageSeconds(100n, 10_000)).toBe(7);
    expect(c.ageSeconds(250n, 10_000)).toBe(6);
    expect(c.ageSeconds(300n, 10_000)).toBe(0);
    // The confirmed position only moves forward: samples behind it are gone.
    expect(c.ageSeconds(50n, 10_000)).toBe(0);
  });

  it('keeps a bounded number of samples over a long backlog, and still a lower bound', () => {
    const c = new WalClock();
    for (let i = 0; i < 250_000; i++) c.sample(i * 1000, BigInt(i + 1) * 100n);
    const age = c.ageSeconds(50n, 250_000_000);
    // The oldest sample (the first beyond 50) is kept.
    expect(age).toBe(250_000);
    const mid = c.ageSeconds(12_000_050n, 250_000_000);
    expect(mid).toBeLessThanOrEqual(250_000 - 120_000);
    expect(mid).toBeGreaterThan(250_000 - 120_000 - 10);
  });
});

describe('sync_lag_seconds with capture in the same process', () => {
  it('is at least sync_capture_lag_seconds, also for a table apply is caught up on', async () => {
    let now = 100_000;
    const metrics = new Metrics(() => now);
    const events = new Events();
    metrics.subscribe(events, ['public.items']);
    events.emit('apply:caught-up', {});
    events.emit('capture:change', change);
    const lag = async (): Promise<string> => (await metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('sync_lag_seconds{') || l.startsWith('sync_capture_lag_seconds ')).join('\n');
    expect(await lag()).toBe('sync_lag_seconds{table="public.items"} 0');
    metrics.setCaptureLag(42);
    expect(await lag()).toBe('sync_lag_seconds{table="public.items"} 42\nsync_lag_seconds{table="public.orders"} 42\nsync_capture_lag_seconds 42');
    // A batch being applied whose oldest change is older still.
    events.emit('apply:batch:started', { records: 1, changes: [{ ...change, commit_ts: new Date(now - 60_000).toISOString() }] });
    now += 1000;
    expect(await lag()).toContain('sync_lag_seconds{table="public.orders"} 61');
    metrics.setCaptureLag(0);
    events.emit('apply:caught-up', {});
    expect(await lag()).toBe('sync_lag_seconds{table="public.items"} 0\nsync_lag_seconds{table="public.orders"} 0\nsync_capture_lag_seconds 0');
  });
});

describe('WalClock: commit times date WAL no sample covers', () => {
  it('dates a backlog written while no capture ran by its transactions, to the second', () => {
    const c = new WalClock();
    // Capture starts at 100 s and receives a backlog's transactions at once: committed at
    // 60 s (position 100), 60.5 s (200, the same second), 80 s (500).
    c.commit(60_000, 100n);
    c.commit(60_500, 200n);
    c.commit(80_000, 500n);
    c.sample(100_000, 1000n); // its first sample puts all WAL up to 1000 at 100 s
    expect(c.ageSeconds(10n, 101_000)).toBe(40.5);
    expect(c.ageSeconds(100n, 101_000)).toBe(40.5); // 200 is unconfirmed yet
    expect(c.ageSeconds(200n, 101_000)).toBe(21);
    expect(c.ageSeconds(500n, 101_000)).toBe(1);
    expect(c.ageSeconds(1000n, 101_000)).toBe(0);
  });

  it('adds nothing the samples do not say for live transactions', () => {
    const c = new WalClock();
    c.sample(100_000, 1000n);
    c.commit(100_400, 1100n);
    c.commit(100_600, 1200n);
    c.sample(101_000, 1300n);
    expect(c.ageSeconds(1000n, 101_500)).toBeCloseTo(0.9); // 1200 was written by 100.6 s
    expect(c.ageSeconds(1300n, 101_500)).toBe(0);
    c.commit(90_000, 900n); // behind what was received: ignored
    expect(c.ageSeconds(1300n, 101_500)).toBe(0);
  });
});
