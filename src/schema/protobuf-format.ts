/**
 * Protobuf (proto3): one .proto file per table version, whose first message is the change
 * (so its message index is [0]: what Confluent deserializers read by default):
 *
 *   // syncline:{...metadata, see schema-meta.ts}
 *   syntax = "proto3";
 *   package syncline.<schema>.<table>;
 *   message Change {
 *     string source = 1; string schema = 2; string table = 3; string op = 4; string lsn = 5;
 *     string commit_lsn = 6; uint32 xid = 7; int64 seq = 8; string commit_ts = 9;
 *     Key key = 10; Row payload = 11; Row before = 12; repeated string unchanged = 13;
 *     bool superseded_at_source = 14; string _version = 15; int32 _schema_version = 16;
 *     bool tx_last = 17; optional string tx_prev = 18; bool snapshot_reset = 19;
 *     message Key { ... key columns ... }  message Row { optional <type> <column> = <attnum>; ... }
 *   }
 *
 * Column fields are `optional` (presence tells null from a zero value), numbered by attnum.
 * int8 and the µs timestamps are int64 (read as text/bigint here: never a float).
 */
import protobuf from 'protobufjs';
import type { ChangeEvent, Row } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import type { ColumnPlan } from './column-plan.js';
import { checkRowColumns, eventFromEnvelope, type RowCodec, type WireEnvelope } from './envelope.js';
import { schemaName } from './names.js';
import { textOf, typedValueOf, type TypedValue } from './pg-values.js';
import { META_MARK, parseMeta, type SchemaMeta } from './schema-meta.js';

function protoTypeOf(c: ColumnPlan): string {
  switch (c.kind) {
    case 'int':
    case 'date':
      return 'int32';
    case 'long':
    case 'timestamptz':
    case 'timestamp':
    case 'time':
      return 'int64';
    case 'float4':
      return 'float';
    case 'float8':
      return 'double';
    case 'bool':
      return 'bool';
    case 'bytes':
      return 'bytes';
    default:
      return 'string';
  }
}

function packageOf(meta: SchemaMeta): string {
  return `syncline.${schemaName(meta.schema)}.${schemaName(meta.table)}`;
}

function fieldsOf(cols: readonly ColumnPlan[]): string {
  return cols.map((c) => `    optional ${protoTypeOf(c)} ${c.field} = ${c.number}; // ${c.name}: PostgreSQL ${c.pgType.replace(/[\r\n]/g, ' ')}\n`).join('');
}

function header(meta: SchemaMeta): string {
  return `// ${META_MARK}${JSON.stringify(meta)}\nsyntax = "proto3";\npackage ${packageOf(meta)};\n`;
}

export function protobufKeySchema(meta: SchemaMeta): string {
  return `${header(meta)}\nmessage Key {\n${fieldsOf(meta.columns.filter((c) => c.key))}}\n`;
}

export function protobufValueSchema(meta: SchemaMeta): string {
  return `${header(meta)}
// syncline change of ${meta.schema}.${meta.table}, _schema_version ${meta.schema_version}
message Change {
  string source = 1;
  string schema = 2;
  string table = 3;
  string op = 4;
  string lsn = 5;
  string commit_lsn = 6;
  uint32 xid = 7;
  int64 seq = 8;
  string commit_ts = 9;
  Key key = 10;
  Row payload = 11;
  Row before = 12;
  repeated string unchanged = 13;
  bool superseded_at_source = 14;
  string _version = 15;
  int32 _schema_version = 16;
  bool tx_last = 17;
  optional string tx_prev = 18;
  bool snapshot_reset = 19;
  message Key {
${fieldsOf(meta.columns.filter((c) => c.key))}  }
  message Row {
${fieldsOf(meta.columns)}  }
}
`;
}

/** The metadata line of a syncline .proto file. */
export function protobufMeta(schemaText: string, id: number): SchemaMeta {
  const at = schemaText.indexOf(`// ${META_MARK}`);
  if (at < 0) return parseMeta(undefined, id);
  const end = schemaText.indexOf('\n', at);
  return parseMeta(JSON.parse(schemaText.slice(at + 3 + META_MARK.length, end < 0 ? undefined : end)), id);
}

interface LongLike {
  toString(): string;
}

const protoRows: RowCodec = {
  toWire(c, text) {
    const v = typedValueOf(c.kind, text);
    // int64 fields take decimal strings: exact for int8 and µs timestamps alike.
    return typeof v === 'bigint' ? v.toString() : v;
  },
  fromWire(c, v) {
    switch (c.kind) {
      case 'long':
        return (v as LongLike).toString();
      case 'timestamptz':
      case 'timestamp':
      case 'time':
        return textOf(c.kind, BigInt((v as LongLike).toString()));
      case 'bytes':
        return textOf('bytes', Buffer.from(v as Uint8Array));
      default:
        return textOf(c.kind, v as TypedValue);
    }
  },
};

/** Encodes and decodes the records of one Protobuf value schema (message Change). */
export class ProtobufTableCodec {
  /** Path of `Change` in its file: the first message. */
  static readonly MESSAGE_INDEXES: readonly number[] = [0];
  private readonly change: protobuf.Type;
  private readonly key: protobuf.Type;
  private readonly keyColumns: ColumnPlan[];

  constructor(readonly meta: SchemaMeta, valueSchema = protobufValueSchema(meta)) {
    const root = protobuf.parse(valueSchema, { keepCase: true }).root;
    this.change = root.lookupType(`${packageOf(meta)}.Change`);
    this.key = root.lookupType(`${packageOf(meta)}.Change.Key`);
    this.keyColumns = meta.columns.filter((c) => c.key);
  }

  static fromSchema(schemaText: string, id: number): ProtobufTableCodec {
    return new ProtobufTableCodec(protobufMeta(schemaText, id), schemaText);
  }

  encodeValue(change: ChangeEvent): Buffer {
    const cols = this.meta.columns;
    // Every field spelled out (not `...change`): one object shape for the encoder.
    const message: Record<string, unknown> = {
      source: change.source,
      schema: change.schema,
      table: change.table,
      op: change.op,
      lsn: change.lsn,
      commit_lsn: change.commit_lsn,
      xid: change.xid,
      seq: change.seq,
      commit_ts: change.commit_ts,
      key: this.keyMessage(change.key),
      payload: change.payload ? rowMessage(cols, change.payload, change.unchanged) : null,
      before: change.before ? rowMessage(cols, change.before, undefined) : null,
      unchanged: change.unchanged ?? [],
      superseded_at_source: change.superseded_at_source === true,
      _version: change._version,
      _schema_version: change._schema_version,
      tx_last: change.tx_last === true,
      snapshot_reset: change.snapshot_reset === true,
    };
    if (change.tx_prev !== undefined) message.tx_prev = change.tx_prev;
    return Buffer.from(this.change.encode(message).finish());
  }

  /** The Kafka key: the key columns as a `Change.Key` message (empty for a change without a key). */
  encodeKey(key: Row): Buffer {
    return Buffer.from(this.key.encode(this.keyMessage(key) ?? {}).finish());
  }

  decodeValue(payload: Buffer): ChangeEvent {
    let m: Record<string, unknown>;
    try {
      m = this.change.decode(payload) as unknown as Record<string, unknown>;
    } catch (err) {
      throw new SynclineError('EVENT_MALFORMED', `Protobuf record of ${this.meta.schema}.${this.meta.table} does not match its schema: ${(err as Error).message}`, { retriable: false });
    }
    const own = (name: string): unknown => (Object.prototype.hasOwnProperty.call(m, name) ? m[name] : undefined);
    const unchanged = own('unchanged') as string[] | undefined;
    const v: WireEnvelope<Record<string, unknown>> = {
      source: m.source as string,
      schema: m.schema as string,
      table: m.table as string,
      op: m.op as ChangeEvent['op'],
      lsn: m.lsn as string,
      commit_lsn: m.commit_lsn as string,
      xid: m.xid as number,
      seq: Number((m.seq as LongLike).toString()),
      commit_ts: m.commit_ts as string,
      key: own('key') as Record<string, unknown> | undefined,
      payload: own('payload') as Record<string, unknown> | undefined,
      before: own('before') as Record<string, unknown> | undefined,
      unchanged: unchanged && unchanged.length > 0 ? unchanged : undefined,
      superseded_at_source: m.superseded_at_source as boolean,
      _version: m._version as string,
      _schema_version: m._schema_version as number,
      tx_last: m.tx_last as boolean,
      tx_prev: own('tx_prev') as string | undefined,
      snapshot_reset: m.snapshot_reset as boolean,
    };
    // Absent optional fields read as the prototype's null: only own properties were sent.
    return eventFromEnvelope(v, this.meta.columns, protoRows, (r) => ownFields(r));
  }

  private keyMessage(key: Row): Record<string, unknown> | null {
    for (const _ in key) return rowMessage(this.keyColumns, key, undefined);
    return null;
  }
}

function ownFields(r: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(r)) out[k] = r[k];
  return out;
}

function rowMessage(cols: readonly ColumnPlan[], row: Row, unchanged: readonly string[] | undefined): Record<string, unknown> {
  checkRowColumns(cols, row, unchanged);
  const out: Record<string, unknown> = {};
  for (const c of cols) {
    const text = row[c.name];
    if (text !== undefined && text !== null) out[c.field] = protoRows.toWire(c, text);
  }
  return out;
}
