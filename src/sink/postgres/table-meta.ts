import type pg from 'pg';
import { tableLabelOf } from '../../core/change.js';
import { PrerequisiteError } from '../../core/errors.js';
import { quoteIdent, quoteQualified } from '../../core/sql.js';
import { CLOCK_COLUMN, DELETED_AT_COLUMN, SOURCE_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, WRITER_XID_COLUMN } from '../sql/bookkeeping.js';

export interface TargetColumn {
  name: string;
  /**
   * The type as a cast target: schema-qualified internal name (`"pg_catalog"."bpchar"`),
   * not format_type's `character`, which would mean char(1) and truncate values.
   */
  castType: string;
  /**
   * The type with its modifiers (`numeric(12,2)`, `timestamp(0) without time zone`), as
   * format_type prints it: a value cast to it reads back as the column stores it.
   */
  exactType: string;
  /**
   * The column can be assigned in an UPDATE: not `GENERATED ALWAYS AS IDENTITY` nor a
   * generated column (either refuses `SET col = ...`). Absent: true.
   */
  assignable?: boolean;
}

const XML_TYPE = quoteQualified('pg_catalog', 'xml');

/**
 * SQL turning `expr`, a change event's value (the source's text output), into the column's
 * type. xml is the one built-in type whose text input depends on a session setting: with a
 * target default of `xmloption = document` a plain cast rejects the fragments the source may
 * hold; XMLPARSE(CONTENT) accepts documents and fragments alike and stores the text as is.
 */
export function castText(column: TargetColumn, expr: string): string {
  return column.castType === XML_TYPE ? `XMLPARSE(CONTENT ${expr} PRESERVE WHITESPACE)` : `${expr}::${column.castType}`;
}

/**
 * SQL for `expr` as the column would store it, printed as text: rounded to its scale,
 * precision or length (a source `1.5` in a `numeric(12,2)` column is stored `1.50`). Rows are
 * matched by this text (keyless tables), which also works for types without equality.
 */
export function storedText(column: TargetColumn, expr: string): string {
  return column.castType === XML_TYPE ? `XMLPARSE(CONTENT ${expr} PRESERVE WHITESPACE)::text` : `(${expr}::${column.exactType})::text`;
}

/**
 * The type of a column's value in a COPY staging table (see copy-stage.ts): the column's own
 * type without modifiers, so COPY parses the text exactly as `castText` would and the merge
 * applies the modifiers on assignment, as for `unnest`. xml stays text: its COPY input
 * depends on `xmloption` (castText parses it in the merge).
 */
export function stagedType(column: TargetColumn): string {
  return column.castType === XML_TYPE ? 'text' : column.castType;
}

/** SQL for a staged value `expr` (see stagedType) as the column's type. */
export function fromStage(column: TargetColumn, expr: string): string {
  return column.castType === XML_TYPE ? castText(column, expr) : expr;
}

export interface TargetTable {
  /** `schema.table` of the source (the target has the same name). */
  label: string;
  qualified: string;
  columns: Map<string, TargetColumn>;
  primaryKey: string[];
  /** The primary key is DEFERRABLE (see SqlTable.deferrableKey). */
  deferrableKey: boolean;
}

/**
 * SQL matching the target row `t` to the input row `i` whose key values are `i.k0`, `i.k1`,
 * ... (text, cast to the key columns' types).
 */
export function keyMatch(target: TargetTable, keyColumns: string[]): string {
  return keyColumns.map((col, i) => `t.${quoteIdent(col)} = i.k${i}::${(target.columns.get(col) as TargetColumn).castType}`).join(' AND ');
}

/**
 * Reads a target table's columns and primary key, adding syncline's version columns
 * (and `_deleted_at` for soft deletes) when they are missing.
 */
export async function loadTargetTable(
  client: pg.PoolClient | pg.Client,
  schema: string,
  table: string,
  softDelete: boolean,
  /** `sink.create_tables`: the DDL that creates a missing target table. */
  createTable?: (schema: string, table: string) => Promise<string>,
  /** Conflict tracking: also the writer columns (source, clock, xid). */
  writerColumns = false,
): Promise<TargetTable> {
  let meta = await readTable(client, schema, table);
  if (!meta && createTable) {
    await client.query(await createTable(schema, table));
    meta = await readTable(client, schema, table);
  }
  if (!meta) {
    throw new PrerequisiteError(
      `target table ${tableLabelOf({ schema, table })} does not exist in the sink database`,
      `create ${quoteQualified(schema, table)} on the target with the source's columns and primary key, or set sink.create_tables: true`,
    );
  }
  const wanted = [VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, ...(softDelete ? [DELETED_AT_COLUMN] : []), ...(writerColumns ? [SOURCE_COLUMN, CLOCK_COLUMN, WRITER_XID_COLUMN] : [])];
  if (wanted.some((c) => !meta?.columns.has(c))) {
    await client.query(
      `ALTER TABLE ${meta.qualified} ADD COLUMN IF NOT EXISTS ${quoteIdent(VERSION_LSN_COLUMN)} pg_lsn, ` +
        `ADD COLUMN IF NOT EXISTS ${quoteIdent(VERSION_SEQ_COLUMN)} integer` +
        (softDelete ? `, ADD COLUMN IF NOT EXISTS ${quoteIdent(DELETED_AT_COLUMN)} timestamptz` : '') +
        (writerColumns
          ? `, ADD COLUMN IF NOT EXISTS ${quoteIdent(SOURCE_COLUMN)} text, ADD COLUMN IF NOT EXISTS ${quoteIdent(CLOCK_COLUMN)} timestamptz, ` +
            `ADD COLUMN IF NOT EXISTS ${quoteIdent(WRITER_XID_COLUMN)} bigint`
          : ''),
    );
    meta = await readTable(client, schema, table);
    if (!meta) throw new Error(`target table ${tableLabelOf({ schema, table })} vanished`);
  }
  return meta;
}

async function readTable(client: pg.PoolClient | pg.Client, schema: string, table: string): Promise<TargetTable | undefined> {
  const qualified = quoteQualified(schema, table);
  const { rows } = await client.query<{ name: string; type_schema: string; type_name: string; exact_type: string; is_pk: boolean; deferrable: boolean; assignable: boolean }>(
    `SELECT a.attname AS name, n.nspname AS type_schema, t.typname AS type_name, format_type(a.atttypid, a.atttypmod) AS exact_type,
            coalesce(a.attnum = ANY(i.indkey), false) AS is_pk, coalesce(NOT i.indimmediate, false) AS deferrable,
            a.attidentity <> 'a' AND a.attgenerated = '' AS assignable
       FROM pg_attribute a
       JOIN pg_type t ON t.oid = a.atttypid
       JOIN pg_namespace n ON n.oid = t.typnamespace
       LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [qualified],
  );
  if (rows.length === 0) return undefined;
  const columns = new Map<string, TargetColumn>();
  const primaryKey: string[] = [];
  for (const r of rows) {
    columns.set(r.name, { name: r.name, castType: quoteQualified(r.type_schema, r.type_name), exactType: r.exact_type, assignable: r.assignable });
    if (r.is_pk) primaryKey.push(r.name);
  }
  return { label: tableLabelOf({ schema, table }), qualified, columns, primaryKey, deferrableKey: rows.some((r) => r.deferrable) };
}
