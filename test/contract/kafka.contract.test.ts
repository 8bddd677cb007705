import { randomBytes } from 'node:crypto';
import kafkajs, { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kafkaError } from '../../src/stream/kafka/kafka-errors.js';
import { openKafkaStream } from '../../src/stream/kafka/kafka-stream.js';
import type { Stream, StreamRecord } from '../../src/stream/stream.js';
import { requireListening } from './broker-check.js';
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

describe('Kafka stream: consumer group rebalances', () => {
  it('splits partitions between members, positions each assignment from startPositions, and never returns revoked partitions', async () => {
    const topic = `syncline-contract-kafka-rebalance-${randomBytes(4).toString('hex')}`;
    const stream = await open({ partitions: 4, topic });
    try {
      const producer = await stream.producer();
      const sent = Array.from({ length: 200 }, (_, i) => ({ key: `public.t:["k${i % 17}"]`, value: Buffer.from(`v:${i}`) }));
      await producer.publish(sent);
      const asked: string[] = [];
      const start = (who: string) => async (partitions: readonly number[]) => {
        asked.push(`${who}:${[...partitions].sort().join(',')}`);
        return new Map(partitions.map((p) => [p, 0n] as [number, bigint]));
      };
      const a = await stream.consumer('g', { startPositions: start('a') });
      expect([...a.assignment()].sort()).toEqual([0, 1, 2, 3]);
      const firstA = await a.poll(10, 5000);
      expect(firstA.length).toBeGreaterThan(0);

      const b = await stream.consumer('g', { startPositions: start('b') });
      // a learns of the rebalance at its next heartbeat; poll keeps it alive meanwhile.
      const deadline = Date.now() + 30_000;
      while (a.assignment().length !== 2 && Date.now() < deadline) await a.poll(1, 200);
      expect(a.assignment().length).toBe(2);
      expect(b.assignment().length).toBe(2);
      const mine = new Set(a.assignment());
      for (const p of b.assignment()) expect(mine.has(p)).toBe(false);

      const readAll = async (c: typeof a, n: number): Promise<StreamRecord[]> => {
        const out: StreamRecord[] = [];
        const until = Date.now() + 20_000;
        while (out.length < n && Date.now() < until) out.push(...(await c.poll(500, 100)));
        return out;
      };
      const ends = await stream.endOffsets();
      const count = (c: typeof a): number => c.assignment().reduce((sum, p) => sum + Number(ends.get(p) ?? 0n), 0);
      const [gotA, gotB] = await Promise.all([readAll(a, count(a)), readAll(b, count(b))]);
      for (const r of gotA) expect(a.assignment()).toContain(r.partition);
      for (const r of gotB) expect(b.assignment()).toContain(r.partition);
      // Both started their partitions at 0 (startPositions), so together they read everything.
      expect(new Set([...gotA, ...gotB].map((r) => r.value.toString())).size).toBe(sent.length);
      expect(asked.some((x) => x.startsWith('b:'))).toBe(true);
      expect(asked.filter((x) => x.startsWith('a:')).length).toBeGreaterThanOrEqual(2);
      await b.close();
      await a.close();
    } finally {
      await stream.close();
    }
  });
});

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
