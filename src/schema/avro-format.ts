/**
 * Avro: one record schema per table version (value), and one for the key.
 *
 * Value record `<schema>.<table>` (names made Avro-safe, see names.ts) with the change
 * envelope's fields (src/core/change.ts): strings for source, schema, table, op, LSNs,
 * commit_ts and _version (a 96-bit decimal: beyond long); long xid and seq; int
 * _schema_version; `key` a `Key` record or null (no key: TRUNCATE, keyless table);
 * `payload`/`before` a `Row` record or null; `unchanged` an array of column names or null;
 * booleans for the optional flags (absent = false). Row fields are all `["null", T]` with
 * default null (a before image of REPLICA IDENTITY DEFAULT has nulls in NOT NULL columns,
 * and nullable-with-default fields let an added column pass BACKWARD compatibility);
 * decimals, dates and timestamps are `["null", T, "string"]`: the string branch carries
 * their values without a typed form (NaN, infinity: see pg-values.ts textOf).
 * Unions are written wrapped (`{"long": v}`), as avsc needs for bigint longs.
 */
import avro from 'avsc';
import type { ChangeEvent, Row } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import type { ColumnPlan } from './column-plan.js';
import { decimalFromBytes, decimalToBytes, textOf, typedValueOf, type TypedValue } from './pg-values.js';
import { schemaName } from './names.js';
import { parseMeta, type SchemaMeta } from './schema-meta.js';
import { checkRowColumns, eventFromEnvelope, type RowCodec } from './envelope.js';

type AvroSchema = Record<string, unknown> | string | unknown[];

/** The Avro type of a column's values (without the null branch). */
function avroTypeOf(c: ColumnPlan): AvroSchema {
  switch (c.kind) {
    case 'int':
      return 'int';
    case 'long':
      return 'long';
    case 'float4':
      return 'float';
    case 'float8':
      return 'double';
    case 'bool':
      return 'boolean';
    case 'bytes':
      return 'bytes';
    case 'decimal':
      return { type: 'bytes', logicalType: 'decimal', precision: c.precision, scale: c.scale };
    case 'timestamptz':
      return { type: 'long', logicalType: 'timestamp-micros' };
    case 'timestamp':
      return { type: 'long', logicalType: 'local-timestamp-micros' };
    case 'date':
      return { type: 'int', logicalType: 'date' };
    case 'time':
      return { type: 'long', logicalType: 'time-micros' };
    case 'uuid':
      return { type: 'string', logicalType: 'uuid' };
    case 'string':
      return 'string';
  }
}

const TEXT_BRANCH = new Set<ColumnPlan['kind']>(['decimal', 'timestamptz', 'timestamp', 'date']);

/** The name of a column type's union branch: its underlying Avro type. */
function branchOf(c: ColumnPlan): string {
  const t = avroTypeOf(c);
  return typeof t === 'string' ? t : (t as { type: string }).type;
}

function rowFields(columns: readonly ColumnPlan[]): unknown[] {
  return columns.map((c) => {
    const t = avroTypeOf(c);
    const branches = TEXT_BRANCH.has(c.kind) ? ['null', t, 'string'] : ['null', t];
    return { name: c.field, type: branches, default: null, doc: `${c.name}: PostgreSQL ${c.pgType}` };
  });
}

function names(meta: Pick<SchemaMeta, 'schema' | 'table'>): { namespace: string; name: string } {
  return { namespace: schemaName(meta.schema), name: schemaName(meta.table) };
}

/** The key schema: `["null", Key]` (null for a change without a key). */
export function avroKeySchema(meta: SchemaMeta): string {
  const { namespace, name } = names(meta);
  const key = { type: 'record', name: 'Key', namespace: `${namespace}.${name}`, fields: rowFields(meta.columns.filter((c) => c.key)) };
  return JSON.stringify(['null', key]);
}

export function avroValueSchema(meta: SchemaMeta): string {
  const { namespace, name } = names(meta);
  const inner = `${namespace}.${name}`;
  const nullable = (t: AvroSchema): unknown => ({ type: ['null', t], default: null });
  const fields = [
    { name: 'source', type: 'string' },
    { name: 'schema', type: 'string' },
    { name: 'table', type: 'string' },
    { name: 'op', type: 'string' },
    { name: 'lsn', type: 'string' },
    { name: 'commit_lsn', type: 'string' },
    { name: 'xid', type: 'long' },
    { name: 'seq', type: 'long' },
    { name: 'commit_ts', type: 'string' },
    { name: 'key', ...(nullable({ type: 'record', name: 'Key', namespace: inner, fields: rowFields(meta.columns.filter((c) => c.key)) }) as object) },
    { name: 'payload', ...(nullable({ type: 'record', name: 'Row', namespace: inner, fields: rowFields(meta.columns) }) as object) },
    { name: 'before', ...(nullable(`${inner}.Row`) as object) },
    { name: 'unchanged', ...(nullable({ type: 'array', items: 'string' }) as object) },
    { name: 'superseded_at_source', type: 'boolean', default: false },
    { name: '_version', type: 'string' },
    { name: '_schema_version', type: 'int' },
    { name: 'tx_last', type: 'boolean', default: false },
    { name: 'tx_prev', ...(nullable('string') as object) },
    { name: 'snapshot_reset', type: 'boolean', default: false },
  ];
  return JSON.stringify({
    type: 'record',
    name,
    namespace,
    doc: `syncline change of ${meta.schema}.${meta.table}, _schema_version ${meta.schema_version}`,
    fields,
    syncline: meta,
  });
}

/** Avro longs as bigint (avsc's default, a JS number, rounds int8 values beyond 2^53). */
const longBytes = Buffer.alloc(8);

export const bigLong = avro.types.LongType.__with({
  fromBuffer: (b: Buffer) => b.readBigInt64LE(0),
  // avsc packs the bytes before asking for the next long: one buffer serves every call.
  toBuffer: (n: bigint) => {
    longBytes.writeBigInt64LE(n, 0);
    return longBytes;
  },
  fromJSON: (v: number | string) => BigInt(v),
  toJSON: (n: bigint) => Number(n),
  isValid: (n: unknown) => typeof n === 'bigint',
  compare: (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0),
});

export function avroType(schemaText: string): avro.Type {
  return avro.Type.forSchema(JSON.parse(schemaText) as avro.Schema, {
    wrapUnions: true,
    // Every long, also under a logical type (timestamp-micros...), as bigint.
    typeHook: (schema: avro.Schema) => (schema === 'long' || (typeof schema === 'object' && (schema as { type?: unknown }).type === 'long') ? bigLong : undefined),
  });
}

/** Row values as wrapped union branches: `{ <branch>: value }`. */
const avroRows: RowCodec = {
  toWire(c, text) {
    const v = typedValueOf(c.kind, text, c.scale);
    if (typeof v === 'string') return { string: v };
    // Literal keys, not a computed one: one object shape per branch (this runs per value).
    switch (c.kind) {
      case 'int':
      case 'date':
        return { int: v };
      case 'long':
      case 'timestamptz':
      case 'timestamp':
      case 'time':
        return { long: v };
      case 'float4':
        return { float: v };
      case 'float8':
        return { double: v };
      case 'bool':
        return { boolean: v };
      case 'bytes':
        return { bytes: v };
      case 'decimal':
        return { bytes: decimalToBytes(v as bigint) };
      default:
        return { string: v };
    }
  },
  fromWire(c, wrapped) {
    const w = wrapped as Record<string, unknown>;
    if (w.string !== undefined) return w.string as string;
    const v = w[branchOf(c)];
    return c.kind === 'decimal' ? textOf('decimal', decimalFromBytes(v as Buffer), c.scale) : textOf(c.kind, v as TypedValue);
  },
};

/** Encodes and decodes the records of one Avro value schema. */
export class AvroTableCodec {
  private readonly type: avro.Type;
  private readonly keyType: avro.Type;
  private readonly keyColumns: ColumnPlan[];
  /** Full names of the Key and Row records: their union branch names. */
  private readonly keyName: string;
  private readonly rowName: string;

  constructor(readonly meta: SchemaMeta, valueSchema = avroValueSchema(meta), keySchema = avroKeySchema(meta)) {
    this.type = avroType(valueSchema);
    this.keyType = avroType(keySchema);
    this.keyColumns = meta.columns.filter((c) => c.key);
    const { namespace, name } = names(meta);
    this.keyName = `${namespace}.${name}.Key`;
    this.rowName = `${namespace}.${name}.Row`;
  }

  static fromSchema(schemaText: string, id: number): AvroTableCodec {
    const parsed = JSON.parse(schemaText) as { syncline?: unknown };
    return new AvroTableCodec(parseMeta(parsed.syncline, id), schemaText);
  }

  encodeValue(change: ChangeEvent): Buffer {
    const cols = this.meta.columns;
    // Every field spelled out (not `...change`): one object shape, twice as fast in avsc.
    return this.type.toBuffer({
      source: change.source,
      schema: change.schema,
      table: change.table,
      op: change.op,
      lsn: change.lsn,
      commit_lsn: change.commit_lsn,
      xid: BigInt(change.xid),
      seq: BigInt(change.seq),
      commit_ts: change.commit_ts,
      key: this.keyRecord(change.key),
      payload: change.payload ? { [this.rowName]: rowRecord(cols, change.payload, change.unchanged) } : null,
      before: change.before ? { [this.rowName]: rowRecord(cols, change.before, undefined) } : null,
      unchanged: change.unchanged ? { array: change.unchanged } : null,
      superseded_at_source: change.superseded_at_source === true,
      _version: change._version,
      _schema_version: change._schema_version,
      tx_last: change.tx_last === true,
      tx_prev: change.tx_prev === undefined ? null : { string: change.tx_prev },
      snapshot_reset: change.snapshot_reset === true,
    });
  }

  encodeKey(key: Row): Buffer {
    return this.keyType.toBuffer(this.keyRecord(key));
  }

  decodeValue(payload: Buffer): ChangeEvent {
    let v: AvroEnvelope;
    try {
      v = this.type.fromBuffer(payload) as AvroEnvelope;
    } catch (err) {
      throw new SynclineError('EVENT_MALFORMED', `Avro record of ${this.meta.schema}.${this.meta.table} does not match its schema: ${(err as Error).message}`, { retriable: false });
    }
    return eventFromEnvelope(
      {
        ...v,
        xid: Number(v.xid),
        seq: Number(v.seq),
        key: v.key?.[this.keyName],
        payload: v.payload?.[this.rowName],
        before: v.before?.[this.rowName],
        tx_prev: v.tx_prev?.string,
        unchanged: v.unchanged?.array,
      },
      this.meta.columns,
      avroRows,
      (r) => r,
    );
  }

  private keyRecord(key: Row): Record<string, unknown> | null {
    for (const _ in key) return { [this.keyName]: rowRecord(this.keyColumns, key, undefined) };
    return null;
  }
}

interface AvroEnvelope {
  source: string;
  schema: string;
  table: string;
  op: ChangeEvent['op'];
  lsn: string;
  commit_lsn: string;
  xid: bigint;
  seq: bigint;
  commit_ts: string;
  key: Record<string, Record<string, unknown>> | null;
  payload: Record<string, Record<string, unknown>> | null;
  before: Record<string, Record<string, unknown>> | null;
  unchanged: { array: string[] } | null;
  superseded_at_source: boolean;
  _version: string;
  _schema_version: number;
  tx_last: boolean;
  tx_prev: { string: string } | null;
  snapshot_reset: boolean;
}

function rowRecord(cols: readonly ColumnPlan[], row: Row, unchanged: readonly string[] | undefined): Record<string, unknown> {
  checkRowColumns(cols, row, unchanged);
  const out: Record<string, unknown> = {};
  for (const c of cols) {
    const text = row[c.name];
    out[c.field] = text === undefined || text === null ? null : avroRows.toWire(c, text);
  }
  return out;
}
