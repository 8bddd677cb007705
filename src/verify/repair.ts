import type pg from 'pg';
import type { ChangeEvent, Row } from '../core/change.js';
import { parseLsn, versionOf } from '../core/lsn.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import type { Sink } from '../sink/sink.js';

/**
 * Removes target rows whose key no longer exists at the source, through the sink's normal
 * version-gated delete (so each leaves a tombstone).
 *
 * The delete's version is the source's WAL position taken *before* re-checking that the key
 * is still absent: an insert of that key committed before the check is seen by it (and the
 * key is kept); one committed after it has a newer version than the delete and wins.
 */
export async function removeExtraRows(
  source: pg.ClientBase,
  sink: Sink,
  t: TableName,
  keyColumns: readonly string[],
  keys: readonly string[],
  sourceName: string,
  group: string,
): Promise<number> {
  if (keys.length === 0) return 0;
  const { rows } = await source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  const lsnText = (rows[0] as { lsn: string }).lsn;
  const lsn = parseLsn(lsnText);
  // Let any commit whose record precedes that position become visible before re-checking.
  await source.query('SELECT pg_sleep(0.05)');
  // Compared in the key columns' own types (the parameters' types are inferred from them), not
  // as text: a key's text depends on the session (TimeZone for timestamptz, the trimmed form
  // verify compares numerics in), and a key wrongly read as absent here would delete a row the
  // source holds.
  const match = keyColumns.map((c, i) => `${quoteIdent(c)} = $${i + 1}`).join(' AND ');
  const deletes: ChangeEvent[] = [];
  for (const keyJson of keys) {
    const values = JSON.parse(keyJson) as (string | null)[];
    const still = await source.query(`SELECT 1 FROM ${quoteQualified(t.schema, t.table)} WHERE ${match} LIMIT 1`, values).catch((err: unknown) => {
      // A key the column's type cannot read (a target key no source row can have) is absent.
      if (typeof (err as { code?: unknown }).code === 'string' && (err as { code: string }).code.startsWith('22')) return { rowCount: 0 };
      throw err;
    });
    if ((still.rowCount ?? 0) > 0) continue;
    const key: Row = {};
    keyColumns.forEach((c, i) => (key[c] = values[i] ?? null));
    const seq = deletes.length + 1;
    deletes.push({
      source: sourceName,
      schema: t.schema,
      table: t.table,
      op: 'DELETE',
      lsn: lsnText,
      commit_lsn: lsnText,
      xid: 0,
      seq,
      commit_ts: new Date().toISOString(),
      key,
      payload: null,
      _version: versionOf(lsn, seq).toString(),
      _schema_version: 1,
    });
  }
  if (deletes.length === 0) return 0;
  const outcome = await sink.apply(deletes, new Map(), group);
  return outcome.applied;
}
