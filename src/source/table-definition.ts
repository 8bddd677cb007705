import type pg from 'pg';
import { PrerequisiteError } from '../core/errors.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';

/**
 * `CREATE TABLE` for a target copy of a source table: the same columns, types (with their
 * modifiers), NOT NULL flags and primary key. Type names come from `format_type`, which
 * quotes them as SQL needs; user-defined types (enums, composites, domains) must exist at
 * the target under the same name.
 */
export async function targetTableDdl(source: pg.ClientBase, t: TableName): Promise<string> {
  const { rows } = await source.query<{ name: string; type: string; not_null: boolean; key_pos: number | null }>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
            array_position(i.indkey::int2[], a.attnum) AS key_pos
       FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      ORDER BY a.attnum`,
    [quoteQualified(t.schema, t.table)],
  );
  if (rows.length === 0) throw new PrerequisiteError(`cannot create target table ${t.schema}.${t.table}: no such table at the source`, 'check the table name');
  const key = rows.filter((r) => r.key_pos !== null).sort((a, b) => (a.key_pos ?? 0) - (b.key_pos ?? 0)).map((r) => quoteIdent(r.name));
  const columns = rows.map((r) => `${quoteIdent(r.name)} ${r.type}${r.not_null ? ' NOT NULL' : ''}`);
  if (key.length > 0) columns.push(`PRIMARY KEY (${key.join(', ')})`);
  return `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(t.schema)}; CREATE TABLE IF NOT EXISTS ${quoteQualified(t.schema, t.table)} (${columns.join(', ')})`;
}
