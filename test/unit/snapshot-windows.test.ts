import { describe, expect, it } from 'vitest';
import type { ChangeEvent, Row } from '../../src/core/change.js';
import { parseReadSnapshot, visibleIn } from '../../src/core/snapshot.js';
import { SnapshotWindows } from '../../src/pipeline/snapshot-windows.js';

let seq = 0;
function change(op: ChangeEvent['op'], xid: number, id: string | undefined, payload: Row | null, unchanged?: string[]): ChangeEvent {
  const e: ChangeEvent = {
    source: 's', schema: 'public', table: 't', op, lsn: '0/1', commit_lsn: '0/1', xid, seq: ++seq, commit_ts: '', key: id === undefined ? {} : { id }, payload, _version: '1', _schema_version: 1,
  };
  if (unchanged) e.unchanged = unchanged;
  return e;
}

/** A chunk of rows (id, v, big) read in snapshot `snap`. */
const chunk = (snap: string, rows: [string, string, string][]) => ({ columns: ['id', 'v', 'big'], keyColumns: ['id'], rows, snapshot: parseReadSnapshot(snap) });

describe('snapshot windows', () => {
  it('reads pg_current_snapshot() text and decides visibility on 32-bit xids, across wraparound', () => {
    const s = parseReadSnapshot('100:105:101,103');
    expect([99, 100, 101, 102, 103, 104, 105].map((x) => visibleIn(s, x))).toEqual([true, true, false, true, false, true, false]);
    // An epoch-2 snapshot near the 32-bit wrap: xid8 8589934590 is xid 4294967294 of epoch 1.
    const w = parseReadSnapshot(`${2n ** 33n - 2n}:${2n ** 33n + 3n}:${2n ** 33n + 1n}`);
    expect(visibleIn(w, 4294967290)).toBe(true);
    expect(visibleIn(w, 1)).toBe(false);
    expect(visibleIn(w, 2)).toBe(true);
    expect(visibleIn(w, 3)).toBe(false);
  });

  it('emits every row of the chunk as its snapshot saw it, with the changes it did not see applied on top', () => {
    const w = new SnapshotWindows();
    w.expect('c');
    w.openWindow('c', 'public.t', 1000n);
    w.observe(change('UPDATE', 50, '1', { id: '1', v: 'seen' })); // committed before the read: already in the rows
    w.observe(change('UPDATE', 60, '2', { id: '2', v: 'after' }, ['big'])); // after the read, big unchanged (F5)
    w.observe(change('DELETE', 61, '3', null));
    w.observe(change('INSERT', 62, '9', { id: '9', v: 'new', big: 'B9' })); // not a row of the chunk
    const rows = w.closeWindow('c', chunk('55:58:', [['1', 'seen', 'B1'], ['2', 'before', 'B2'], ['3', 'x', 'B3']]));
    expect(rows).toEqual([
      { id: '1', v: 'seen', big: 'B1' },
      { id: '2', v: 'after', big: 'B2' },
    ]);
  });

  it('a TRUNCATE its read did not see empties the chunk; rows inserted after it come from the stream (F4)', () => {
    const w = new SnapshotWindows();
    w.expect('c');
    w.openWindow('c', 'public.t', 1000n);
    w.observe(change('TRUNCATE', 70, undefined, null));
    w.observe(change('INSERT', 71, '2', { id: '2', v: 'again', big: 'B' }));
    expect(w.closeWindow('c', chunk('60:65:', [['1', 'a', 'B1'], ['2', 'b', 'B2']]))).toEqual([{ id: '2', v: 'again', big: 'B' }]);
    // A TRUNCATE the read saw is already in its rows.
    w.expect('d');
    w.openWindow('d', 'public.t', 1000n);
    w.observe(change('TRUNCATE', 59, undefined, null));
    expect(w.closeWindow('d', chunk('60:65:', [['5', 'a', 'B5']]))).toEqual([{ id: '5', v: 'a', big: 'B5' }]);
  });

  it('asks for the chunk again when its read missed a transaction that committed to the table before the low watermark (F6)', () => {
    const w = new SnapshotWindows();
    w.committed(42, 900n, ['public.t']);
    w.committed(43, 950n, ['public.other']);
    w.expect('c');
    w.openWindow('c', 'public.t', 1000n);
    // 42 committed at 900 < 1000 but is still in the read's xip: its change is missing.
    expect(w.closeWindow('c', chunk('40:50:42', [['1', 'old', 'B']]))).toBe('retry');
    // A transaction of another table in xip does not matter; nor one that committed inside the window.
    w.expect('d');
    w.openWindow('d', 'public.t', 1000n);
    w.observe(change('UPDATE', 44, '1', { id: '1', v: 'new', big: 'B' }));
    w.committed(44, 1010n, ['public.t']);
    expect(w.closeWindow('d', chunk('40:50:43,44', [['1', 'old', 'B']]))).toEqual([{ id: '1', v: 'new', big: 'B' }]);
  });

  it('a window opened by an earlier process has no rows: nothing to emit', () => {
    const w = new SnapshotWindows();
    expect(w.closeWindow('x', chunk('1:2:', [['1', 'a', 'b']]))).toBeUndefined();
    w.openWindow('y', 'public.t', 1n);
    expect(w.closeWindow('y', undefined)).toBeUndefined();
  });

  it('an abandoned chunk leaves no window open, whether its low watermark was seen before or after', () => {
    const w = new SnapshotWindows();
    w.expect('seen');
    w.openWindow('seen', 'public.t', 1n);
    expect(w.open).toBe(true);
    w.abandon('seen');
    expect(w.open).toBe(false);
    w.expect('later');
    w.abandon('later'); // capture a backlog behind: the low watermark comes afterwards
    w.openWindow('later', 'public.t', 2n);
    expect(w.open).toBe(false);
  });

  it('a low watermark this capture was not told of (an earlier process\'s, another slot\'s) opens no window', () => {
    const w = new SnapshotWindows();
    w.openWindow('other', 'public.t', 1n);
    expect(w.open).toBe(false);
    w.observe(change('INSERT', 5, '1', { id: '1' }));
    expect(w.closeWindow('other', chunk('1:2:', [['1', 'a', 'b']]))).toBeUndefined();
  });
});
