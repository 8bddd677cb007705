import type pg from 'pg';
import type { TableName } from '../core/sql.js';
import type { SourceTableShape } from '../sink/mapped-sink.js';
import { primaryKeyOf, sourceColumns } from '../source/table-definition.js';

/** The shapes of `tables` at the source (undefined for a missing table), for MappedSink's checks. */
export async function readSourceShapes(source: pg.ClientBase, tables: readonly TableName[]): Promise<(SourceTableShape | undefined)[]> {
  const out: (SourceTableShape | undefined)[] = [];
  for (const t of tables) {
    const cols = await sourceColumns(source, t);
    out.push(cols.length === 0 ? undefined : { columns: cols.map((c) => c.name), primaryKey: primaryKeyOf(cols) });
  }
  return out;
}
