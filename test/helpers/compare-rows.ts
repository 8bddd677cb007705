import type pg from 'pg';
import { parseTableName, quoteIdent, quoteQualified } from '../../src/core/sql.js';
import { compareTable } from '../../src/verify/compare.js';
import { waitFor } from './wait.js';

/**
 * Waits until every one of `tables` is equal at the target and the source (syncline's
 * compareTable: no differing key and the same row count); on timeout it throws with the drift.
 */
export async function waitForEqualTables(source: pg.ClientBase, target: pg.ClientBase, tables: readonly string[], timeoutMs = 120_000): Promise<void> {
  const names = tables.map((t) => parseTableName(t));
  let drift: Awaited<ReturnType<typeof compareTable>>[] = [];
  try {
    await waitFor(
      'the target to equal the source',
      async () => {
        drift = await Promise.all(names.map((t) => compareTable(source, target, t)));
        // Row counts too: a key the first scan missed (apply still catching up) can be
        // present by its re-check, which then reports no difference.
        return drift.every((d) => d.differing === 0 && d.sourceRows === d.targetRows);
      },
      timeoutMs,
      500,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; drift: ${JSON.stringify(drift)}`);
  }
}

/**
 * An independent comparison for tests: every row of the source's own columns, as text,
 * sorted, from both sides (duplicates kept, so keyless tables compare as multisets).
 * Returns the rows present on one side only (with multiplicity), at most `limit` of each.
 */
export async function rowDiff(source: pg.ClientBase, target: pg.ClientBase, table: string, limit = 10): Promise<{ sourceRows: number; targetRows: number; missing: string[]; extra: string[] }> {
  const [schema, name] = table.includes('.') ? (table.split('.') as [string, string]) : ['public', table];
  const { rows: cols } = await source.query<{ attname: string }>(
    'SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum',
    [quoteQualified(schema, name)],
  );
  const list = cols.map((c) => `${quoteIdent(c.attname)}::text`).join(', ');
  const sql = `SELECT json_build_array(${list})::text AS r FROM ${quoteQualified(schema, name)} ORDER BY 1`;
  const read = async (c: pg.ClientBase): Promise<string[]> => (await c.query<{ r: string }>(sql)).rows.map((x) => x.r);
  const [a, b] = await Promise.all([read(source), read(target)]);
  const counts = new Map<string, number>();
  for (const r of a) counts.set(r, (counts.get(r) ?? 0) + 1);
  for (const r of b) counts.set(r, (counts.get(r) ?? 0) - 1);
  const missing: string[] = [];
  const extra: string[] = [];
  for (const [r, n] of counts) {
    for (let i = 0; i < n && missing.length < limit; i++) missing.push(r);
    for (let i = 0; i < -n && extra.length < limit; i++) extra.push(r);
  }
  return { sourceRows: a.length, targetRows: b.length, missing, extra };
}

/** True when source and target hold the same rows (see rowDiff). */
export async function sameRows(source: pg.ClientBase, target: pg.ClientBase, table: string): Promise<boolean> {
  const d = await rowDiff(source, target, table, 1);
  return d.missing.length === 0 && d.extra.length === 0;
}
