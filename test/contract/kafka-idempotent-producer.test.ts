import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotentProducer } from '../../src/stream/kafka/idempotent-producer.js';
import { KafkaConnection } from '../../src/stream/kafka/kafka-connection.js';
import type { ProduceRecord } from '../../src/stream/kafka/protocol/messages.js';
import { requireListening } from './broker-check.js';

const port = Number(process.env.KAFKA_PORT ?? 9092);
const brokers = [`127.0.0.1:${port}`];
const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
const topics: string[] = [];

beforeAll(async () => {
  await requireListening('127.0.0.1', port, 'The Kafka contract tests need a broker: start one with `bash scripts/kafka.sh start` (KAFKA_PORT selects the port).');
  await admin.connect();
});

afterAll(async () => {
  if (topics.length > 0) await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

async function newTopic(partitions: number): Promise<string> {
  const topic = `syncline-idempotent-${randomBytes(4).toString('hex')}`;
  topics.push(topic);
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: partitions }] });
  return topic;
}

async function stored(topic: string): Promise<Map<number, number>> {
  return new Map((await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, Number(o.high)]));
}

/**
 * A TCP proxy in front of the broker that, once, forwards a Produce request and then cuts both
 * connections when the broker's answer arrives, instead of passing it on: the producer cannot
 * know whether its records were stored.
 */
function answerLosingProxy(): Promise<{ port: number; cut: () => number; close: () => void }> {
  let cuts = 0;
  let armed = true;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port });
    sockets.add(client).add(upstream);
    let producing = false;
    client.on('data', (chunk) => {
      // A request frame starts with its size and its api key (0 = Produce).
      if (armed && chunk.length >= 6 && chunk.readInt16BE(4) === 0) producing = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (producing && armed) {
        armed = false;
        cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as net.AddressInfo).port,
        cut: () => cuts,
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      });
    });
  });
}

const records = (n: number, tag: string): ProduceRecord[] => Array.from({ length: n }, (_, i) => ({ key: `k${i % 7}`, value: Buffer.from(`${tag}-${i}`) }));

describe('Kafka idempotent producer', () => {
  it('stores a produce whose answer was lost exactly once when it sends it again', async () => {
    const topic = await newTopic(3);
    const proxy = await answerLosingProxy();
    // Every connection, also to the leader the metadata names, goes through the proxy.
    const producer = new IdempotentProducer({
      brokers,
      clientId: 'test',
      topic,
      retry: { maxAttempts: 5, baseMs: 50, maxMs: 200, jitter: false },
      connect: (host, _port, timeoutMs) => KafkaConnection.connect(host, proxy.port, timeoutMs),
    });
    try {
      await producer.connect();
      await producer.send(new Map([[0, records(100, 'a')], [1, records(50, 'a')], [2, records(1, 'a')]]));
      expect(proxy.cut()).toBe(1);
      await producer.send(new Map([[0, records(10, 'b')], [2, records(5, 'b')]]));
    } finally {
      producer.close();
      proxy.close();
    }
    expect(await stored(topic)).toEqual(new Map([[0, 110], [1, 50], [2, 6]]));
  });

  it('keeps each partition in send order across many sends and reads back every record', async () => {
    const topic = await newTopic(2);
    const producer = new IdempotentProducer({ brokers, clientId: 'test', topic });
    await producer.connect();
    try {
      for (let s = 0; s < 20; s++) await producer.send(new Map([[s % 2, records(25, `s${s}`)]]));
    } finally {
      producer.close();
    }
    const consumer = new Kafka({ brokers, logLevel: logLevel.NOTHING }).consumer({ groupId: `g-${topic}` });
    const seen = new Map<number, string[]>([[0, []], [1, []]]);
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve) => {
      void consumer.run({
        eachMessage: async ({ partition, message }) => {
          seen.get(partition)?.push(message.value?.toString() ?? '');
          if ((seen.get(0)?.length ?? 0) + (seen.get(1)?.length ?? 0) === 500) resolve();
        },
      });
    });
    await consumer.disconnect();
    for (const p of [0, 1]) {
      const expected = Array.from({ length: 10 }, (_, i) => records(25, `s${i * 2 + p}`).map((r) => r.value?.toString())).flat();
      expect(seen.get(p)).toEqual(expected);
    }
  });

  it('refuses every send after one failed for good', async () => {
    const topic = await newTopic(1);
    const producer = new IdempotentProducer({ brokers, clientId: 'test', topic, retry: { maxAttempts: 2, baseMs: 10, maxMs: 10, jitter: false } });
    await producer.connect();
    try {
      // Partition 4 does not exist: no leader, twice.
      await expect(producer.send(new Map([[4, records(1, 'x')]]))).rejects.toMatchObject({ code: 'KAFKA_LEADER_NOT_AVAILABLE', retriable: true });
      await expect(producer.send(new Map([[0, records(1, 'y')]]))).rejects.toMatchObject({ code: 'KAFKA_LEADER_NOT_AVAILABLE' });
    } finally {
      producer.close();
    }
    expect(await stored(topic)).toEqual(new Map([[0, 0]]));
  });
});
