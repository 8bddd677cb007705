import type pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { slotOf } from '../config/slot.js';
import type { RecordedColumn } from '../core/schema-evolution.js';
import { parseTableName, quoteQualified } from '../core/sql.js';
import { sourceConnection } from '../compose/source-connection.js';
import { connectPostgres } from './connect.js';

/** What changed from one definition of a table to the next. */
export interface ColumnDiff {
  added: RecordedColumn[];
  dropped: RecordedColumn[];
  /** Same attnum, another name. */
  renamed: { from: string; to: string }[];
  retyped: { column: string; from: string; to: string }[];
}

/** One `_schema_version` of a table, as capture recorded it in the source. */
export interface SchemaVersionReport {
  /** `schema.table`. */
  table: string;
  version: number;
  /** The WAL position where capture first met the definition. */
  firstLsn: string;
  recordedAt: string;
  /** Null for a definition recorded before columns were (syncline before 0.x). */
  columns: RecordedColumn[] | null;
  /** Against the previous version; null for the first one, or when either has no columns. */
  diff: ColumnDiff | null;
}

/** `syncline schemas`: the definitions of the slot's tables (or of `table`), oldest first per table. */
export async function collectSchemaVersions(config: SynclineConfig, table?: string): Promise<SchemaVersionReport[]> {
  const client = await connectPostgres(sourceConnection(config));
  try {
    return await readSchemaVersions(client, config.source.state_schema, slotOf(config).name, table === undefined ? undefined : parseTableName(table));
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The recorded definitions of `slot` (none before capture first ran). */
export async function readSchemaVersions(client: pg.ClientBase, stateSchema: string, slot: string, only?: { schema: string; table: string }): Promise<SchemaVersionReport[]> {
  const { rows: exists } = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [quoteQualified(stateSchema, 'schema_versions')]);
  if (!exists[0]?.t) return [];
  const { rows: hasColumns } = await client.query(
    `SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'columns' AND NOT attisdropped`,
    [quoteQualified(stateSchema, 'schema_versions')],
  );
  const { rows } = await client.query<{ table_schema: string; table_name: string; version: number; first_lsn: string; recorded_at: Date; columns: RecordedColumn[] | null }>(
    `SELECT table_schema, table_name, version, first_lsn::text, recorded_at, ${hasColumns.length > 0 ? 'columns' : 'NULL::jsonb AS columns'}
       FROM ${quoteQualified(stateSchema, 'schema_versions')}
      WHERE slot_name = $1 AND ($2::text IS NULL OR (table_schema = $2 AND table_name = $3))
      ORDER BY table_schema, table_name, version`,
    [slot, only?.schema ?? null, only?.table ?? null],
  );
  const out: SchemaVersionReport[] = [];
  for (const [i, r] of rows.entries()) {
    const prev = rows[i - 1];
    const sameTable = prev !== undefined && prev.table_schema === r.table_schema && prev.table_name === r.table_name;
    out.push({
      table: `${r.table_schema}.${r.table_name}`,
      version: r.version,
      firstLsn: r.first_lsn,
      recordedAt: r.recorded_at.toISOString(),
      columns: r.columns,
      diff: sameTable && prev.columns && r.columns ? diffColumns(prev.columns, r.columns) : null,
    });
  }
  return out;
}

/** The newest definition of each table (what `syncline status` shows). */
export function latestVersions(versions: readonly SchemaVersionReport[]): SchemaVersionReport[] {
  const latest = new Map<string, SchemaVersionReport>();
  for (const v of versions) latest.set(v.table, v);
  return [...latest.values()];
}

/**
 * Columns added, dropped, renamed (same attnum, another name: PostgreSQL keeps the attnum of
 * a renamed column and never reuses a dropped one's) and retyped (same name, another type).
 */
export function diffColumns(before: readonly RecordedColumn[], after: readonly RecordedColumn[]): ColumnDiff {
  const diff: ColumnDiff = { added: [], dropped: [], renamed: [], retyped: [] };
  const byAttnum = (cols: readonly RecordedColumn[]): Map<number, RecordedColumn> => new Map(cols.flatMap((c) => (c.attnum === null ? [] : [[c.attnum, c] as const])));
  const beforeNum = byAttnum(before);
  const afterNum = byAttnum(after);
  const renamedFrom = new Set<string>();
  const renamedTo = new Set<string>();
  for (const [n, a] of afterNum) {
    const b = beforeNum.get(n);
    if (b && b.name !== a.name && !after.some((c) => c.name === b.name) && !before.some((c) => c.name === a.name)) {
      diff.renamed.push({ from: b.name, to: a.name });
      renamedFrom.add(b.name);
      renamedTo.add(a.name);
    }
  }
  for (const a of after) {
    const b = before.find((c) => c.name === a.name) ?? (renamedTo.has(a.name) ? before.find((c) => c.attnum === a.attnum) : undefined);
    if (!b) diff.added.push(a);
    else if (b.type !== a.type) diff.retyped.push({ column: a.name, from: b.type, to: a.type });
  }
  for (const b of before) if (!renamedFrom.has(b.name) && !after.some((c) => c.name === b.name)) diff.dropped.push(b);
  return diff;
}

/** One line per change of a diff, e.g. `+ extra numeric(10,2)`. */
export function describeDiff(d: ColumnDiff): string[] {
  return [
    ...d.added.map((c) => `+ ${c.name} ${c.type}${c.not_null ? ' NOT NULL' : ''}`),
    ...d.dropped.map((c) => `- ${c.name} ${c.type}`),
    ...d.renamed.map((r) => `~ ${r.from} renamed to ${r.to}`),
    ...d.retyped.map((r) => `~ ${r.column} ${r.from} -> ${r.to}`),
  ];
}
