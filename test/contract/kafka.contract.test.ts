import { randomBytes } from 'node:crypto';
import kafkajs, { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaError } from '../../src/stream/kafka/kafka-errors.js';
import { openKafkaStream } from '../../src/stream/kafka/kafka-stream.js';
import { RetentionGapError, type Stream } from '../../src/stream/stream.js';
import { requireListening } from './broker-check.js';
import { describeGroupRebalance } from './group-rebalance.js';
import { describeStreamContract } from './stream-contract.js';

const port = Number(process.env.KAFKA_PORT ?? 9092);
const brokers = [`127.0.0.1:${port}`];
const topics: string[] = [];

beforeAll(async () => {
  await requireListening('127.0.0.1', port, 'The Kafka contract tests need a broker: start one with `bash scripts/kafka.sh start` (KAFKA_PORT selects the port).');
});

afterAll(async () => {
  if (topics.length === 0) return;
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

const open = ({ partitions, topic }: { partitions: number; topic: string }): Promise<Stream> => {
  topics.push(topic);
  return openKafkaStream({ brokers, topic, partitions });
};

describeStreamContract('kafka', open);

describeGroupRebalance('kafka', open);

describe('Kafka stream: topic and errors', () => {
  it('refuses to reopen a topic with another partition count', async () => {
    const topic = `syncline-contract-kafka-parts-${randomBytes(4).toString('hex')}`;
    const stream = await open({ partitions: 2, topic });
    await stream.close();
    await expect(openKafkaStream({ brokers, topic, partitions: 3 })).rejects.toMatchObject({ code: 'STREAM_PARTITIONS_MISMATCH', retriable: false });
  });

  it('refuses a start or committed position below the low watermark (retention deleted unconsumed records)', async () => {
    const topic = `syncline-contract-kafka-gap-${randomBytes(4).toString('hex')}`;
    const stream = await open({ partitions: 1, topic });
    const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      const producer = await stream.producer();
      await producer.publish(Array.from({ length: 10 }, (_, i) => ({ key: 'k', value: Buffer.from(`r${i}`) })));
      await producer.close();
      // The group applied records 0 and 1, then was down while retention deleted up to 5.
      const committing = await stream.consumer('gap-group', { startPositions: async () => new Map([[0, 0n]]) });
      await committing.commit(new Map([[0, 2n]]));
      await committing.close();
      await admin.fetchTopicMetadata({ topics: [topic] }); // deleteTopicRecords needs it loaded
      await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '5' }] });

      // A start position from the sink below the low watermark.
      const fromSink = stream.consumer('gap-sink', { startPositions: async () => new Map([[0, 2n]]) });
      const err = await fromSink.then(
        async (c) => {
          await c.close();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(RetentionGapError);
      expect(err).toMatchObject({ partition: 0, wanted: 2n, firstRetained: 5n, retriable: false });
      expect((err as RetentionGapError).fix).toContain('--from 0:5');

      // The group's own committed offset below the low watermark.
      await expect(stream.consumer('gap-group')).rejects.toMatchObject({ name: 'RetentionGapError', partition: 0, wanted: 2n, firstRetained: 5n });

      // A new group (no position anywhere) starts at the first retained record, as before.
      const fresh = await stream.consumer('gap-fresh');
      try {
        const got: bigint[] = [];
        const deadline = Date.now() + 15_000;
        while (got.length < 5 && Date.now() < deadline) got.push(...(await fresh.poll(10, 200)).map((r) => r.offset));
        expect(got).toEqual([5n, 6n, 7n, 8n, 9n]);
      } finally {
        await fresh.close();
      }
    } finally {
      await admin.disconnect();
      await stream.close();
    }
  }, 120_000);

  it('maps kafkajs errors to SynclineError keeping the retriable flag', () => {
    const notLeader = new kafkajs.KafkaJSProtocolError(Object.assign(new Error('not leader'), { type: 'NOT_LEADER_FOR_PARTITION', code: 6, retriable: true }));
    expect(kafkaError(notLeader, 'publishing')).toMatchObject({ code: 'KAFKA_NOT_LEADER_FOR_PARTITION', retriable: true });
    const tooLarge = new kafkajs.KafkaJSProtocolError(Object.assign(new Error('too large'), { type: 'MESSAGE_TOO_LARGE', code: 10, retriable: false }));
    expect(kafkaError(tooLarge, 'publishing')).toMatchObject({ code: 'KAFKA_MESSAGE_TOO_LARGE', retriable: false });
    // kafkajs gave up retrying a retriable error: still retriable for the caller.
    const exhausted = new kafkajs.KafkaJSNumberOfRetriesExceeded(new kafkajs.KafkaJSConnectionError('Connection error: ECONNREFUSED'), { retryCount: 5, retryTime: 3000 });
    expect(kafkaError(exhausted, 'connecting')).toMatchObject({ code: 'KAFKA_KafkaJSConnectionError', retriable: true });
    // Nested retriers wrap that in a NonRetriableError (seen publishing during a broker restart): still retriable.
    const connection = new kafkajs.KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:19092');
    const nested = Object.assign(new kafkajs.KafkaJSNonRetriableError(exhausted), { cause: connection });
    expect(kafkaError(nested, 'publishing')).toMatchObject({ code: 'KAFKA_KafkaJSConnectionError', retriable: true });
    // No broker answering as group coordinator passes when the broker is back.
    const noCoordinator = new (kafkajs.KafkaJSGroupCoordinatorNotFound as unknown as new (message: string) => Error)('Failed to find group coordinator');
    expect(kafkaError(noCoordinator, 'consuming')).toMatchObject({ retriable: true });
    // Also after kafkajs's retries, as a consumer's crash reports it during a broker restart
    // (the chaos run: "failed: KafkaJSGroupCoordinatorNotFound (after kafkajs retries: ...)").
    const exhaustedCoordinator = new kafkajs.KafkaJSNumberOfRetriesExceeded(noCoordinator, { retryCount: 5, retryTime: 3000 });
    expect(kafkaError(exhaustedCoordinator, 'consuming')).toMatchObject({ code: 'KAFKA_KafkaJSGroupCoordinatorNotFound', retriable: true });
    // A NonRetriableError of its own (a bad argument) stays permanent.
    expect(kafkaError(new kafkajs.KafkaJSNonRetriableError('Invalid topic x'), 'x')).toMatchObject({ retriable: false });
    expect(kafkaError(new Error('boom'), 'x')).toMatchObject({ code: 'KAFKA_UNKNOWN', retriable: false });
  });
});
