import { deadLetterStoreOf } from '../config/dead-letter-store.js';
import { sourceNameOf } from '../config/load.js';
import type { SynclineConfig } from '../config/schema.js';
import { PrerequisiteError } from '../core/errors.js';
import type { DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import { PostgresDeadLetterQueue } from '../dlq/postgres-dead-letter-queue.js';
import { TopicDeadLetterQueue } from '../dlq/topic-dead-letter-queue.js';
import type { Stream } from '../stream/stream.js';
import { kafkaBrokers } from './stream.js';

/**
 * Opens the dead-letter queue (`dead_letter.store`): a compacted Kafka topic, or a table in
 * `dead_letter.url` or a postgres sink's database.
 */
export function openDeadLetterQueue(config: SynclineConfig): DeadLetterQueue | undefined {
  const d = config.dead_letter;
  if (!d.enabled) return undefined;
  const s = config.stream;
  if (deadLetterStoreOf(config) === 'topic') {
    if (s.broker !== 'kafka') {
      throw new PrerequisiteError(`dead_letter.store: topic needs stream.broker: kafka (this config uses ${s.broker})`, 'use dead_letter.store: table with dead_letter.url, or a Kafka stream');
    }
    const brokers = kafkaBrokers(config);
    // Imported when the queue first opens its topic (see openStream: kafkajs loads only when used).
    const openTopic = async (): Promise<Stream> => (await import('../stream/kafka/kafka-stream.js')).openKafkaStream({ brokers, topic: d.topic, partitions: 1, compacted: true });
    return new TopicDeadLetterQueue(openTopic, d.topic, sourceNameOf(config));
  }
  const url = deadLetterTableUrl(config);
  if (!url) {
    throw new PrerequisiteError(
      `the dead-letter queue needs a PostgreSQL database for sink type ${config.sink.type}`,
      'set dead_letter.url (or SYNCLINE_DEAD_LETTER_URL) to a PostgreSQL URL, dead_letter.store: topic on a Kafka stream, or dead_letter.enabled: false to stop on poison changes instead',
    );
  }
  return new PostgresDeadLetterQueue(url, config.sink.state_schema, sourceNameOf(config));
}

/** The database of a table dead-letter queue: `dead_letter.url`, else a postgres sink's. */
export function deadLetterTableUrl(config: SynclineConfig): string | undefined {
  return config.dead_letter.url ?? (config.sink.type === 'postgres' ? config.sink.url : undefined);
}
