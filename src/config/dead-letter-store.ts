import type { SynclineConfig } from './schema.js';

/** `dead_letter.store`, defaulted: the topic on Kafka unless `dead_letter.url` is set, else the table. */
export function deadLetterStoreOf(config: SynclineConfig): 'topic' | 'table' {
  return config.dead_letter.store ?? (config.stream.broker === 'kafka' && !config.dead_letter.url ? 'topic' : 'table');
}
