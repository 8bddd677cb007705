import { randomBytes } from 'node:crypto';
import kafkajs, { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaError } from '../../src/stream/kafka/kafka-errors.js';
import { openKafkaStream } from '../../src/stream/kafka/kafka-stream.js';
import type { Stream } from '../../src/stream/stream.js';
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

  it('maps kafkajs errors to SynclineError keeping the retriable flag', () => {
    const notLeader = new kafkajs.KafkaJSProtocolError(Object.assign(new Error('not leader'), { type: 'NOT_LEADER_FOR_PARTITION', code: 6, retriable: true }));
    expect(kafkaError(notLeader, 'publishing')).toMatchObject({ code: 'KAFKA_NOT_LEADER_FOR_PARTITION', retriable: true });
    const tooLarge = new kafkajs.KafkaJSProtocolError(Object.assign(new Error('too large'), { type: 'MESSAGE_TOO_LARGE', code: 10, retriable: false }));
    expect(kafkaError(tooLarge, 'publishing')).toMatchObject({ code: 'KAFKA_MESSAGE_TOO_LARGE', retriable: false });
    // kafkajs gave up retrying a retriable error: still retriable for the caller.
    const exhausted = new kafkajs.KafkaJSNumberOfRetriesExceeded(new kafkajs.KafkaJSConnectionError('Connection error: ECONNREFUSED'), { retryCount: 5, retryTime: 3000 });
    expect(kafkaError(exhausted, 'connecting')).toMatchObject({ code: 'KAFKA_KafkaJSConnectionError', retriable: true });
    expect(kafkaError(new Error('boom'), 'x')).toMatchObject({ code: 'KAFKA_UNKNOWN', retriable: false });
  });
});
