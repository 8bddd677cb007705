import { describe, expect, it } from 'vitest';
import { partitionKeyOf, type ChangeEvent } from '../../src/core/change.js';
import { systemClock } from '../../src/core/clock.js';
import { SynclineError } from '../../src/core/errors.js';
import { Events } from '../../src/core/events.js';
import { silentLogger } from '../../src/log/logger.js';
import { Apply } from '../../src/pipeline/apply.js';
import type { StreamConsumer } from '../../src/stream/stream.js';
import { MemorySink } from '../../src/testing/memory-sink.js';
import { MemoryStream } from '../../src/testing/memory-stream.js';
import { waitFor } from '../helpers/wait.js';

function insert(id: number): ChangeEvent {
  const lsn = `0/${(0x1000 + id).toString(16).toUpperCase()}`;
  return {
    source: 's', schema: 'public', table: 't', op: 'INSERT', lsn, commit_lsn: lsn, xid: id, seq: 1,
    commit_ts: '2026-12-04T00:00:00.000000Z', key: { id: String(id) }, payload: { id: String(id), v: 'x' },
    _version: String(BigInt(0x1000 + id) * 2n ** 32n + 1n), _schema_version: 1, tx_last: true,
  };
}

describe('apply: a stream failure that passes', () => {
  it('reopens the consumer after a retriable poll failure (a broker restarting) and applies everything once', async () => {
    const stream = new MemoryStream(2);
    const producer = await stream.producer();
    await producer.publish([1, 2, 3].map((i) => ({ key: partitionKeyOf(insert(i)), value: Buffer.from(JSON.stringify(insert(i))) })));
    const sink = new MemorySink();
    let opened = 0;
    let failed = false;
    const openConsumer = async (options: Parameters<MemoryStream['consumer']>[1]): Promise<StreamConsumer> => {
      opened++;
      const consumer = await stream.consumer('g', options);
      return {
        ...consumer,
        poll: async (max, wait) => {
          const records = await consumer.poll(max, wait);
          // The first session reads a batch, then the broker goes away before it is applied.
          if (!failed && records.length > 0) {
            failed = true;
            throw new SynclineError('KAFKA_KafkaJSConnectionError', 'Kafka: consuming failed: connection refused', { retriable: true });
          }
          return records;
        },
      };
    };
    const events = new Events();
    const retries: string[] = [];
    events.on('apply:retry', (e) => retries.push(e.what));
    const apply = new Apply(openConsumer, sink, events, silentLogger(), {
      group: 'g', batchSize: 100, batchWaitMs: 5, clock: systemClock, deadLetters: undefined, truncate: 'apply',
      retry: { maxAttempts: 3, baseMs: 10, maxMs: 20, jitter: false }, endOffsets: () => stream.endOffsets(),
    });
    const stop = new AbortController();
    const running = apply.run(stop.signal);
    await waitFor('every change applied', async () => sink.rows('public.t').length === 3, 10_000, 10);
    stop.abort();
    await running;
    expect(opened).toBe(2);
    expect(retries).toEqual(['reading the stream']);
    expect(sink.writes.flat().map((c) => c.key.id).sort()).toEqual(['1', '2', '3']);
  });

  it('ends on a permanent stream failure', async () => {
    const stream = new MemoryStream(1);
    const sink = new MemorySink();
    const apply = new Apply(
      async () => ({ ...(await stream.consumer('g')), poll: async () => { throw new SynclineError('STREAM_GONE', 'the topic was deleted', { retriable: false }); } }),
      sink, new Events(), silentLogger(),
      { group: 'g', batchSize: 10, batchWaitMs: 5, clock: systemClock, deadLetters: undefined, truncate: 'apply', retry: { maxAttempts: 3, baseMs: 10, maxMs: 20, jitter: false }, endOffsets: () => stream.endOffsets() },
    );
    await expect(apply.run(new AbortController().signal)).rejects.toMatchObject({ code: 'STREAM_GONE' });
  });
});
