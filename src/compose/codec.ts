import type { SynclineConfig } from '../config/schema.js';
import type { ChangeCodec } from '../schema/change-codec.js';
import { JsonChangeCodec } from '../schema/json-change-codec.js';
import { embeddedStreamPath } from './stream.js';

/**
 * The codec of `stream.format` (capture encodes with it, apply decodes with it). The typed
 * formats' libraries (avsc, protobufjs) are loaded only for them: a JSON pipeline starts
 * without them.
 */
export async function openCodec(config: SynclineConfig, baseDir = process.cwd()): Promise<ChangeCodec> {
  const s = config.stream;
  if (s.format === 'json') return new JsonChangeCodec();
  const { createChangeCodec } = await import('../schema/create-codec.js');
  return createChangeCodec({
    format: s.format,
    schemaRegistry: s.schema_registry,
    ...(s.schema_registry_url ? { schemaRegistryUrl: s.schema_registry_url } : {}),
    subjectStrategy: s.subject_strategy,
    compatibility: s.schema_compatibility,
    topic: s.topic,
    ...(s.broker === 'embedded' ? { streamPath: embeddedStreamPath(config, baseDir) } : {}),
  });
}
