import type { ChangeEvent } from '../core/change.js';
import { SynclineError } from '../core/errors.js';

/**
 * The decisions every SQL sink makes for a keyless table (a multiset of whole rows), kept in
 * one place; `sql/sql-sink.ts` applies them, each dialect does the reads and writes
 * (`SqlDialect.readMultisetVersions`, `insertRows`, `removeOne`, `writeMultisetVersion`).
 *
 * All changes of such a table arrive in one stream partition in version order (but for the
 * changes a snapshot's reset and rows overtake, which are older than the reset: capture emits
 * those at the snapshot's cut, ahead of what it still has to read), so one high-water
 * version per table (stored in the batch's transaction) makes replays and overtaken changes
 * no-ops: a change applies only when it is newer than the high water and the table's
 * truncation watermark. INSERT and READ add a row (duplicates allowed) carrying the change's version;
 * DELETE removes one row equal to `before`; UPDATE does both. TRUNCATEs (and a snapshot's
 * reset) go through the sink's truncation watermark before.
 *
 * A row to remove that is not there means drift, except before the table's first snapshot
 * reset: changes streamed between the slot's creation and the table's initial snapshot may
 * touch rows only that snapshot brings, and the reset replaces them anyway.
 */
export interface MultisetPlan {
  /** The changes newer than the floor, in order: each to apply. */
  changes: ChangeEvent[];
  /** The newest of them: the table's next high water (undefined: nothing new). */
  newest: ChangeEvent | undefined;
}

/**
 * Keeps the changes newer than `floor` (the higher of the high water and the truncation
 * watermark, as versions; -1n for none) and counts the others stale. A change that left
 * values unchanged cannot be matched or added whole: UNCHANGED_VALUE_MISSING.
 */
export function planMultiset(label: string, changes: readonly ChangeEvent[], floor: bigint, counts: { stale: number }): MultisetPlan {
  const out: ChangeEvent[] = [];
  let newest: ChangeEvent | undefined;
  for (const change of changes) {
    const v = BigInt(change._version);
    if (v <= floor) {
      counts.stale++;
      continue;
    }
    floor = v;
    newest = change;
    if (change.unchanged) {
      throw new SynclineError(
        'UNCHANGED_VALUE_MISSING',
        `${change.op} of keyless table ${label} at ${change.commit_lsn}/${change.seq} lacks the value(s) of ${change.unchanged.join(', ')}, which a whole-row image must carry`,
        { retriable: false },
      );
    }
    out.push(change);
  }
  return { changes: out, newest };
}

/** True for a change that removes a row (DELETE, UPDATE) before it may add one. */
export function removesRow(change: ChangeEvent): boolean {
  return change.op === 'DELETE' || change.op === 'UPDATE';
}

/**
 * The row `change` removes is not at the target. After the table's snapshot reset that is
 * drift (MULTISET_ROW_MISSING, dead-lettered); before it, a DELETE is stale and an UPDATE
 * still adds its new row (returns true).
 */
export function onMissingRow(label: string, change: ChangeEvent, reset: boolean, counts: { stale: number }): boolean {
  if (reset) {
    throw new SynclineError(
      'MULTISET_ROW_MISSING',
      `${change.op} at ${change.commit_lsn}/${change.seq} removes a row of keyless table ${label} that the target does not have: the target drifted (row ${JSON.stringify(change.before ?? {})}); fix: syncline snapshot ${label}, then replay or purge this dead letter`,
      { retriable: false },
    );
  }
  if (change.op === 'DELETE') {
    counts.stale++;
    return false;
  }
  return true;
}

/** The higher of two versions (undefined: none). */
export function maxVersion(a: bigint, b: bigint | undefined): bigint {
  return b !== undefined && b > a ? b : a;
}
