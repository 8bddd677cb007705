import { describe, expect, it } from 'vitest';
import { definitionAt, type HistoryColumn } from '../../src/core/ddl-history.js';

const h = (name: string, attnum: number, type_oid = 23): HistoryColumn => ({ name, attnum, type_oid, typmod: -1, not_null: false, key: false });
const rel = (...cols: [string, number][]) => cols.map(([name, typeOid]) => ({ name, typeOid, typeMod: -1 }));

describe('definitionAt', () => {
  // Newest first: after ADD b, after DROP a, the seed.
  const entries = [[h('id', 1), h('note', 2, 25), h('b', 4)], [h('id', 1), h('note', 2, 25)], [h('id', 1), h('note', 2, 25), h('a', 3)]];

  it('takes the newest entry that has the definition: a dropped column keeps its own attnum', () => {
    expect(definitionAt(entries, rel(['id', 23], ['note', 25], ['a', 23]))?.map((c) => c.attnum)).toEqual([1, 2, 3]);
    expect(definitionAt(entries, rel(['id', 23], ['note', 25], ['b', 23]))?.map((c) => c.attnum)).toEqual([1, 2, 4]);
  });

  it('matches by name and type oid in order; columns pgoutput leaves out may be missing', () => {
    expect(definitionAt(entries, rel(['id', 23], ['b', 23]))?.map((c) => c.attnum)).toEqual([1, 4]);
    expect(definitionAt(entries, rel(['id', 23], ['a', 20]))).toBeUndefined();
    expect(definitionAt(entries, rel(['note', 25], ['id', 23]))).toBeUndefined();
    expect(definitionAt([[{ ...h('id', 1), type_oid: '23' as unknown as number }]], rel(['id', 23]))?.[0]?.attnum).toBe(1);
  });
});
