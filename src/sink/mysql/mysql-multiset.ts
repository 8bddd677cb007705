import type { PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import type { ChangeEvent, Row } from '../../core/change.js';
import { PrerequisiteError } from '../../core/errors.js';
import { parseLsn, versionOf } from '../../core/lsn.js';
import { maxVersion, onMissingRow, planMultiset, removesRow } from '../multiset.js';
import { VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, quoteMysqlIdent as q, rowMatch, toMysqlParam, type MysqlColumn, type MysqlTable } from './mysql-table.js';

/**
 * Keyless tables (a multiset of whole rows) at a MySQL / MariaDB target; the rules are in
 * `../multiset.ts`. A row to remove is matched by every column of `before`
 * (`DELETE ... WHERE <every column matches> LIMIT 1`, see `rowMatch`).
 */
export interface MysqlMultisetState {
  /** `<state>_multiset_versions` */
  versions: string;
  /** `<state>_truncations` */
  truncations: string;
}

const V_LSN = q(VERSION_LSN_COLUMN);
const V_SEQ = q(VERSION_SEQ_COLUMN);
/** Rows per INSERT statement (well under max_allowed_packet for ordinary rows). */
const MAX_ROWS_PER_INSERT = 500;

export function multisetStateDdl(state: MysqlMultisetState, tableOptions: string): string {
  return `CREATE TABLE IF NOT EXISTS ${state.versions} (
    table_name VARCHAR(255) NOT NULL PRIMARY KEY, lsn BIGINT UNSIGNED NOT NULL, seq INT NOT NULL,
    reset TINYINT(1) NOT NULL DEFAULT 0) ${tableOptions}`;
}

/**
 * Applies `changes` (one keyless table's, in stream order) after the batch's truncation, if
 * any; `sawReset`: the batch holds the table's snapshot reset.
 */
export async function applyMysqlMultiset(
  c: PoolConnection,
  target: MysqlTable,
  changes: readonly ChangeEvent[],
  sawReset: boolean,
  state: MysqlMultisetState,
  counts: { applied: number; stale: number },
): Promise<void> {
  const label = target.label;
  // Creating the row first locks it (a missing row's FOR UPDATE would take a gap lock, which
  // two apply processes can deadlock on); lsn 0 sorts before every real version.
  await c.query(`INSERT INTO ${state.versions} (table_name, lsn, seq, reset) VALUES (?, 0, 0, 0) ON DUPLICATE KEY UPDATE table_name = table_name`, [label]);
  const [seen] = await c.query<(RowDataPacket & { lsn: string; seq: number; reset: number })[]>(
    `SELECT CAST(lsn AS CHAR) AS lsn, seq, reset FROM ${state.versions} WHERE table_name = ? FOR UPDATE`,
    [label],
  );
  const [trunc] = await c.query<(RowDataPacket & { lsn: string; seq: number })[]>(`SELECT CAST(lsn AS CHAR) AS lsn, seq FROM ${state.truncations} WHERE table_name = ?`, [label]);
  const high = seen[0];
  const truncated = trunc[0];
  const wasReset = Number(high?.reset ?? 0) === 1;
  const reset = wasReset || sawReset;
  const floor = maxVersion(high ? versionOf(BigInt(high.lsn), Number(high.seq)) : 0n, truncated && versionOf(BigInt(truncated.lsn), Number(truncated.seq)));
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
      if (!(await removeOne(c, target, change))) {
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
  if (newest) {
    await c.query(`UPDATE ${state.versions} SET lsn = ${parseLsn(newest.commit_lsn).toString()}, seq = ${newest.seq | 0}, reset = ${reset ? 1 : 0} WHERE table_name = ?`, [label]);
  } else if (reset && !wasReset) {
    await c.query(`UPDATE ${state.versions} SET reset = 1 WHERE table_name = ?`, [label]);
  }
}

/** Adds the rows of `changes` (their payloads), each with its change's version; returns how many. */
async function insertRows(c: PoolConnection, target: MysqlTable, changes: ChangeEvent[]): Promise<number> {
  // Rows with the same columns share statements (a column added at the source mid-batch makes two).
  const groups = new Map<string, ChangeEvent[]>();
  for (const change of changes) {
    const cols = Object.keys(change.payload as Row).join('\u0000');
    const g = groups.get(cols);
    if (g) g.push(change);
    else groups.set(cols, [change]);
  }
  let applied = 0;
  for (const group of groups.values()) {
    const columns = Object.keys((group[0] as ChangeEvent).payload as Row);
    const metas = columnsOf(target, columns);
    for (let start = 0; start < group.length; start += MAX_ROWS_PER_INSERT) {
      const params: unknown[] = [];
      const values = group.slice(start, start + MAX_ROWS_PER_INSERT).map((change) => {
        const payload = change.payload as Row;
        metas.forEach((m, i) => params.push(toMysqlParam(m, payload[columns[i] as string] ?? null)));
        // Versions are computed integers, written as literals (exact, no string → double).
        return `(${[...columns.map(() => '?'), parseLsn(change.commit_lsn).toString(), String(change.seq | 0)].join(', ')})`;
      });
      const [res] = await c.query<ResultSetHeader>(`INSERT INTO ${target.qualified} (${[...columns.map(q), V_LSN, V_SEQ].join(', ')}) VALUES ${values.join(', ')}`, params);
      applied += res.affectedRows;
    }
  }
  return applied;
}

/** Removes one row whose every column of `before` holds that value; false when there is none. */
async function removeOne(c: PoolConnection, target: MysqlTable, change: ChangeEvent): Promise<boolean> {
  const before = change.before ?? {};
  const columns = Object.keys(before);
  const metas = columnsOf(target, columns);
  const params: unknown[] = [];
  const match = metas.map((m, i) => rowMatch(m, before[columns[i] as string] ?? null, params));
  const [res] = await c.query<ResultSetHeader>(`DELETE FROM ${target.qualified} WHERE ${match.join(' AND ') || 'TRUE'} LIMIT 1`, params);
  return res.affectedRows > 0;
}

function columnsOf(target: MysqlTable, columns: string[]): MysqlColumn[] {
  const missing = columns.filter((col) => !target.columns.has(col));
  if (missing.length > 0) {
    throw new PrerequisiteError(
      `target table ${target.label} lacks column(s) ${missing.join(', ')}`,
      `ALTER TABLE ${target.qualified} ${missing.map((m) => `ADD COLUMN ${q(m)} <type>`).join(', ')}`,
    );
  }
  return columns.map((col) => target.columns.get(col) as MysqlColumn);
}
