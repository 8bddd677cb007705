import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openKafkaStream } from '../../src/stream/kafka/kafka-stream.js';
import type { Stream, StreamConsumer, StreamRecord } from '../../src/stream/stream.js';
import { requireListening } from './broker-check.js';

const port = Number(process.env.KAFKA_PORT ?? 9092);
const brokers = [`127.0.0.1:${port}`];
const topics: string[] = [];
const children: ChildProcess[] = [];

/** The other member's session: a join that waited for it to expire would take this long. */
const OTHER_SESSION_MS = 45_000;
/** Well under OTHER_SESSION_MS, generous for a loaded 2-core machine (measured: ~0.5 s). */
const JOIN_BOUND_MS = 15_000;

beforeAll(async () => {
  await requireListening('127.0.0.1', port, 'The Kafka tests need a broker: start one with `bash scripts/kafka.sh start` (KAFKA_PORT selects the port).');
});

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

afterAll(async () => {
  if (topics.length === 0) return;
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

/**
 * A kafkajs member of `group` in another process (as an earlier apply would be), with a long
 * session. Resolves once it has joined; `joins` counts its joins.
 */
async function otherMember(topic: string, group: string): Promise<{ child: ChildProcess; joins: () => number }> {
  const script = `
    import { Kafka, logLevel } from 'kafkajs';
    const [broker, topic, group, session] = process.argv.slice(1);
    const consumer = new Kafka({ brokers: [broker], logLevel: logLevel.NOTHING })
      .consumer({ groupId: group, sessionTimeout: Number(session), heartbeatInterval: 500 });
    consumer.on(consumer.events.GROUP_JOIN, () => console.log('joined'));
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({ eachBatch: async () => {} });
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, brokers[0] as string, topic, group, String(OTHER_SESSION_MS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  let joins = 0;
  const joined = new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      joins += d.toString().split('joined').length - 1;
      if (joins > 0) resolve();
    });
    child.once('exit', (code) => reject(new Error(`the other member exited (${code}) before joining`)));
  });
  await joined;
  return { child, joins: () => joins };
}

async function readAll(c: StreamConsumer, n: number, ms: number): Promise<StreamRecord[]> {
  const out: StreamRecord[] = [];
  const until = Date.now() + ms;
  while (out.length < n && Date.now() < until) out.push(...(await c.poll(100, 200)));
  return out;
}

async function topicWithRecords(count: number): Promise<{ stream: Stream; topic: string }> {
  const topic = `syncline-exclusive-${randomBytes(4).toString('hex')}`;
  topics.push(topic);
  const stream = await openKafkaStream({ brokers, topic, partitions: 3 });
  const producer = await stream.producer();
  await producer.publish(Array.from({ length: count }, (_, i) => ({ key: `public.t:["k${i}"]`, value: Buffer.from(`v${i}`) })));
  await producer.close();
  return { stream, topic };
}

describe('Kafka stream: an exclusive consumer (transactional apply) does not wait for members an earlier instance left', () => {
  it('joins with every partition soon after the only other member was killed (kill -9), not when its session expires', async () => {
    const { stream, topic } = await topicWithRecords(30);
    const group = `exclusive-${randomBytes(3).toString('hex')}`;
    try {
      const { child } = await otherMember(topic, group);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));

      const removed: string[] = [];
      const began = Date.now();
      const consumer = await stream.consumer(group, {
        exclusive: true,
        onExclusive: (o) => {
          if ('removed' in o) removed.push(...o.removed);
          else throw o.error;
        },
      });
      try {
        expect([...consumer.assignment()].sort()).toEqual([0, 1, 2]);
        const got = await readAll(consumer, 30, JOIN_BOUND_MS);
        const elapsed = Date.now() - began;
        expect(got.length).toBe(30);
        expect(elapsed).toBeLessThan(JOIN_BOUND_MS);
        expect(removed).toHaveLength(1);
        expect(removed[0]).toMatch(/@/);
      } finally {
        await consumer.close();
      }
    } finally {
      await stream.close();
    }
  }, 120_000);

  it('a member it removed that was alive after all rejoins, and the two share the partitions (no wait, no crash)', async () => {
    const { stream, topic } = await topicWithRecords(10);
    const group = `exclusive-live-${randomBytes(3).toString('hex')}`;
    try {
      const other = await otherMember(topic, group);
      const began = Date.now();
      const consumer = await stream.consumer(group, { exclusive: true });
      try {
        expect(Date.now() - began).toBeLessThan(JOIN_BOUND_MS);
        // The removed member learns at its next heartbeat and joins again: a rebalance.
        const deadline = Date.now() + 30_000;
        const shared = (): boolean => consumer.assignment().length > 0 && consumer.assignment().length < 3;
        while (!(other.joins() >= 2 && shared()) && Date.now() < deadline) await consumer.poll(10, 200);
        expect(other.joins()).toBeGreaterThanOrEqual(2);
        expect(consumer.assignment().length).toBeGreaterThan(0);
        expect(consumer.assignment().length).toBeLessThan(3);
        expect(other.child.exitCode).toBeNull();
      } finally {
        await consumer.close();
      }
    } finally {
      await stream.close();
    }
  }, 120_000);
});
