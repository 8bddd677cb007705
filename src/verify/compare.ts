import type pg from 'pg';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import { excludedKey, tableLabel, targetColumnOf, type TableRoute } from '../core/table-mapping.js';

export interface TableDrift {
  /** The source table. */
  table: string;
  /** The target table when `sink.tables` routes it elsewhere. */
  target?: string;
  sourceRows: number;
  targetRows: number;
  /**
   * Primary-key column names, in key order. Keys below are JSON arrays of their text values.
   * Empty for a keyless table: its keys are whole rows (a row present twice at the source and
   * once at the target is one missing key).
   */
  keyColumns: string[];
  /** Keys present at the source only. */
  missing: string[];
  /** Keys present at the target only. */
  extra: string[];
  /** Keys whose column values differ. */
  different: string[];
}

const SAMPLE = 20;

/**
 * Compares one table between source and target, row by row over the source's columns
 * (the target's extra columns such as `_syncline_lsn` are ignored; soft-deleted target rows
 * count as absent). Each side returns `key, md5(row)` ordered by key and the lists are
 * merged: the rows themselves never leave the servers, only 32-byte digests. With a `route`
 * (`sink.tables`), the target side is the routed table, its columns read under their target
 * names in the source's order, and excluded columns are left out on both sides.
 */
export async function compareTable(source: pg.ClientBase, target: pg.ClientBase, t: TableName, sample = SAMPLE, route?: TableRoute): Promise<TableDrift & { differing: number }> {
  const qualified = quoteQualified(t.schema, t.table);
  const to = route?.target ?? t;
  const targetQualified = quoteQualified(to.schema, to.table);
  const { rows: cols } = await source.query<{ name: string; is_pk: boolean }>(
    `SELECT a.attname AS name, coalesce(a.attnum = ANY(i.indkey), false) AS is_pk
       FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [qualified],
  );
  if (cols.length === 0) throw new Error(`source table ${t.schema}.${t.table} does not exist`);
  // A keyless table is a multiset: rows are compared whole, duplicates counted (its "key"
  // below is the row's text).
  const keyless = !cols.some((c) => c.is_pk);
  // Column pairs (source name, target name), excluded columns left out; a key column cannot be.
  const pairs: { from: string; to: string; isPk: boolean }[] = [];
  for (const c of cols) {
    const name = route ? targetColumnOf(route, c.name) : c.name;
    if (name === undefined) {
      if (c.is_pk && route) throw excludedKey(route, c.name);
      continue;
    }
    pairs.push({ from: c.name, to: name, isPk: c.is_pk });
  }
  const { rows: targetCols } = await target.query<{ name: string }>(
    'SELECT attname AS name FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped',
    [targetQualified],
  );
  if (targetCols.length === 0) throw new Error(`target table ${to.schema}.${to.table} does not exist`);
  const present = new Set(targetCols.map((c) => c.name));
  const absent = pairs.filter((p) => !present.has(p.to)).map((p) => p.to);
  if (absent.length > 0) throw new Error(`target table ${to.schema}.${to.table} lacks column(s) ${absent.join(', ')}`);
  const softDeletes = present.has('_deleted_at');
  const side = (name: (p: { from: string; to: string }) => string, from: string, where: string): string => {
    const rowExpr = `md5(ROW(${pairs.map((p) => quoteIdent(name(p))).join(', ')})::text)`;
    // Keys as JSON arrays of text values: the form change events and the dead-letter queue use.
    const keyExpr = keyless
      ? `to_json(ARRAY[${pairs.map((p) => `${quoteIdent(name(p))}::text`).join(', ')}])::text`
      : `to_json(ARRAY[${pairs.filter((p) => p.isPk).map((p) => `${quoteIdent(name(p))}::text`).join(', ')}])::text`;
    // Ordering by the key's text form keeps the merge consistent across both servers.
    return `SELECT ${keyExpr} AS k, ${rowExpr} AS h FROM ${from}${where} ORDER BY ${keyExpr} COLLATE "C"`;
  };
  const [src, dst] = await Promise.all([
    source.query<{ k: string; h: string }>(side((p) => p.from, qualified, '')),
    target.query<{ k: string; h: string }>(side((p) => p.to, targetQualified, softDeletes ? ` WHERE ${quoteIdent('_deleted_at')} IS NULL` : '')),
  ]);
  const drift: TableDrift & { differing: number } = {
    table: `${t.schema}.${t.table}`,
    ...(route ? { target: tableLabel(route.target) } : {}),
    keyColumns: cols.filter((c) => c.is_pk).map((c) => c.name),
    sourceRows: src.rows.length,
    targetRows: dst.rows.length,
    missing: [],
    extra: [],
    different: [],
    differing: 0,
  };
  let i = 0;
  let j = 0;
  const note = (list: string[], key: string): void => {
    drift.differing++;
    if (list.length < sample) list.push(key);
  };
  while (i < src.rows.length || j < dst.rows.length) {
    const a = src.rows[i];
    const b = dst.rows[j];
    if (a && (!b || a.k < b.k)) {
      note(drift.missing, a.k);
      i++;
    } else if (b && (!a || b.k < a.k)) {
      note(drift.extra, b.k);
      j++;
    } else if (a && b) {
      if (a.h !== b.h) note(drift.different, a.k);
      i++;
      j++;
    }
  }
  return drift;
}
