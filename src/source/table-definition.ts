import type pg from 'pg';
import { PrerequisiteError } from '../core/errors.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import { excludedKey, targetColumnOf, type TableRoute } from '../core/table-mapping.js';

/** A column of a source table as the target's DDL needs it. */
export interface SourceColumn {
  name: string;
  /** `format_type` output: the type with its modifiers, quoted as SQL needs. */
  type: string;
  not_null: boolean;
  /** Position in the primary key (1-based), null outside it. */
  key_pos: number | null;
}

/** The table's columns in order (generated and dropped ones left out); empty when it does not exist. */
export async function sourceColumns(source: pg.ClientBase, t: TableName): Promise<SourceColumn[]> {
  const { rows } = await source.query<SourceColumn>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
            array_position(i.indkey::int2[], a.attnum) AS key_pos
       FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      ORDER BY a.attnum`,
    [quoteQualified(t.schema, t.table)],
  );
  return rows;
}

/** The primary key's column names, in key order. */
export function primaryKeyOf(cols: readonly SourceColumn[]): string[] {
  return cols
    .filter((c) => c.key_pos !== null)
    .sort((a, b) => (a.key_pos ?? 0) - (b.key_pos ?? 0))
    .map((c) => c.name);
}

/**
 * `CREATE TABLE` for a target copy of a source table: the same columns, types (with their
 * modifiers), NOT NULL flags and primary key. Type names come from `format_type`, which
 * quotes them as SQL needs; user-defined types (enums, composites, domains) must exist at
 * the target under the same name. With a `sink.tables` route, the table is the route's
 * target, columns take their target names, and excluded columns are left out.
 */
export async function targetTableDdl(source: pg.ClientBase, t: TableName, route?: TableRoute): Promise<string> {
  const cols = await sourceColumns(source, t);
  const target = route?.target ?? t;
  if (cols.length === 0) {
    throw new PrerequisiteError(`cannot create target table ${target.schema}.${target.table}: no source table ${t.schema}.${t.table}`, route ? `check ${route.path}` : 'check the table name');
  }
  const nameOf = (column: string): string | undefined => (route ? targetColumnOf(route, column) : column);
  const defs: string[] = [];
  for (const c of cols) {
    const name = nameOf(c.name);
    if (name !== undefined) defs.push(`${quoteIdent(name)} ${c.type}${c.not_null ? ' NOT NULL' : ''}`);
  }
  const key = primaryKeyOf(cols).map((c) => {
    const name = nameOf(c);
    if (name === undefined) throw excludedKey(route as TableRoute, c);
    return quoteIdent(name);
  });
  if (key.length > 0) defs.push(`PRIMARY KEY (${key.join(', ')})`);
  return `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(target.schema)}; CREATE TABLE IF NOT EXISTS ${quoteQualified(target.schema, target.table)} (${defs.join(', ')})`;
}

/** A generated column of a source table: its name and its expression as pg_get_expr prints it (`(a * 2)`). */
export interface GeneratedColumn {
  column: string;
  expression: string;
}

/**
 * The table's generated columns, which logical decoding does not send (PostgreSQL before 18):
 * a target that keeps one as a plain column never gets its values.
 */
export async function generatedColumns(source: pg.ClientBase, t: TableName): Promise<GeneratedColumn[]> {
  const { rows } = await source.query<GeneratedColumn>(
    `SELECT a.attname AS column, pg_get_expr(d.adbin, d.adrelid) AS expression
       FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
      ORDER BY a.attnum`,
    [quoteQualified(t.schema, t.table)],
  );
  return rows;
}
