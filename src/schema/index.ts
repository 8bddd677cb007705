/**
 * Schemas that travel: stream record formats (json, avro, json_schema, protobuf), the
 * Confluent wire format, a schema registry client and a local schema store. Pure parts
 * (pg-values, column-plan, *-format, wire-format, subject, names) do no I/O.
 */
export { createChangeCodec, localSchemaFile, type CodecSettings } from './create-codec.js';
export { JsonChangeCodec, SchemaChangeCodec, type ChangeCodec, type EncodedChange, type StreamFormat } from './change-codec.js';
export type { DefinitionColumn, TableDefinition } from './table-definition.js';
export { SchemaRegistryClient, type CompatibilityLevel } from './registry-client.js';
export { LocalSchemaStore } from './local-schema-store.js';
export type { SchemaStore, RegisteredSchema, SchemaType } from './schema-store.js';
export { subjectsOf, type SubjectStrategy } from './subject.js';
