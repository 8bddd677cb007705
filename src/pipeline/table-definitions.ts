import type { ChangeEvent } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import type { ColumnType } from '../core/schema-version.js';
import type { TableDefinition } from '../schema/table-definition.js';

/**
 * The definition of every `_schema_version` capture has handed out, by table: what a typed
 * stream format encodes each change with. The change builder records one where it learns
 * the columns (a Relation message; a snapshot chunk's column types), so a change always
 * finds the definition of its own version, also while WAL from before a DDL is replayed.
 */
export class TableDefinitions {
  private readonly byVersion = new Map<string, TableDefinition>();

  /** Records the definition of `schema.table` at `version` (the first one recorded stays). */
  record(schema: string, table: string, version: number, columns: readonly ColumnType[], isKey: (column: ColumnType, index: number) => boolean): void {
    const k = keyOf(schema, table, version);
    if (this.byVersion.has(k)) return;
    this.byVersion.set(k, {
      schema,
      table,
      schemaVersion: version,
      columns: columns.map((c, i) => ({ name: c.name, typeOid: c.typeOid, typeMod: c.typeMod, key: isKey(c, i) })),
    });
  }

  /** The definition `change` was built with. */
  of(change: ChangeEvent): TableDefinition {
    const d = this.byVersion.get(keyOf(change.schema, change.table, change._schema_version));
    if (!d) {
      throw new SynclineError('SCHEMA_DEFINITION_UNKNOWN', `no definition of ${change.schema}.${change.table} _schema_version ${change._schema_version} was seen before its change`, { retriable: false });
    }
    return d;
  }
}

function keyOf(schema: string, table: string, version: number): string {
  return `${schema}\u0000${table}\u0000${version}`;
}
