import type pg from 'pg';
import type { ChangeEvent, Row } from '../../core/change.js';
import { SynclineError } from '../../core/errors.js';
import { parseLsn } from '../../core/lsn.js';
import { quoteIdent } from '../../core/sql.js';
import { castText, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, type TargetColumn, type TargetTable } from './table-meta.js';

/**
 * Keyless tables (a multiset of whole rows) at a PostgreSQL target.
 *
 * All changes of such a table arrive in one stream partition in version order, so one
 * high-water version per table (`<state>.multiset_versions`, written in the batch's
 * transaction) makes replays no-ops: a change applies only when it is newer. INSERT and READ
 * add a row (duplicates allowed) carrying the change's version; DELETE removes one row equal
 * to `before` (compared as text, so types without an equality operator work too); UPDATE
 * does both. TRUNCATEs go through the sink's truncation watermark as for any table.
 *
 * A row to remove that is not there means drift, except before the table's first snapshot
 * reset: changes streamed between the slot's creation and the table's initial snapshot may
 * touch rows only that snapshot brings, and the reset replaces them anyway.
 */
export interface MultisetState {
  /** `<state>.multiset_versions` */
  versions: string;
  /** `<state>.truncations` */
  truncations: string;
}

const V_LSN = quoteIdent(VERSION_LSN_COLUMN);
const V_SEQ = quoteIdent(VERSION_SEQ_COLUMN);

export function multisetStateDdl(state: MultisetState): string {
  return `CREATE TABLE IF NOT EXISTS ${state.versions} (
    table_name text PRIMARY KEY, lsn pg_lsn NOT NULL, seq integer NOT NULL, reset boolean NOT NULL DEFAULT false)`;
}

/**
 * Applies `changes` (one keyless table's, in stream order) after the batch's truncation, if
 * any; `sawReset`: the batch holds the table's snapshot reset.
 */
export async function applyMultiset(
  c: pg.ClientBase,
  target: TargetTable,
  label: string,
  changes: readonly ChangeEvent[],
  sawReset: boolean,
  state: MultisetState,
  counts: { applied: number; stale: number },
): Promise<void> {
  const seen = await c.query<{ lsn: string; seq: number; reset: boolean }>(`SELECT lsn::text, seq, reset FROM ${state.versions} WHERE table_name = $1 FOR UPDATE`, [label]);
  const trunc = await c.query<{ lsn: string; seq: number }>(`SELECT lsn::text, seq FROM ${state.truncations} WHERE table_name = $1`, [label]);
  const high = seen.rows[0];
  const reset = high?.reset === true || sawReset;
  let floor = high ? version(high.lsn, high.seq) : -1n;
  const truncated = trunc.rows[0];
  if (truncated) floor = max(floor, version(truncated.lsn, truncated.seq));
  let newest = high ? version(high.lsn, high.seq) : -1n;
  let newestChange: ChangeEvent | undefined;
  let inserts: Row[] = [];
  let insertVersions: ChangeEvent[] = [];
  const flushInserts = async (): Promise<void> => {
    if (inserts.length === 0) return;
    counts.applied += await insertRows(c, target, inserts, insertVersions);
    inserts = [];
    insertVersions = [];
  };
  for (const change of changes) {
    const v = BigInt(change._version);
    if (v <= floor) {
      counts.stale++;
      continue;
    }
    floor = v;
    if (v > newest) {
      newest = v;
      newestChange = change;
    }
    if (change.unchanged) {
      throw new SynclineError('UNCHANGED_VALUE_MISSING', `${change.op} of keyless table ${label} at ${change.commit_lsn}/${change.seq} lacks the value(s) of ${change.unchanged.join(', ')}, which a whole-row image must carry`, { retriable: false });
    }
    if (change.op === 'DELETE' || change.op === 'UPDATE') {
      await flushInserts();
      const removed = await removeOne(c, target, change.before ?? {});
      if (!removed) {
        if (reset) throw missingRow(label, change);
        // Before the table's first snapshot the row may only be in that snapshot.
        // An UPDATE then adds its new row (counted applied); a DELETE had nothing to do.
        if (change.op === 'DELETE') {
          counts.stale++;
          continue;
        }
      } else if (change.op === 'DELETE') {
        counts.applied++;
        continue;
      }
    }
    if (change.payload) {
      inserts.push(change.payload);
      insertVersions.push(change);
    }
  }
  await flushInserts();
  if (newestChange || (reset && !high?.reset)) {
    const lsn = newestChange?.commit_lsn ?? high?.lsn ?? '0/0';
    const seq = newestChange?.seq ?? high?.seq ?? 0;
    await c.query(
      `INSERT INTO ${state.versions} AS v (table_name, lsn, seq, reset) VALUES ($1, $2::pg_lsn, $3, $4)
       ON CONFLICT (table_name) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, reset = v.reset OR EXCLUDED.reset`,
      [label, lsn, seq, reset],
    );
  }
}

async function insertRows(c: pg.ClientBase, target: TargetTable, rows: Row[], changes: ChangeEvent[]): Promise<number> {
  let applied = 0;
  // Rows with the same columns share one statement (a column added at the source mid-batch makes two).
  const groups = new Map<string, number[]>();
  rows.forEach((r, i) => {
    const cols = Object.keys(r).join('\u0000');
    const g = groups.get(cols);
    if (g) g.push(i);
    else groups.set(cols, [i]);
  });
  for (const indexes of groups.values()) {
    const columns = Object.keys(rows[indexes[0] as number] as Row);
    const n = columns.length;
    const params: unknown[] = columns.map((col) => indexes.map((i) => (rows[i] as Row)[col] ?? null));
    params.push(indexes.map((i) => (changes[i] as ChangeEvent).commit_lsn), indexes.map((i) => (changes[i] as ChangeEvent).seq));
    const cast = (col: string, i: number): string => castText(target.columns.get(col) as TargetColumn, `i.c${i}`);
    const res = await c.query(
      `INSERT INTO ${target.qualified} (${[...columns.map(quoteIdent), V_LSN, V_SEQ].join(', ')})
       SELECT ${[...columns.map(cast), 'i.v_lsn::pg_lsn', 'i.v_seq'].join(', ')}
         FROM unnest(${[...columns.map((_, i) => `$${i + 1}::text[]`), `$${n + 1}::text[]`, `$${n + 2}::int[]`].join(', ')})
              AS i(${[...columns.map((_, i) => `c${i}`), 'v_lsn', 'v_seq'].join(', ')})`,
      params,
    );
    applied += res.rowCount ?? 0;
  }
  return applied;
}

/** Removes one row whose columns print as `before`'s values; false when there is none. */
async function removeOne(c: pg.ClientBase, target: TargetTable, before: Row): Promise<boolean> {
  const columns = Object.keys(before);
  const match = columns
    .map((col, i) => `t.${quoteIdent(col)}::text IS NOT DISTINCT FROM (${castText(target.columns.get(col) as TargetColumn, `$${i + 1}::text`)})::text`)
    .join(' AND ');
  const res = await c.query(
    `DELETE FROM ${target.qualified} WHERE ctid = (SELECT t.ctid FROM ${target.qualified} t WHERE ${match || 'true'} LIMIT 1)`,
    columns.map((col) => before[col] ?? null),
  );
  return (res.rowCount ?? 0) > 0;
}

function missingRow(label: string, change: ChangeEvent): SynclineError {
  return new SynclineError(
    'MULTISET_ROW_MISSING',
    `${change.op} at ${change.commit_lsn}/${change.seq} removes a row of keyless table ${label} that the target does not have: the target drifted (row ${JSON.stringify(change.before ?? {})}); fix: syncline snapshot ${label}, then replay or purge this dead letter`,
    { retriable: false },
  );
}

function version(lsn: string, seq: number): bigint {
  return (parseLsn(lsn) << 32n) + BigInt(seq);
}

function max(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

