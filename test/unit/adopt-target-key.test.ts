/**
 * src/sink/adopt-target-key.ts, the pure part: which keyless INSERTs of a batch are adopted by
 * the target's key, and which the sink must refuse to write over an older row (batch.adopted).
 * Two adoptable INSERTs of one key are the source's two rows of a key it does not enforce:
 * neither is adopted (folded, the newer silently hid the older; red17c), both stay in the
 * multiset, whose plain INSERT fails on the target's key.
 */
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/core/change.js';
import { adoptTargetKey } from '../../src/sink/adopt-target-key.js';
import { collapseBatch, type TableBatch } from '../../src/sink/collapse.js';
import { ChangeFactory, KeylessChangeFactory } from '../../src/testing/sink-contract.js';

const f = new KeylessChangeFactory();
const row = (id: string, v: string) => ({ id, v, n: null });
const batchOf = (changes: ChangeEvent[]): TableBatch => collapseBatch(changes).tables[0] as TableBatch;
const values = (changes: readonly ChangeEvent[]) => changes.map((c) => `${c.op} ${String(c.payload?.id ?? c.before?.id)} ${String(c.payload?.v ?? c.before?.v)}`);

describe('adoptTargetKey', () => {
  it('adopts each INSERT of its own key, and marks it adopted', () => {
    const b = batchOf([f.insert('t', 10, row('1', 'a')), f.insert('t', 20, row('2', 'z'))]);
    expect(adoptTargetKey(b, ['id'], -1n)).toBe(0);
    expect(b.multiset).toEqual([]);
    expect(values(b.rows)).toEqual(['INSERT 1 a', 'INSERT 2 z']);
    expect(b.rows.map((r) => r.key)).toEqual([{ id: '1' }, { id: '2' }]);
    expect([...(b.adopted ?? [])]).toEqual(b.rows);
  });

  it('leaves two INSERTs of one key in the multiset (not folded), adopting the others', () => {
    const b = batchOf([f.insert('t', 10, row('1', 'a')), f.insert('t', 20, row('1', 'b')), f.insert('t', 30, row('2', 'z'))]);
    expect(adoptTargetKey(b, ['id'], -1n)).toBe(0);
    expect(values(b.multiset)).toEqual(['INSERT 1 a', 'INSERT 1 b']);
    expect(values(b.rows)).toEqual(['INSERT 2 z']);
    expect([...(b.adopted ?? [])]).toEqual(b.rows);
  });

  it('an INSERT again after its row was removed in the batch is one row of the key', () => {
    const b = batchOf([f.insert('t', 10, row('1', 'a')), f.delete('t', 20, row('1', 'a')), f.insert('t', 30, row('1', 'b'))]);
    adoptTargetKey(b, ['id'], -1n);
    // The INSERT before the DELETE stays in the multiset (c748944); the one after is adopted.
    expect(values(b.multiset)).toEqual(['INSERT 1 a', 'DELETE 1 a']);
    expect(values(b.rows)).toEqual(['INSERT 1 b']);
    expect(b.adopted?.size).toBe(1);
  });

  it('an adopted INSERT folded into a newer keyed change of its key is not marked: the change is keyed', () => {
    const update = new ChangeFactory().update('t', '1', 30, 'u');
    const b = batchOf([update, f.insert('t', 10, row('1', 'a'))]);
    expect(adoptTargetKey(b, ['id'], -1n)).toBe(1);
    expect(b.rows).toEqual([update]);
    expect(b.adopted?.size ?? 0).toBe(0);
  });

  it('does not adopt (nor count as a second row) an INSERT the high water covers', () => {
    const b = batchOf([f.insert('t', 10, row('1', 'a')), f.insert('t', 20, row('1', 'b'))]);
    adoptTargetKey(b, ['id'], BigInt(f.insert('t', 10, row('1', 'a'))._version));
    expect(values(b.multiset)).toEqual(['INSERT 1 a']);
    expect(values(b.rows)).toEqual(['INSERT 1 b']);
  });
});
