import type { ColumnType } from '../core/schema-version.js';

/**
 * One definition of a source table, as the schema formats need it: what capture must pass
 * to `ChangeCodec.encode` with every change. It extends what `_schema_version` tracks
 * (`ColumnType`: name, type OID, typmod, from the Relation message) with the primary key
 * (the Relation message's key flag) and, when capture has read the catalog, the type's
 * `format_type` name and NOT NULL (documentation in the schemas only; the wire never
 * depends on them).
 */
export interface TableDefinition {
  schema: string;
  table: string;
  /** The `_schema_version` of the changes this definition describes. */
  schemaVersion: number;
  /** Every column the change rows carry, in the table's column order. */
  columns: readonly DefinitionColumn[];
}

export interface DefinitionColumn extends ColumnType {
  /** Part of the replica identity (the change's `key`): pgoutput's key flag. */
  key: boolean;
  /**
   * `pg_attribute.attnum`: the Protobuf field number, so a dropped column does not shift the
   * numbers of the others (absent: the 1-based position, which a drop does shift).
   */
  attnum?: number;
  /** `format_type(atttypid, atttypmod)`, e.g. `numeric(10,2)`; absent: unknown (documentation only). */
  typeName?: string;
  /** Documentation only: a before image (REPLICA IDENTITY DEFAULT) has nulls even in NOT NULL columns. */
  notNull?: boolean;
}

