import type pg from 'pg';
import type { ChangeEvent, Row } from '../../core/change.js';
import { parseLsn } from '../../core/lsn.js';
import { quoteIdent } from '../../core/sql.js';
import { maxVersion, onMissingRow, planMultiset, removesRow } from '../multiset.js';
import { castText, storedText, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, type TargetColumn, type TargetTable } from './table-meta.js';

/**
 * Keyless tables (a multiset of whole rows) at a PostgreSQL target; the rules are in
 * `../multiset.ts`. A row to remove is matched by every column of `before` compared as text,
 * so types without an equality operator work too.
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
  const truncated = trunc.rows[0];
  const reset = high?.reset === true || sawReset;
  const floor = maxVersion(high ? version(high.lsn, high.seq) : -1n, truncated && version(truncated.lsn, truncated.seq));
  const plan = planMultiset(label, changes, floor, counts);
  let adds: ChangeEvent[] = [];
  const flushAdds = async (): Promise<void> => {
    if (adds.length === 0) return;
    counts.applied += await insertRows(c, target, adds);
    adds = [];
  };
  for (const change of plan.changes) {
    if (removesRow(change)) {
      await flushAdds(); // a row added earlier in this batch may be the one to remove
      if (!(await removeOne(c, target, change.before ?? {}))) {
        if (!onMissingRow(label, change, reset, counts)) continue;
      } else if (change.op === 'DELETE') {
        counts.applied++;
        continue;
      }
    }
    if (change.payload) adds.push(change);
  }
  await flushAdds();
  const newest = plan.newest;
  if (newest || (reset && !high?.reset)) {
    await c.query(
      `INSERT INTO ${state.versions} AS v (table_name, lsn, seq, reset) VALUES ($1, $2::pg_lsn, $3, $4)
       ON CONFLICT (table_name) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, reset = v.reset OR EXCLUDED.reset`,
      [label, newest?.commit_lsn ?? high?.lsn ?? '0/0', newest?.seq ?? high?.seq ?? 0, reset],
    );
  }
}

/** Adds the new row (`payload`) of each of `changes` with its change's version; returns how many. */
async function insertRows(c: pg.ClientBase, target: TargetTable, changes: ChangeEvent[]): Promise<number> {
  let applied = 0;
  // Rows with the same columns share one statement (a column added at the source mid-batch makes two).
  const groups = new Map<string, ChangeEvent[]>();
  for (const change of changes) {
    const cols = Object.keys(change.payload as Row).join('\u0000');
    const g = groups.get(cols);
    if (g) g.push(change);
    else groups.set(cols, [change]);
  }
  for (const group of groups.values()) {
    const columns = Object.keys((group[0] as ChangeEvent).payload as Row);
    const n = columns.length;
    const params: unknown[] = columns.map((col) => group.map((ch) => (ch.payload as Row)[col] ?? null));
    params.push(group.map((ch) => ch.commit_lsn), group.map((ch) => ch.seq));
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
    .map((col, i) => `t.${quoteIdent(col)}::text IS NOT DISTINCT FROM ${storedText(target.columns.get(col) as TargetColumn, `$${i + 1}::text`)}`)
    .join(' AND ');
  const res = await c.query(
    `DELETE FROM ${target.qualified} WHERE ctid = (SELECT t.ctid FROM ${target.qualified} t WHERE ${match || 'true'} LIMIT 1)`,
    columns.map((col) => before[col] ?? null),
  );
  return (res.rowCount ?? 0) > 0;
}

function version(lsn: string, seq: number): bigint {
  return (parseLsn(lsn) << 32n) + BigInt(seq);
}
