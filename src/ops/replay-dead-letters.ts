import type { SynclineConfig } from '../config/schema.js';
import { PrerequisiteError } from '../core/errors.js';
import { openDeadLetterQueue } from '../compose/dead-letters.js';
import { openCodec } from '../compose/codec.js';
import { openSink } from '../compose/sink.js';
import type { DeadLetterFilter } from '../dlq/dead-letter-queue.js';
import { replayDeadLetters, type RawDecoder, type ReplayResult } from '../dlq/replay.js';
import type { Sink } from '../sink/sink.js';

/**
 * `syncline dlq replay` and `pipeline.replayDeadLetters()`: the entries matching `filter` are
 * applied again through `sink` (default the configured one; a pipeline passes its own, behind
 * its transforms), and those it accepts leave the queue. Closes `sink` when done.
 */
export async function replayDeadLetterQueue(config: SynclineConfig, filter: DeadLetterFilter, sink: Sink = openSink(config)): Promise<ReplayResult> {
  try {
    const queue = openDeadLetterQueue(config);
    if (!queue) throw new PrerequisiteError('the dead-letter queue is disabled', 'set dead_letter.enabled: true');
    await sink.prepare();
    try {
      await queue.prepare();
      return await replayDeadLetters(await queue.list(filter), sink, queue, config.consumer.group_id, {
        decode: await rawDecoder(config),
        transactional: config.sink.consistency === 'transactional',
      });
    } finally {
      await queue.close();
    }
  } finally {
    await sink.close();
  }
}

/** A typed stream format: records dead-lettered raw (`base64:` + their bytes) are decoded again by schema id. */
async function rawDecoder(config: SynclineConfig): Promise<RawDecoder | undefined> {
  if (config.stream.format === 'json') return undefined;
  const codec = await openCodec(config);
  return (raw) => (raw.startsWith('base64:') ? codec.decode(Buffer.from(raw.slice('base64:'.length), 'base64')) : Promise.resolve(undefined));
}
