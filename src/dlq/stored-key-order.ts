import { rowKeyOf, type ChangeEvent, type Row } from '../core/change.js';

/**
 * A dead-lettered change read back from a jsonb column, with its key's columns again in the
 * order of the entry's row key (the table's column order, as capture built it). jsonb keeps
 * an object's keys shortest first, so a key (order_id, line) came back as { line, order_id };
 * `rowKeyOf` then named another row (["2","1"] for ["1","2"]), and a replay met that row's
 * tombstone and dropped the change as stale. The row key holds the values in order; the
 * key's columns are matched to them by value (columns of equal values are interchangeable
 * for the row key). A change whose key does not fit the row key is returned as it is.
 */
export function withStoredKeyOrder(change: ChangeEvent, rowKey: string): ChangeEvent {
  if (rowKeyOf(change) === rowKey) return change;
  let values: unknown;
  try {
    values = JSON.parse(rowKey);
  } catch {
    return change;
  }
  const entries = Object.entries(change.key);
  if (!Array.isArray(values) || values.length !== entries.length) return change;
  const used = new Set<number>();
  const key: Row = {};
  for (const value of values) {
    const i = entries.findIndex(([, v], j) => !used.has(j) && v === value);
    const entry = entries[i];
    if (!entry) return change;
    used.add(i);
    key[entry[0]] = entry[1];
  }
  return { ...change, key };
}
