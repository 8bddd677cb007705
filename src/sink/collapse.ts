import { isKeyless, rowKeyOf, tableLabeler, type ChangeEvent } from '../core/change.js';

export interface TableBatch {
  schema: string;
  table: string;
  /** Newest change per key (INSERT/UPDATE/READ/DELETE), in first-seen order. */
  rows: ChangeEvent[];
  /**
   * A keyless table's row changes, all of them in stream order: a multiset has no key to
   * fold by, and each change adds or removes one row.
   */
  multiset: ChangeEvent[];
  /** Newest TRUNCATE of the table in the batch. */
  truncate: ChangeEvent | undefined;
  /** A TRUNCATE in the batch is a keyless table's snapshot reset (ChangeEvent.snapshot_reset). */
  snapshotReset: boolean;
  /**
   * With `keepRuns`: every change of each key that folded into another (more than one), by
   * rowKeyOf, in version order; delta counters sum the differences of the whole run.
   */
  runs?: Map<string, ChangeEvent[]>;
  /**
   * Of `rows`, the keyless INSERTs adopted by the target's key (see `./adopt-target-key.ts`):
   * each may skip a stored row of its key only when that row is at or past its version.
   */
  adopted?: Set<ChangeEvent>;
}

/**
 * Groups a batch by table and keeps only the newest change per key: applying it has the
 * same effect as applying them all in order. An UPDATE that did not carry an unchanged
 * TOASTed column takes that value from the change it supersedes when that one had it.
 * Returns the groups and how many changes were folded away.
 */
export function collapseBatch(changes: readonly ChangeEvent[], keepRuns = false): { tables: TableBatch[]; superseded: number } {
  const tables = new Map<string, { batch: TableBatch; byKey: Map<string, ChangeEvent> }>();
  let superseded = 0;
  const labelOf = tableLabeler();
  for (const c of changes) {
    const tableKey = labelOf(c);
    let t = tables.get(tableKey);
    if (!t) {
      t = { batch: { schema: c.schema, table: c.table, rows: [], multiset: [], truncate: undefined, snapshotReset: false }, byKey: new Map() };
      tables.set(tableKey, t);
    }
    if (c.op === 'TRUNCATE') {
      if (c.snapshot_reset) t.batch.snapshotReset = true;
      if (t.batch.truncate) superseded++;
      if (!t.batch.truncate || BigInt(c._version) > BigInt(t.batch.truncate._version)) t.batch.truncate = c;
      continue;
    }
    if (isKeyless(c)) {
      t.batch.multiset.push(c);
      continue;
    }
    const rowKey = rowKeyOf(c);
    const prev = t.byKey.get(rowKey);
    if (!prev) {
      t.byKey.set(rowKey, c);
      continue;
    }
    superseded++;
    if (keepRuns) {
      const runs = (t.batch.runs ??= new Map());
      const run = runs.get(rowKey) ?? [prev];
      // The same change twice (republished by a capture restart) counts once.
      if (!run.some((x: ChangeEvent) => x._version === c._version)) run.push(c);
      run.sort((x: ChangeEvent, y: ChangeEvent) => (BigInt(x._version) < BigInt(y._version) ? -1 : 1));
      runs.set(rowKey, run);
    }
    const [older, newer] = BigInt(c._version) >= BigInt(prev._version) ? [prev, c] : [c, prev];
    t.byKey.set(rowKey, mergeUnchanged(older, newer));
  }
  const out: TableBatch[] = [];
  for (const { batch, byKey } of tables.values()) {
    batch.rows = [...byKey.values()];
    out.push(batch);
  }
  return { tables: out, superseded };
}

function mergeUnchanged(older: ChangeEvent, newer: ChangeEvent): ChangeEvent {
  if (!newer.unchanged || !newer.payload || !older.payload) return newer;
  const payload = { ...newer.payload };
  const stillUnchanged: string[] = [];
  for (const col of newer.unchanged) {
    if (col in older.payload) payload[col] = older.payload[col] ?? null;
    else stillUnchanged.push(col);
  }
  const merged: ChangeEvent = { ...newer, payload };
  if (stillUnchanged.length > 0) merged.unchanged = stillUnchanged;
  else delete merged.unchanged;
  return merged;
}
