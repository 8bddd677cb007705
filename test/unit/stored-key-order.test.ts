import { describe, expect, it } from 'vitest';
import { rowKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { withStoredKeyOrder } from '../../src/dlq/stored-key-order.js';

const change = (key: Record<string, string | null>): ChangeEvent => ({
  source: 's', schema: 'public', table: 't', op: 'UPDATE', lsn: '0/1', commit_lsn: '0/2', xid: 1, seq: 1,
  commit_ts: '2026-01-01T00:00:00Z', key, payload: { ...key }, _version: '8589934593', _schema_version: 1,
});

describe('withStoredKeyOrder: a key read back from jsonb, in its row key order', () => {
  it('puts the columns back in the row key order (jsonb stores shorter names first)', () => {
    const back = withStoredKeyOrder(change({ line: '2', order_id: '1' }), '["1","2"]');
    expect(Object.keys(back.key)).toEqual(['order_id', 'line']);
    expect(rowKeyOf(back)).toBe('["1","2"]');
  });

  it('matches equal values, nulls and escaped text', () => {
    expect(rowKeyOf(withStoredKeyOrder(change({ b: '7', a: '7', c: null }), '[null,"7","7"]'))).toBe('[null,"7","7"]');
    expect(rowKeyOf(withStoredKeyOrder(change({ x: 'q"1', long_name: '\\' }), '["\\\\","q\\"1"]'))).toBe('["\\\\","q\\"1"]');
  });

  it('leaves a key that fits already, or does not fit the row key, as it is', () => {
    const fits = change({ id: '1' });
    expect(withStoredKeyOrder(fits, '["1"]')).toBe(fits);
    const other = change({ a: '1', b: '2' });
    expect(withStoredKeyOrder(other, '["1","3"]')).toBe(other);
    expect(withStoredKeyOrder(other, 'not json')).toBe(other);
    expect(withStoredKeyOrder(other, '["1"]')).toBe(other);
  });
});
