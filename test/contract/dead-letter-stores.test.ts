import { randomBytes } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresDeadLetterQueue } from '../../src/dlq/postgres-dead-letter-queue.js';
import { TopicDeadLetterQueue } from '../../src/dlq/topic-dead-letter-queue.js';
import { openKafkaStream } from '../../src/stream/kafka/kafka-stream.js';
import { freshDatabase, machinePg15 } from '../helpers/postgres.js';
import { requireListening } from './broker-check.js';
import { describeDeadLetterContract } from './dead-letter-contract.js';

const port = Number(process.env.KAFKA_PORT ?? 9092);
const brokers = [`127.0.0.1:${port}`];
const topics: string[] = [];

beforeAll(async () => {
  await requireListening('127.0.0.1', port, 'The dead-letter topic tests need a Kafka broker: start one with `bash scripts/kafka.sh start` (KAFKA_PORT selects the port).');
});

afterAll(async () => {
  if (topics.length === 0) return;
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

let database = 0;
describeDeadLetterContract('PostgreSQL table', async () => {
  const url = await freshDatabase(await machinePg15(), `syncline_dlq_contract_${database++}`);
  return () => new PostgresDeadLetterQueue(url, 'syncline', 'src');
});

function newTopic(): string {
  const topic = `syncline-dlq-contract-${randomBytes(4).toString('hex')}`;
  topics.push(topic);
  return topic;
}

describeDeadLetterContract('Kafka topic', async () => {
  const topic = newTopic();
  return () => new TopicDeadLetterQueue(() => openKafkaStream({ brokers, topic, partitions: 1, compacted: true }), topic, 'src');
});

describe('dead-letter topic as other Kafka clients see it', () => {
  it('is a compacted topic of JSON entries keyed by id; removal writes a tombstone', async () => {
    const topic = newTopic();
    const q = new TopicDeadLetterQueue(() => openKafkaStream({ brokers, topic, partitions: 1, compacted: true }), topic, 'src');
    try {
      await q.prepare();
      await q.add([{ change: undefined, raw: 'garbage', error: 'undecodable', errorCode: 'DECODE_FAILED', attempts: 1, partition: 2, offset: 41n }]);
      expect(await q.remove(['2-41'])).toBe(1);
    } finally {
      await q.close();
    }
    const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    try {
      const configs = await admin.describeConfigs({ resources: [{ type: 2, name: topic, configNames: ['cleanup.policy'] }], includeSynonyms: false });
      expect(configs.resources[0]?.configEntries[0]?.configValue).toBe('compact');
    } finally {
      await admin.disconnect();
    }
    const consumer = kafka.consumer({ groupId: `plain-client-${randomBytes(4).toString('hex')}` });
    await consumer.connect();
    const seen: { key: string; value: string | null }[] = [];
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`saw only ${seen.length} records`)), 30_000);
        void consumer.run({
          eachMessage: async ({ message }) => {
            seen.push({ key: message.key?.toString() ?? '', value: message.value === null ? null : message.value.toString() });
            if (seen.length === 2) {
              clearTimeout(timer);
              resolve();
            }
          },
        });
      });
    } finally {
      await consumer.disconnect();
    }
    expect(seen[0]?.key).toBe('2-41');
    expect(JSON.parse(seen[0]?.value ?? 'null')).toMatchObject({ id: '2-41', raw: 'garbage', error: 'undecodable', error_code: 'DECODE_FAILED', attempts: 1, stream_partition: 2, stream_offset: '41' });
    expect(seen[1]).toEqual({ key: '2-41', value: null });
  });
});
