import type pg from 'pg';
import { PrerequisiteError } from '../core/errors.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';

export interface TableShape {
  /** Columns as pgoutput sends them: not dropped, not generated. */
  columns: string[];
  /** Primary-key columns, in index order: the chunking key. */
  key: string[];
}

/** Every value as PostgreSQL's text output, exactly as pgoutput would send it. */
const RAW_TEXT = { getTypeParser: () => (value: string) => value };

export async function tableShape(client: pg.ClientBase, t: TableName): Promise<TableShape> {
  const qualified = quoteQualified(t.schema, t.table);
  const { rows } = await client.query<{ name: string; key_pos: number | null }>(
    `SELECT a.attname AS name, array_position(i.indkey::int2[], a.attnum) AS key_pos
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
  return { columns: rows.map((r) => r.name), key };
}

/**
 * Reads the next chunk in key order: rows whose key is greater than `after`, optionally
 * bounded on the first key column. Values are text (null for NULL).
 */
export async function readChunk(
  client: pg.ClientBase,
  t: TableName,
  shape: TableShape,
  after: readonly string[] | null,
  bounds: { from: string | null; to: string | null },
  limit: number,
): Promise<(string | null)[][]> {
  const keyList = shape.key.map(quoteIdent).join(', ');
  const where: string[] = [];
  const params: unknown[] = [];
  if (after) {
    const placeholders = after.map((v) => {
      params.push(v);
      return `$${params.length}`;
    });
    where.push(`(${keyList}) > (${placeholders.join(', ')})`);
  }
  const first = quoteIdent(shape.key[0] as string);
  if (bounds.from !== null) {
    params.push(bounds.from);
    where.push(`${first} >= $${params.length}`);
  }
  if (bounds.to !== null) {
    params.push(bounds.to);
    where.push(`${first} <= $${params.length}`);
  }
  params.push(limit);
  const sql = `SELECT ${shape.columns.map(quoteIdent).join(', ')} FROM ${quoteQualified(t.schema, t.table)}
                ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ${keyList} LIMIT $${params.length}`;
  const res = await client.query<(string | null)[]>({ text: sql, values: params, rowMode: 'array', types: RAW_TEXT });
  return res.rows;
}
