import type pg from 'pg';
import type { SynclineConfig } from '../config/schema.js';
import { slotOf } from '../config/slot.js';
import type { RecordedColumn } from '../core/schema-evolution.js';
import { quoteQualified } from '../core/sql.js';
import { resolveTableArg } from '../core/table-arg.js';
import { sourceConnection } from '../compose/source-connection.js';
import { connectPostgres } from './connect.js';
import { diffColumns, type ColumnDiff } from './column-diff.js';

export { describeDiff, diffColumns, type ColumnDiff } from './column-diff.js';

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
    const versions = await readSchemaVersions(client, config.source.state_schema, slotOf(config).name);
    if (table === undefined) return versions;
    // As printed or as SQL: the reading with recorded definitions (see parseTableArg).
    const recorded = new Set(versions.map((v) => v.table));
    const t = resolveTableArg(table, (n) => recorded.has(`${n.schema}.${n.table}`));
    return versions.filter((v) => v.table === `${t.schema}.${t.table}`);
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
