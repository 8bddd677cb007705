import type { SynclineConfig } from '../config/schema.js';
import { sourceNameOf } from '../config/load.js';
import { slotOf } from '../config/slot.js';
import { systemClock } from '../core/clock.js';
import { parseTableName } from '../core/sql.js';
import { tableLabel, TableMapping } from '../core/table-mapping.js';
import { Events } from '../core/events.js';
import type { Dedup } from '../dedup/dedup.js';
import { RedisDedup } from '../dedup/redis-dedup.js';
import type { DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { Apply } from '../pipeline/apply.js';
import { WriterBoundaries } from '../pipeline/writer-boundaries.js';
import type { Sink } from '../sink/sink.js';
import type { Stream } from '../stream/stream.js';
import { openCodec } from './codec.js';
import { openDeadLetterQueue } from './dead-letters.js';
import { sourceDefinitions } from './definitions.js';
import { replayFrom } from './replay-from.js';
import { openSink } from './sink.js';

/** The dedup backend of `consumer.deduplication`; undefined for `sink` (the sink's version gate). */
export function openDedup(config: SynclineConfig): Dedup | undefined {
  const d = config.consumer.deduplication;
  if (d.backend === 'sink') return undefined;
  return new RedisDedup({ url: d.url ?? 'redis://127.0.0.1:6379', keyPattern: d.key_pattern, ttlSeconds: d.ttl_seconds });
}

/** What a library caller puts around apply's sink and dead-letter queue (createPipeline). */
export interface ApplyParts {
  /** The sink apply writes to, replacing openSink(config); apply closes it when it ends. */
  sink?: Sink;
  /** Wraps the dead-letter queue (to observe what is dead-lettered). */
  deadLetters?: (queue: DeadLetterQueue) => DeadLetterQueue;
}

/** Runs apply (stream → sink) until `signal` aborts. */
export async function runApply(config: SynclineConfig, stream: Stream, metrics: Metrics, log: Logger, signal: AbortSignal, from?: string, parts: ApplyParts = {}): Promise<void> {
  const codec = await openCodec(config);
  const sink = parts.sink ?? openSink(config, undefined, undefined, log);
  const queue = openDeadLetterQueue(config);
  const deadLetters = queue && parts.deadLetters ? parts.deadLetters(queue) : queue;
  const dedup = openDedup(config);
  if (!dedup && !parts.sink && config.sink.type === 'webhook') {
    log.warn('webhook sink without a dedup backend: a replayed change is POSTed again; set consumer.deduplication.backend: redis, or have the receiver ignore idempotency keys it has seen');
  }
  try {
    const events = new Events();
    metrics.subscribe(events, slotOf(config).tables.map((t) => tableLabel(parseTableName(t))));
    const apply = new Apply((options) => stream.consumer(config.consumer.group_id, options), sink, events, log, {
      group: config.consumer.group_id,
      batchSize: config.consumer.batch_size,
      batchWaitMs: Math.max(config.consumer.batch_wait_ms, 1),
      retry: {
        maxAttempts: config.consumer.retry.max_attempts,
        baseMs: config.consumer.retry.backoff_base_ms,
        maxMs: config.consumer.retry.backoff_max_ms,
        jitter: config.consumer.retry.jitter,
      },
      clock: systemClock,
      deadLetters,
      truncate: config.sink.truncate,
      ...(from ? { from: replayFrom(from, stream) } : {}),
      endOffsets: () => stream.endOffsets(),
      dedup,
      transactional: config.sink.consistency === 'transactional',
      incompleteTransactionMs: config.sink.incomplete_transaction_ms,
      heldTableRetryMs: config.consumer.retry.held_table_interval_ms,
      ...(Object.keys(config.sink.writers).length > 0 ? { writers: new WriterBoundaries(config.sink.writers) } : {}),
      // In the stream's (source) names: no sink.tables routes.
      sourceDefinitions: { source: sourceNameOf(config), definitions: sourceDefinitions(config, new TableMapping([])) },
      // JSON records are parsed synchronously; typed ones are decoded by schema id.
      ...(codec.format !== 'json' ? { decode: (value: Buffer) => codec.decode(value) } : {}),
    });
    await apply.run(signal);
  } finally {
    await dedup?.close();
    await deadLetters?.close();
    await sink.close();
  }
}
