import type { ValueKind } from './pg-values.js';
import { schemaName } from './names.js';
import type { DefinitionColumn, TableDefinition } from './table-definition.js';

export type SchemaFormat = 'avro' | 'json_schema' | 'protobuf';

/** How one column travels in one format: the plan a schema is built from and decoded by. */
export interface ColumnPlan {
  /** The PostgreSQL column name. */
  name: string;
  /** Its name in the schema (see names.ts). */
  field: string;
  kind: ValueKind;
  /** numeric(p,s) carried as a decimal: its precision and scale. */
  precision?: number;
  scale?: number;
  key: boolean;
  /** Protobuf field number: attnum, else the 1-based position. */
  number: number;
  /** For the schema's documentation: format_type, else the type OID. */
  pgType: string;
  /**
   * A kind the format carries as its text (kind `string`) though it has a typed form
   * elsewhere, e.g. int8 in JSON Schema: a schema may declare what a widening to it needs.
   */
  textFor?: ValueKind;
}

// Built-in type OIDs (pg_type.dat).
const OID = {
  bool: 16, bytea: 17, int8: 20, int2: 21, int4: 23, float4: 700, float8: 701,
  date: 1082, time: 1083, timestamp: 1114, timestamptz: 1184, numeric: 1700, uuid: 2950,
} as const;

/**
 * The kind of a PostgreSQL type in a typed format (before the format's own limits, see
 * `planColumns`). Every type not listed here travels as its text (`string`): text, varchar,
 * json, jsonb, arrays, interval, timetz, money, enums, domains, composites...
 */
export function kindOf(column: Pick<DefinitionColumn, 'typeOid' | 'typeMod'>): { kind: ValueKind; precision?: number; scale?: number } {
  switch (column.typeOid) {
    case OID.int2:
    case OID.int4:
      return { kind: 'int' };
    case OID.int8:
      return { kind: 'long' };
    case OID.float4:
      return { kind: 'float4' };
    case OID.float8:
      return { kind: 'float8' };
    case OID.bool:
      return { kind: 'bool' };
    case OID.bytea:
      return { kind: 'bytes' };
    case OID.date:
      return { kind: 'date' };
    case OID.time:
      return { kind: 'time' };
    case OID.timestamp:
      return { kind: 'timestamp' };
    case OID.timestamptz:
      return { kind: 'timestamptz' };
    case OID.uuid:
      return { kind: 'uuid' };
    case OID.numeric: {
      // typmod = ((precision << 16) | scale as 11-bit two's complement) + 4; -1: unconstrained.
      // Unconstrained numeric prints each value with its own scale ('1.5', '1.50'), which a
      // fixed-scale decimal cannot keep: it travels as text (never as a float).
      if (column.typeMod < 4) return { kind: 'string' };
      const precision = ((column.typeMod - 4) >> 16) & 0xffff;
      const scale = ((((column.typeMod - 4) & 0x7ff) ^ 1024) - 1024);
      // PostgreSQL 15 allows negative scales and scales above the precision; Avro's decimal does not.
      if (scale < 0 || scale > precision || precision < 1) return { kind: 'string' };
      return { kind: 'decimal', precision, scale };
    }
    default:
      return { kind: 'string' };
  }
}

/** The kinds each format carries typed; the others fall back to the text (`string`). */
const TYPED: Record<SchemaFormat, ReadonlySet<ValueKind>> = {
  avro: new Set<ValueKind>(['int', 'long', 'float4', 'float8', 'bool', 'bytes', 'decimal', 'timestamptz', 'timestamp', 'date', 'time', 'uuid']),
  // Protobuf has no decimal type, and its scalar fields no text branch for the dates and
  // timestamps without a typed form (infinity): numeric, date and timestamps keep their text.
  protobuf: new Set<ValueKind>(['int', 'long', 'float4', 'float8', 'bool', 'bytes', 'time', 'uuid']),
  // JSON numbers beyond 2^53 lose digits in JavaScript and many other parsers: only the
  // kinds every JSON reader gets exactly are typed; int8, numeric, dates... keep their text.
  json_schema: new Set<ValueKind>(['int', 'float4', 'float8', 'bool']),
};

/** The column plans of a definition in one format, in the table's column order. */
export function planColumns(definition: TableDefinition, format: SchemaFormat): ColumnPlan[] {
  return definition.columns.map((c, i) => {
    const k = kindOf(c);
    const typed = TYPED[format].has(k.kind);
    const plan: ColumnPlan = { name: c.name, field: schemaName(c.name), kind: typed ? k.kind : 'string', key: c.key, number: c.attnum ?? i + 1, pgType: c.typeName ?? `oid ${c.typeOid}` };
    if (!typed && k.kind !== 'string') plan.textFor = k.kind;
    if (typed && k.kind === 'decimal') {
      plan.precision = k.precision;
      plan.scale = k.scale;
    }
    return plan;
  });
}
