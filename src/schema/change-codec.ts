/**
 * How change events become stream records and back, per `stream.format`.
 *
 *   json         today's envelope: the event as JSON, the key `partitionKeyOf(change)`.
 *   avro | json_schema | protobuf
 *                the Confluent wire format (wire-format.ts): each table definition (one per
 *                `_schema_version`) is registered once under its subjects (subject.ts) in a
 *                SchemaStore (a Confluent-compatible registry, or a local file for the
 *                embedded stream), and every record carries the id of its schema.
 *
 * Decoding needs no configuration: a record starting with `{` is JSON, one starting with the
 * magic byte 0 is looked up by schema id (once per id) whatever its format, so a stream whose
 * format changed still reads from its beginning.
 */
import type { ChangeEvent } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import { AvroTableCodec, avroKeySchema, avroValueSchema } from './avro-format.js';
import { planColumns, type SchemaFormat } from './column-plan.js';
import { JsonSchemaTableCodec, jsonKeySchema, jsonValueSchema } from './json-schema-format.js';
import { ProtobufTableCodec, protobufKeySchema, protobufValueSchema } from './protobuf-format.js';
import { oncePerKey } from './once-per-key.js';
import type { SchemaMeta } from './schema-meta.js';
import type { RegisteredSchema, SchemaStore, SchemaType } from './schema-store.js';
import { subjectsOf, type SubjectStrategy } from './subject.js';
import type { TableDefinition } from './table-definition.js';
import { JsonChangeCodec } from './json-change-codec.js';
import { frame, isFramed, schemaIdOf, unframe } from './wire-format.js';

export { JsonChangeCodec };

export type StreamFormat = 'json' | SchemaFormat;

export interface EncodedChange {
  /** The record key: json, the partition key text; otherwise the key columns in the key schema. */
  key: Buffer;
  value: Buffer;
}

export interface ChangeCodec {
  readonly format: StreamFormat;
  /**
   * The record of a change. `definition` is the table's definition for the change's
   * `_schema_version` (see TableDefinition: what capture passes). Rejects with a permanent
   * SynclineError when the change does not fit its definition or the registry refuses the
   * schema (SCHEMA_MISMATCH, SCHEMA_VALUE, SCHEMA_INCOMPATIBLE), with a retriable one while
   * the registry is unreachable.
   */
  encode(change: ChangeEvent, definition: TableDefinition): Promise<EncodedChange>;
  /** The change of a record; SCHEMA_UNKNOWN (permanent) for a schema id the store does not know. */
  decode(value: Buffer): Promise<ChangeEvent>;
}

interface TableCodec {
  readonly meta: SchemaMeta;
  encodeValue(change: ChangeEvent): Buffer;
  encodeKey(key: ChangeEvent['key']): Buffer;
  decodeValue(payload: Buffer): ChangeEvent;
}

interface Writer {
  codec: TableCodec;
  valueId: number;
  keyId: number;
}

const SCHEMA_TYPE: Record<SchemaFormat, SchemaType> = { avro: 'AVRO', json_schema: 'JSON', protobuf: 'PROTOBUF' };

export interface SchemaCodecOptions {
  format: SchemaFormat;
  store: SchemaStore;
  /** The stream topic (subject names). */
  topic: string;
  subjectStrategy: SubjectStrategy;
}

/** `stream.format: avro | json_schema | protobuf` over a SchemaStore. */
export class SchemaChangeCodec implements ChangeCodec {
  readonly format: SchemaFormat;
  private readonly writers = new Map<string, Promise<Writer>>();
  private readonly readers = new Map<number, Promise<TableCodec>>();
  private readonly json = new JsonChangeCodec();

  constructor(private readonly options: SchemaCodecOptions) {
    this.format = options.format;
  }

  async encode(change: ChangeEvent, definition: TableDefinition): Promise<EncodedChange> {
    if (change.schema !== definition.schema || change.table !== definition.table || change._schema_version !== definition.schemaVersion) {
      throw new SynclineError(
        'SCHEMA_MISMATCH',
        `change of ${change.schema}.${change.table} _schema_version ${change._schema_version} was passed the definition of ${definition.schema}.${definition.table} _schema_version ${definition.schemaVersion}`,
        { retriable: false },
      );
    }
    const w = await this.writerOf(definition);
    const indexes = this.format === 'protobuf' ? ProtobufTableCodec.MESSAGE_INDEXES : undefined;
    return { key: frame(w.keyId, w.codec.encodeKey(change.key), indexes), value: frame(w.valueId, w.codec.encodeValue(change), indexes) };
  }

  async decode(value: Buffer): Promise<ChangeEvent> {
    if (!isFramed(value)) return this.json.decode(value);
    const id = schemaIdOf(value);
    const codec = await this.readerOf(id);
    return codec.decodeValue(unframe(value, codec instanceof ProtobufTableCodec).payload);
  }

  private writerOf(d: TableDefinition): Promise<Writer> {
    return oncePerKey(this.writers, `${d.schema}\u0000${d.table}\u0000${d.schemaVersion}`, () => this.register(d));
  }

  private async register(d: TableDefinition): Promise<Writer> {
    const meta: SchemaMeta = { format: this.format, schema: d.schema, table: d.table, schema_version: d.schemaVersion, columns: planColumns(d, this.format) };
    const { value, key } = schemaTexts(meta);
    const subjects = subjectsOf(this.options.subjectStrategy, this.options.topic, d);
    const schemaType = SCHEMA_TYPE[this.format];
    // The key first: a value is never published whose key schema is missing.
    const keyId = await this.options.store.register(subjects.key, { schemaType, schema: key });
    const valueId = await this.options.store.register(subjects.value, { schemaType, schema: value });
    const codec = tableCodecOf(meta.format, value, valueId);
    this.readers.set(valueId, Promise.resolve(codec));
    return { codec, valueId, keyId };
  }

  private readerOf(id: number): Promise<TableCodec> {
    return oncePerKey(this.readers, id, async () => readerOf(await this.options.store.schemaById(id), id));
  }
}

function schemaTexts(meta: SchemaMeta): { value: string; key: string } {
  switch (meta.format) {
    case 'avro':
      return { value: avroValueSchema(meta), key: avroKeySchema(meta) };
    case 'json_schema':
      return { value: jsonValueSchema(meta), key: jsonKeySchema(meta) };
    case 'protobuf':
      return { value: protobufValueSchema(meta), key: protobufKeySchema(meta) };
  }
}

function tableCodecOf(format: SchemaFormat, schemaText: string, id: number): TableCodec {
  switch (format) {
    case 'avro':
      return AvroTableCodec.fromSchema(schemaText, id);
    case 'json_schema':
      return JsonSchemaTableCodec.fromSchema(schemaText, id);
    case 'protobuf':
      return ProtobufTableCodec.fromSchema(schemaText, id);
  }
}

function readerOf(s: RegisteredSchema, id: number): TableCodec {
  return tableCodecOf(s.schemaType === 'AVRO' ? 'avro' : s.schemaType === 'JSON' ? 'json_schema' : 'protobuf', s.schema, id);
}
