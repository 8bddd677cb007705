import { rowKeyOf, type ChangeEvent, type Row } from '../core/change.js';
import { collapseBatch, type TableBatch } from './collapse.js';
import { removesRow } from './multiset.js';

/**
 * The keyless INSERTs of `batch` applied as keyed, version-gated changes when the target
 * table has a primary key (`primaryKey`, the target's key columns) and each row carries it;
 * returns how many changes folded into newer ones of the same key.
 *
 * Why: a table loaded before it had a key (`pgbench -i`: CREATE TABLE, COPY, then ADD
 * PRIMARY KEY; every bulk load that adds its key after) sends its first INSERTs keyless, on the
 * table's one keyless partition, and its changes after the key keyed, partitioned by key:
 * a row's UPDATE could be applied before the INSERT that made the row. The older INSERT then
 * failed on the target's key (23505), and every later keyless change of the table followed it
 * into the dead-letter queue (red17b: 13,309 of 100,000 pgbench_accounts rows at the target).
 * Keyed, the INSERT is gated by its version like every reordered change: stale behind the
 * update, skipped. Only INSERTs: a keyless UPDATE or DELETE (REPLICA IDENTITY FULL) and a
 * keyless snapshot (its reset cuts the target's copy) keep the multiset rules. And only the
 * INSERTs after the batch's last UPDATE or DELETE: keyed changes are applied after the
 * multiset, so an INSERT adopted before a DELETE of its row came after it, and the row the
 * source deleted stayed at the target (before the table's reset the missing row is not even
 * drift: a table created since capture runs kept it silently, red17c). And only those newer
 * than the table's multiset high water (`highWater`, -1n for none): a replayed INSERT whose
 * row a keyless DELETE removed since (no tombstone) passed the keyed gate and brought the row
 * back; in the multiset the high water makes it stale, as every replay.
 *
 * An adopted INSERT may skip only a stored row of its key at or past its own version (the
 * reordered update it was adopted for, or its own replay): the sink fails it on the key when
 * an older row is stored (`batch.adopted`, see SqlSink). And two adoptable INSERTs of one key
 * in the batch are both left in the multiset, whose plain INSERT fails on the key. Either is a
 * source holding two rows of the key the target's key cannot (a key given by hand): before
 * the adoption the second row failed on the key and was dead-lettered, with it the adopted
 * upsert wrote it over the first, silently (red17c). In a keyless table a row updated or
 * deleted is removed from the target (removeOne), so an older stored row of the key is never
 * a predecessor of the INSERT.
 */
export function adoptTargetKey(batch: TableBatch, primaryKey: readonly string[], highWater: bigint): number {
  if (primaryKey.length === 0 || batch.multiset.length === 0 || batch.snapshotReset) return 0;
  const keyed: ChangeEvent[] = [];
  const kept: ChangeEvent[] = [];
  // Keyed changes are applied after the multiset's: an INSERT before a DELETE or UPDATE of the
  // batch stays in the multiset, where that change may be the one that removes its row.
  let lastRemove = -1;
  batch.multiset.forEach((c, i) => {
    if (removesRow(c)) lastRemove = i;
  });
  const keys = batch.multiset.map((c, i) => (i > lastRemove && c.op === 'INSERT' && c.payload && BigInt(c._version) > highWater ? keyOf(c.payload, primaryKey) : undefined));
  // Two rows of one key in the batch: neither is adopted (folded, the newer hid the older).
  const counts = new Map<string, number>();
  const rowKeys = keys.map((key) => key && rowKeyOf({ key }));
  for (const k of rowKeys) if (k !== undefined) counts.set(k, (counts.get(k) ?? 0) + 1);
  for (const [i, c] of batch.multiset.entries()) {
    const key = keys[i];
    const k = rowKeys[i];
    if (key && k !== undefined && counts.get(k) === 1) keyed.push({ ...c, key });
    else kept.push(c);
  }
  if (keyed.length === 0) return 0;
  const merged = collapseBatch([...batch.rows, ...keyed]);
  batch.multiset = kept;
  batch.rows = merged.tables[0]?.rows ?? [];
  // An adopted INSERT folded into a newer keyed change of its key is that change's now.
  const adopted = new Set<ChangeEvent>(keyed);
  batch.adopted = new Set(batch.rows.filter((r) => adopted.has(r)));
  return merged.superseded;
}

/** The row's key (in the row's column order, as capture builds keys), or undefined when a key column is missing or null. */
function keyOf(payload: Row, primaryKey: readonly string[]): Row | undefined {
  const key: Row = {};
  let found = 0;
  for (const col of Object.keys(payload)) {
    if (!primaryKey.includes(col)) continue;
    const v = payload[col];
    if (v === null || v === undefined) return undefined;
    key[col] = v;
    found++;
  }
  return found === primaryKey.length ? key : undefined;
}
