import { deadLetterStoreOf } from '../config/dead-letter-store.js';
import type { SynclineConfig } from '../config/schema.js';
import { errorMessage } from '../core/errors.js';
import { connectPostgres, describeClient } from '../ops/connect.js';
import type { CheckList } from './report.js';

/** Checks that the dead-letter queue has somewhere to live (read-only: creates nothing). */
export async function checkDeadLetter(config: SynclineConfig, list: CheckList): Promise<void> {
  const d = config.dead_letter;
  if (!d.enabled) {
    list.ok('dead-letter queue', 'disabled: a change that cannot be applied stops apply until it is fixed');
    return;
  }
  if (deadLetterStoreOf(config) === 'topic') {
    if (config.stream.broker !== 'kafka') {
      list.fail('dead-letter queue', `dead_letter.store: topic needs a Kafka stream (stream.broker is ${config.stream.broker})`, 'use dead_letter.store: table with dead_letter.url, or stream.broker: kafka');
    } else list.ok('dead-letter queue', `compacted Kafka topic ${d.topic} (created on first use; the broker is checked with the stream)`);
    return;
  }
  const url = d.url ?? (config.sink.type === 'postgres' ? config.sink.url : undefined);
  if (!url) {
    list.fail(
      'dead-letter queue',
      `no PostgreSQL database for the dead-letter table (sink.type is ${config.sink.type})`,
      'set dead_letter.url (or SYNCLINE_DEAD_LETTER_URL) to a PostgreSQL URL, dead_letter.store: topic on a Kafka stream, or dead_letter.enabled: false',
    );
    return;
  }
  try {
    const client = await connectPostgres({ connectionString: url });
    try {
      list.ok('dead-letter queue', `table ${config.sink.state_schema}.dead_letter in ${describeClient(client)}`);
    } finally {
      await client.end().catch(() => undefined);
    }
  } catch (err) {
    list.fail('dead-letter queue', `cannot connect to the dead-letter database: ${errorMessage(err)}`, 'check dead_letter.url (or the postgres sink.url it defaults to)');
  }
}
