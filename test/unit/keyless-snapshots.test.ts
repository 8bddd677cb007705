import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { formatLsn } from '../../src/core/lsn.js';
import type { ChangeBuilder, VersionContext } from '../../src/pipeline/change-builder.js';
import { KeylessSnapshots } from '../../src/pipeline/keyless-snapshots.js';

/** Events as the builder makes them, reduced to what the holds look at. */
const builder = {
  snapshotReset: (ctx: VersionContext, schema: string, table: string) => ({ schema, table, op: 'TRUNCATE', snapshot_reset: true, commit_lsn: ctx.commitLsnText }) as unknown as ChangeEvent,
  snapshotRow: (ctx: VersionContext, schema: string, table: string) => ({ schema, table, op: 'READ', commit_lsn: ctx.commitLsnText }) as unknown as ChangeEvent,
} as unknown as ChangeBuilder;
const spec = { schema: 'public', table: 'hist', columns: ['a'] };
/** A change committed at `lsn`. */
const change = (lsn: number, table = 'hist'): ChangeEvent => ({ schema: 'public', table, op: 'UPDATE', commit_lsn: formatLsn(BigInt(lsn)) }) as unknown as ChangeEvent;

describe('keyless snapshot holds', () => {
  it('a cut emits its reset at once, versioned at the cut; changes committed after it wait for the rows, earlier ones pass', () => {
    const k = new KeylessSnapshots(builder);
    const { reset, released } = k.cut(spec, { token: 't1', lsn: 100n, xid: 7 });
    expect(reset).toMatchObject({ op: 'TRUNCATE', snapshot_reset: true, commit_lsn: '0/64' });
    expect(released).toEqual([]);
    // Committed before the cut (capture is behind): in the snapshot, stale behind the reset.
    expect(k.hold(change(90))).toBe(false);
    expect(k.hold(change(110))).toBe(true);
    expect(k.hold(change(120, 'other'))).toBe(false);
    expect(k.holding).toBe(true);
    const rows: ChangeEvent[] = [];
    k.rows('t1', [['x']], rows);
    expect(rows).toMatchObject([{ op: 'READ', commit_lsn: '0/64' }]);
    expect(k.finish('t1', true)).toEqual([change(110)]);
    expect(k.holding).toBe(false);
    expect(k.hold(change(130))).toBe(false);
  });

  it('a snapshot that failed after its cut holds every change until the next cut, whose reset goes first', () => {
    const k = new KeylessSnapshots(builder);
    k.cut(spec, { token: 't1', lsn: 100n, xid: 7 });
    k.hold(change(110));
    expect(k.finish('t1', false)).toBeUndefined();
    // Now also what committed before the first cut: the target has only part of its rows.
    expect(k.hold(change(95))).toBe(true);
    expect(k.hold(change(120))).toBe(true);
    // The job is still unfinished: nothing is let go.
    expect(k.jobsEnded(new Set(['public.hist']))).toEqual([]);
    const cut = k.cut(spec, { token: 't2', lsn: 200n, xid: 8 });
    expect(cut.reset.commit_lsn).toBe('0/C8');
    expect(cut.released).toEqual([change(110), change(95), change(120)]);
    expect(k.hold(change(150))).toBe(false);
    expect(k.hold(change(210))).toBe(true);
    expect(k.finish('t2', true)).toEqual([change(210)]);
  });

  it('an unknown token finishes with nothing', () => {
    const k = new KeylessSnapshots(builder);
    expect(k.finish('t1', false)).toBeUndefined();
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
    k.cut(spec, { token: 't1', lsn: 100n, xid: 7 });
    k.hold(change(110));
    expect(k.jobsEnded(new Set())).toEqual([]);
    expect(k.finish('t1', true)).toEqual([change(110)]);
  });
});
