/**
 * What syncline's own Kafka producer writes (src/stream/kafka/idempotent-producer.ts: record
 * batches v2, CRC-32C, producer id and sequences, written by hand) is read by Apache Kafka's
 * own Java consumer, the reference client, with its CRC checks on and in both isolation
 * levels: every record, in order per partition, key and value byte for byte, tombstones as
 * tombstones. The other tests read with kafkajs, whose decoder is more forgiving (it checks
 * no CRC); users read syncline's topics with the Java client, librdkafka or kcat.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotentProducer } from '../../src/stream/kafka/idempotent-producer.js';
import type { ProduceRecord } from '../../src/stream/kafka/protocol/messages.js';
import { requireListening } from './broker-check.js';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const libs = process.env.SYNCLINE_KAFKA_LIBS ?? path.join(root, '.kafka/libs');
const reader = path.join(root, 'test/fixtures/kafka/ReadTopic.java');
const port = Number(process.env.KAFKA_PORT ?? 9092);
const brokers = [`127.0.0.1:${port}`];
const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
const topics: string[] = [];

beforeAll(async () => {
  await requireListening('127.0.0.1', port, 'The Kafka contract tests need a broker: start one with `bash scripts/kafka.sh start` (KAFKA_PORT selects the port).');
  if (!existsSync(path.join(libs, `kafka-clients-3.9.1.jar`))) {
    throw new Error(`Apache Kafka's Java client is not in ${libs}: \`bash scripts/kafka.sh start\` fetches it from Maven Central (or set SYNCLINE_KAFKA_LIBS to a folder holding kafka-clients and its dependencies)`);
  }
  await admin.connect();
});

afterAll(async () => {
  if (topics.length > 0) await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const keyBytes = (k: string | Buffer): Buffer => (typeof k === 'string' ? Buffer.from(k, 'utf8') : k);

/** The Java consumer's lines for `topic`: `partition offset key-hex value-sha256|null headers`. */
async function readWithJava(topic: string, expected: number, isolation: 'read_committed' | 'read_uncommitted'): Promise<string[]> {
  const { stdout } = await run('java', ['-cp', `${libs}/*`, reader, brokers[0] as string, topic, String(expected), isolation], { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
  return stdout.split('\n').filter((l) => l !== '');
}

describe('Kafka: what syncline produces, read by the Java client', () => {
  it('every record, in order per partition, byte for byte, in both isolation levels', async () => {
    const topic = `syncline-java-${randomBytes(4).toString('hex')}`;
    topics.push(topic);
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 3 }] });
    const producer = new IdempotentProducer({ brokers, clientId: 'syncline-java-test', topic });
    await producer.connect();
    const sent = new Map<number, ProduceRecord[]>([[0, []], [1, []], [2, []]]);
    try {
      for (let call = 0; call < 12; call++) {
        const batch = new Map<number, ProduceRecord[]>();
        for (let p = 0; p < 3; p++) {
          const records: ProduceRecord[] = [];
          const count = call % 4 === 3 ? 1 : 40 + call * 7 + p;
          for (let i = 0; i < count; i++) {
            const n = call * 1000 + i;
            const key = n % 13 === 0 ? `public."Odd Name":["ключ ${n}"]` : n % 17 === 0 ? randomBytes(9) : `public.items:["${n}"]`;
            // Mostly change-sized values; empty ones, tombstones and one near the broker's 1 MB limit too.
            const value = n % 29 === 0 ? null : n % 31 === 0 ? Buffer.alloc(0) : call === 5 && i === 0 ? randomBytes(900_000) : randomBytes(50 + (n % 600));
            records.push({ key, value });
          }
          batch.set(p, records);
          (sent.get(p) as ProduceRecord[]).push(...records);
        }
        await producer.send(batch);
      }
    } finally {
      producer.close();
    }
    const expected = [...sent].flatMap(([p, records]) => records.map((r, offset) => `${p}\t${offset}\t${keyBytes(r.key).toString('hex')}\t${r.value === null ? 'null' : sha256(r.value)}\t0`));
    for (const isolation of ['read_uncommitted', 'read_committed'] as const) {
      const lines = await readWithJava(topic, expected.length, isolation);
      // The Java consumer interleaves partitions; within one it keeps offset order.
      const byPartition = (ls: string[]): string[][] => [0, 1, 2].map((p) => ls.filter((l) => l.startsWith(`${p}\t`)));
      expect(lines.length).toBe(expected.length);
      expect(byPartition(lines)).toEqual(byPartition(expected));
    }
  }, 240_000);
});
