import type { ChangeEvent, Row } from '../../core/change.js';
import { addDifference, compareClocks } from './resolve.js';

/**
 * Delta counters (`sink.delta_columns`) across a delete. A delete ends a row's incarnation;
 * a change of the row made elsewhere before that writer saw the delete was made to the old
 * incarnation, and must not move the counters of a row inserted under the key since. Which
 * incarnation a change belongs to is told by clocks (as last_write_wins tells which write
 * came last): the change's clock against the delete's.
 *
 * - A change no later than the key's newest delete (or truncation) is *dead*: its difference
 *   does not count on the row stored now. It is buried in the delete's tombstone instead
 *   (`counters`), because the deleted incarnation may come back.
 * - A later change made to a copy of the deleted row (its old values' `lww_column` is older
 *   than the delete: the writer had not seen the delete) *revives* that incarnation: where
 *   no row is stored it is written with the tombstone's counters plus its difference, and
 *   over a row inserted since, it adds the tombstone's counters too, as the side that never
 *   applied the delete kept that row and merges the insert into it (an insert counts its
 *   whole value). The tombstone's counters are then spent (null).
 *
 * Both sides of a bidirectional pair thereby count each increment once, whichever side
 * deleted and in whatever order the changes arrive. Pure: no I/O.
 */

/** The key's newest delete as the counter rules see it. */
export interface KeyDeletion {
  /** Its clock (the delete's commit time). */
  clock: string;
  /** The deleted row's counters (with the dead differences buried since); null when unknown or spent. */
  counters: Row | null;
}

export interface CountedRun {
  /** The changes whose differences count on the stored row, a reviving one's old values lowered by the tombstone's counters. */
  run: ChangeEvent[];
  /** The tombstone's new counters (differences buried, or null once a change revived them); absent when unchanged. */
  counters?: Row | null;
}

/**
 * The changes of `run` (a row's changes, oldest first, over a stored row) whose counter
 * differences count, given the key's newest delete; `clockOf` is the clock last_write_wins
 * compares (`lww_column`'s value, else the commit time).
 */
export function countAcrossDelete(
  run: readonly ChangeEvent[],
  deletion: KeyDeletion,
  clockOf: (change: ChangeEvent) => string | null,
  lwwColumn: string | undefined,
  deltaColumns: readonly string[],
): CountedRun {
  let counters = deletion.counters;
  let changed = false;
  const out: ChangeEvent[] = [];
  for (const change of run) {
    const clock = clockOf(change);
    if (clock !== null && compareClocks(clock, deletion.clock) <= 0) {
      if (counters && change.op === 'UPDATE') {
        const buried = addDifferences(counters, [change], deltaColumns);
        if (buried) {
          counters = buried;
          changed = true;
        }
      }
      continue;
    }
    const madeBefore = lwwColumn !== undefined ? change.before?.[lwwColumn] : undefined;
    if (counters && change.op === 'UPDATE' && madeBefore != null && compareClocks(madeBefore, deletion.clock) < 0) {
      const before = lowered(change.before ?? {}, counters, deltaColumns);
      if (before) {
        out.push({ ...change, before });
        counters = null;
        changed = true;
        continue;
      }
    }
    out.push(change);
  }
  return changed ? { run: out, counters } : { run: out };
}

/**
 * `counters` moved by the differences (new - old) of the UPDATEs of `run`; undefined when one
 * lacks a value (no old values: not REPLICA IDENTITY FULL) or a value is not a number.
 */
export function addDifferences(counters: Row, run: readonly ChangeEvent[], deltaColumns: readonly string[]): Row | undefined {
  const out: Row = { ...counters };
  for (const change of run) {
    if (change.op !== 'UPDATE') continue;
    for (const col of deltaColumns) {
      const [value, next, prev] = [out[col], change.payload?.[col], change.before?.[col]];
      if (value == null || next == null || prev == null) return undefined;
      const sum = addDifference(value, next, prev);
      if (sum === undefined) return undefined;
      out[col] = sum;
    }
  }
  return out;
}

/** `before` with each counter lowered by the tombstone's, so that its difference adds them; undefined if not numbers. */
function lowered(before: Row, counters: Row, deltaColumns: readonly string[]): Row | undefined {
  const out: Row = { ...before };
  for (const col of deltaColumns) {
    const [value, buried] = [before[col], counters[col]];
    if (value == null || buried == null) return undefined;
    const v = addDifference(value, '0', buried);
    if (v === undefined) return undefined;
    out[col] = v;
  }
  return out;
}
