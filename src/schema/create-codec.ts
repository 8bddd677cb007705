import { join } from 'node:path';
import { SynclineError } from '../core/errors.js';
import { JsonChangeCodec, SchemaChangeCodec, type ChangeCodec, type StreamFormat } from './change-codec.js';
import { LocalSchemaStore } from './local-schema-store.js';
import { SchemaRegistryClient, type CompatibilityLevel } from './registry-client.js';
import type { SubjectStrategy } from './subject.js';

/** The `stream` settings a codec needs (config keys in parentheses). */
export interface CodecSettings {
  format: StreamFormat; // stream.format
  schemaRegistry: boolean; // stream.schema_registry
  schemaRegistryUrl?: string; // stream.schema_registry_url / SYNCLINE_SCHEMA_REGISTRY_URL
  subjectStrategy: SubjectStrategy; // stream.subject_strategy
  compatibility: CompatibilityLevel; // stream.schema_compatibility
  topic: string; // stream.topic
  /** The embedded stream's directory (stream.path): the local schema file lives there. */
  streamPath?: string;
}

/** The local schema file of an embedded stream. */
export function localSchemaFile(streamPath: string): string {
  return join(streamPath, 'schemas.jsonl');
}

/** The codec capture encodes with and apply decodes with. */
export function createChangeCodec(s: CodecSettings): ChangeCodec {
  if (s.format === 'json') return new JsonChangeCodec();
  let store;
  if (s.schemaRegistry) {
    if (!s.schemaRegistryUrl) {
      throw new SynclineError('CONFIG_INVALID', `stream.format ${s.format} with stream.schema_registry needs stream.schema_registry_url (or SYNCLINE_SCHEMA_REGISTRY_URL)`, { retriable: false });
    }
    store = new SchemaRegistryClient({ url: s.schemaRegistryUrl, compatibility: s.compatibility });
  } else {
    if (!s.streamPath) {
      throw new SynclineError('CONFIG_INVALID', `stream.format ${s.format} without a schema registry keeps schemas next to the embedded stream: set stream.schema_registry and its URL for another broker`, { retriable: false });
    }
    store = new LocalSchemaStore(localSchemaFile(s.streamPath));
  }
  return new SchemaChangeCodec({ format: s.format, store, topic: s.topic, subjectStrategy: s.subjectStrategy });
}
