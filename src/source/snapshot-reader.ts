import type pg from 'pg';
import type { ColumnType } from '../core/schema-version.js';
import { PrerequisiteError } from '../core/errors.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';

export interface TableShape {
  /** Columns as pgoutput sends them: not dropped, not generated. */
  columns: string[];
  /** Type and modifier of each column, as a Relation message carries them (for `_schema_version`). */
  types: ColumnType[];
  /** Primary-key columns, in index order: the chunking key. */
  key: string[];
}

/** Key values (PostgreSQL text) of one row, in key-column order. */
export type KeyValues = readonly string[];

/** Optional bounds on the first key column (text, inclusive), from `syncline snapshot --from/--to`. */
export interface KeyBounds {
  from: string | null;
  to: string | null;
}

/** Every value as PostgreSQL's text output, exactly as pgoutput would send it. */
const RAW_TEXT = { getTypeParser: () => (value: string) => value };

export async function tableShape(client: pg.ClientBase, t: TableName): Promise<TableShape> {
  const qualified = quoteQualified(t.schema, t.table);
  const { rows } = await client.query<{ name: string; type_oid: number; type_mod: number; key_pos: number | null }>(
    `SELECT a.attname AS name, a.atttypid::int AS type_oid, a.atttypmod AS type_mod, array_position(i.indkey::int2[], a.attnum) AS key_pos
       FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      ORDER BY a.attnum`,
    [qualified],
  );
  if (rows.length === 0) throw new PrerequisiteError(`cannot snapshot ${t.schema}.${t.table}: no such table at the source`, 'check the table name');
  const key = rows.filter((r) => r.key_pos !== null).sort((a, b) => (a.key_pos ?? 0) - (b.key_pos ?? 0)).map((r) => r.name);
  if (key.length === 0) {
    throw new PrerequisiteError(`cannot snapshot ${t.schema}.${t.table}: it has no primary key to read it in chunks by`, `ALTER TABLE ${qualified} ADD PRIMARY KEY (...)`);
  }
  return { columns: rows.map((r) => r.name), types: rows.map((r) => ({ name: r.name, typeOid: r.type_oid, typeMod: r.type_mod })), key };
}

/** WHERE terms and parameters for keys in (after, upper] within `bounds`. */
function rangeWhere(shape: TableShape, after: KeyValues | null, upper: KeyValues | null, bounds: KeyBounds): { where: string; params: unknown[] } {
  const keyList = shape.key.map(quoteIdent).join(', ');
  const terms: string[] = [];
  const params: unknown[] = [];
  const placeholders = (values: KeyValues): string =>
    values
      .map((v) => {
        params.push(v);
        return `$${params.length}`;
      })
      .join(', ');
  if (after) terms.push(`(${keyList}) > (${placeholders(after)})`);
  if (upper) terms.push(`(${keyList}) <= (${placeholders(upper)})`);
  const first = quoteIdent(shape.key[0] as string);
  if (bounds.from !== null) {
    params.push(bounds.from);
    terms.push(`${first} >= $${params.length}`);
  }
  if (bounds.to !== null) {
    params.push(bounds.to);
    terms.push(`${first} <= $${params.length}`);
  }
  return { where: terms.length > 0 ? `WHERE ${terms.join(' AND ')}` : '', params };
}

/**
 * The key of the `size`-th row after `after` (and not past `cap`), or null when fewer rows
 * are left: the upper bound of the next chunk. It reads keys only (the primary-key index),
 * so chunks can be planned ahead of reading them and read on several connections at once.
 */
export async function chunkBoundary(
  client: pg.ClientBase,
  t: TableName,
  shape: TableShape,
  after: KeyValues | null,
  cap: KeyValues | null,
  bounds: KeyBounds,
  size: number,
): Promise<KeyValues | null> {
  const keyList = shape.key.map(quoteIdent).join(', ');
  const { where, params } = rangeWhere(shape, after, cap, bounds);
  params.push(size - 1);
  const sql = `SELECT ${keyList} FROM ${quoteQualified(t.schema, t.table)} ${where} ORDER BY ${keyList} OFFSET $${params.length} LIMIT 1`;
  const res = await client.query<string[]>({ text: sql, values: params, rowMode: 'array', types: RAW_TEXT });
  return res.rows[0] ?? null;
}

/**
 * Reads the rows whose key is in (after, upper] (upper null: to the end), in key order,
 * optionally bounded on the first key column. Values are text (null for NULL).
 */
export async function readChunk(
  client: pg.ClientBase,
  t: TableName,
  shape: TableShape,
  after: KeyValues | null,
  upper: KeyValues | null,
  bounds: KeyBounds,
): Promise<(string | null)[][]> {
  const keyList = shape.key.map(quoteIdent).join(', ');
  const { where, params } = rangeWhere(shape, after, upper, bounds);
  const sql = `SELECT ${shape.columns.map(quoteIdent).join(', ')} FROM ${quoteQualified(t.schema, t.table)} ${where} ORDER BY ${keyList}`;
  const res = await client.query<(string | null)[]>({ text: sql, values: params, rowMode: 'array', types: RAW_TEXT });
  return res.rows;
}
