import type { SynclineConfig } from '../config/schema.js';
import { createChangeCodec, type ChangeCodec } from '../schema/index.js';
import { embeddedStreamPath } from './stream.js';

/** The codec of `stream.format` (capture encodes with it, apply decodes with it). */
export function openCodec(config: SynclineConfig, baseDir = process.cwd()): ChangeCodec {
  const s = config.stream;
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
