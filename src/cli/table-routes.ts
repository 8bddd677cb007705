import type pg from 'pg';
import { PrerequisiteError } from '../core/errors.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import { excludedKey, targetColumnOf, type TableRoute } from '../core/table-mapping.js';
import type { SourceTableShape } from '../sink/mapped-sink.js';

/** What `sink.tables` needs to know of a source table: its columns (in order, with DDL types) and key. */
interface SourceColumn {
  name: string;
  type: string;
  not_null: boolean;
  key_pos: number | null;
}

async function sourceColumns(source: pg.ClientBase, t: TableName): Promise<SourceColumn[]> {
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

/** The shapes of `tables` at the source (undefined for a missing table), for MappedSink's checks. */
export async function readSourceShapes(source: pg.ClientBase, tables: readonly TableName[]): Promise<(SourceTableShape | undefined)[]> {
  const out: (SourceTableShape | undefined)[] = [];
  for (const t of tables) {
    const cols = await sourceColumns(source, t);
    out.push(cols.length === 0 ? undefined : { columns: cols.map((c) => c.name), primaryKey: primaryKeyOf(cols) });
  }
  return out;
}

/**
 * `sink.create_tables` for a routed table: the target table `route.target` with the source's
 * columns under their target names (excluded ones left out), types with modifiers, NOT NULL
 * and the primary key — what `targetTableDdl` makes for an unrouted table.
 */
export async function routedTableDdl(source: pg.ClientBase, route: TableRoute): Promise<string> {
  const { source: s, target: t } = route;
  const cols = await sourceColumns(source, s);
  if (cols.length === 0) throw new PrerequisiteError(`cannot create target table ${t.schema}.${t.table}: no source table ${s.schema}.${s.table}`, `check ${route.path}`);
  const defs: string[] = [];
  for (const c of cols) {
    const name = targetColumnOf(route, c.name);
    if (name !== undefined) defs.push(`${quoteIdent(name)} ${c.type}${c.not_null ? ' NOT NULL' : ''}`);
  }
  const key = primaryKeyOf(cols).map((c) => {
    const name = targetColumnOf(route, c);
    if (name === undefined) throw excludedKey(route, c);
    return quoteIdent(name);
  });
  if (key.length > 0) defs.push(`PRIMARY KEY (${key.join(', ')})`);
  return `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(t.schema)}; CREATE TABLE IF NOT EXISTS ${quoteQualified(t.schema, t.table)} (${defs.join(', ')})`;
}

function primaryKeyOf(cols: readonly SourceColumn[]): string[] {
  return cols
    .filter((c) => c.key_pos !== null)
    .sort((a, b) => (a.key_pos ?? 0) - (b.key_pos ?? 0))
    .map((c) => c.name);
}
