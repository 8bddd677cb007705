import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import type { ChangeBuilder, VersionContext } from '../../src/pipeline/change-builder.js';
import { KeylessSnapshots } from '../../src/pipeline/keyless-snapshots.js';

/** Events as the builder makes them, reduced to what the holds look at. */
const builder = {
  snapshotReset: (_ctx: VersionContext, schema: string, table: string) => ({ schema, table, op: 'TRUNCATE', snapshot_reset: true }) as unknown as ChangeEvent,
  snapshotRow: (_ctx: VersionContext, schema: string, table: string) => ({ schema, table, op: 'READ' }) as unknown as ChangeEvent,
} as unknown as ChangeBuilder;
const ctx = {} as VersionContext;
const spec = { schema: 'public', table: 'hist', columns: ['a'] };
const change = (n: number, table = 'hist'): ChangeEvent => ({ schema: 'public', table, op: 'UPDATE', seq: n }) as unknown as ChangeEvent;

describe('keyless snapshot holds', () => {
  it('a snapshot done releases its held changes behind its rows', () => {
    const k = new KeylessSnapshots(builder);
    k.register('t1', spec);
    expect(k.cutSeen('t1', ctx, 10n)?.released).toEqual([]);
    expect(k.hold(change(1))).toBe(true);
    expect(k.hold(change(2, 'other'))).toBe(false);
    expect(k.holding).toBe(true);
    expect(k.finish('t1', true)?.released).toEqual([change(1)]);
    expect(k.holding).toBe(false);
    expect(k.hold(change(3))).toBe(false);
  });

  it('a snapshot that failed after its cut keeps holding until the next cut, whose reset goes first', () => {
    const k = new KeylessSnapshots(builder);
    k.register('t1', spec);
    k.cutSeen('t1', ctx, 10n);
    k.hold(change(1));
    expect(k.finish('t1', false)).toEqual({ seen: true, released: undefined });
    expect(k.hold(change(2))).toBe(true);
    expect(k.holding).toBe(true);
    // The job is still unfinished: nothing is let go.
    expect(k.jobsEnded(new Set(['public.hist']))).toEqual([]);
    k.register('t2', spec);
    const cut = k.cutSeen('t2', ctx, 20n);
    expect(cut?.reset.snapshot_reset).toBe(true);
    expect(cut?.released).toEqual([change(1), change(2)]);
    expect(k.hold(change(3))).toBe(true);
    expect(k.finish('t2', true)?.released).toEqual([change(3)]);
  });

  it('a snapshot failed before its cut holds nothing', () => {
    const k = new KeylessSnapshots(builder);
    k.register('t1', spec);
    expect(k.finish('t1', false)).toEqual({ seen: false, released: undefined });
    expect(k.hold(change(1))).toBe(false);
  });

  it('a snapshot running when capture stopped holds its table from the start, until its job ends without a new cut', () => {
    const k = new KeylessSnapshots(builder);
    k.interrupted('public.hist');
    expect(k.hold(change(1))).toBe(true);
    expect(k.hold(change(2, 'other'))).toBe(false);
    expect(k.jobsEnded(new Set(['public.other']))).toEqual([change(1)]);
    expect(k.holding).toBe(false);
    expect(k.hold(change(3))).toBe(false);
  });

  it('a live snapshot is not let go by the job list', () => {
    const k = new KeylessSnapshots(builder);
    k.register('t1', spec);
    k.cutSeen('t1', ctx, 10n);
    k.hold(change(1));
    expect(k.jobsEnded(new Set())).toEqual([]);
    expect(k.finish('t1', true)?.released).toEqual([change(1)]);
  });
});
