import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { DiscardPolicy, connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_HEADER, TABLE_HEADER, natsName, partitionStreamName, positionsBucketName, tableSubjectOf } from '../../src/stream/nats/nats-names.js';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import { RetentionGapError, type Stream, type StreamRecord } from '../../src/stream/stream.js';
import { ROOT, ensureBuilt } from '../helpers/cli.js';
import { requireListening } from './broker-check.js';
import { describeGroupRebalance } from './group-rebalance.js';
import { describeStreamContract } from './stream-contract.js';

const url = 'nats://127.0.0.1:4222';
const created: { topic: string; partitions: number }[] = [];

beforeAll(async () => {
  await requireListening(
    '127.0.0.1',
    4222,
    'The NATS contract tests need nats-server with JetStream: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log',
  );
});

afterAll(async () => {
  if (created.length === 0) return;
  const nc = await connect({ servers: url });
  const jsm = await nc.jetstreamManager();
  for (const { topic, partitions } of created) {
    for (let p = 0; p < partitions; p++) await jsm.streams.delete(partitionStreamName(topic, p)).catch(() => undefined);
    await jsm.streams.delete(`KV_${positionsBucketName(topic)}`).catch(() => undefined);
  }
  await nc.close();
});

const open = ({ partitions, topic }: { partitions: number; topic: string }): Promise<Stream> => {
  created.push({ topic, partitions });
  return openNatsStream({ url, topic, partitions });
};

describeStreamContract('nats', open);

describe('NATS stream: deduplication and headers', () => {
  it('stores a record republished with the same key and id once, and carries key and table in headers', async () => {
    const topic = `syncline-contract-nats-dedup-${randomBytes(4).toString('hex')}`;
    const stream = await open({ partitions: 2, topic });
    try {
      const producer = await stream.producer();
      const batch = Array.from({ length: 20 }, (_, i) => ({ key: `public.orders:["${i}"]`, value: Buffer.from(`v${i}`), id: `0/1A2B:${i + 1}` }));
      await producer.publish(batch);
      // A capture restart resending what the stream already has, through its new producer.
      const again = await stream.producer();
      await again.publish(batch);
      await again.publish([{ key: 'public.orders:["0"]', value: Buffer.from('no-id') }, { key: 'public.orders:["0"]', value: Buffer.from('no-id') }]);
      const ends = await stream.endOffsets();
      expect([...ends.values()].reduce((a, b) => a + b, 0n)).toBe(22n);

      const nc = await connect({ servers: url });
      const jsm = await nc.jetstreamManager();
      const p = [...ends.entries()].find(([, end]) => end > 0n)?.[0] ?? 0;
      const msg = await jsm.streams.getMessage(partitionStreamName(topic, p), { seq: 1 });
      expect(msg.header.get(TABLE_HEADER)).toBe('public.orders');
      // Subjects per table: <topic>.<partition>.<schema>.<table>.
      expect(msg.subject).toBe(`${natsName(topic)}.${p}.public.orders`);
      expect(tableSubjectOf('my schema.Odd.Name:["1"]')).toMatch(/^my_schema_[0-9a-f]{8}\.Odd_Name_[0-9a-f]{8}$/);
      expect(msg.header.get(KEY_HEADER)).toMatch(/^public\.orders:\["\d+"\]$/);
      await nc.close();

      const consumer = await stream.consumer('g');
      const got: StreamRecord[] = [];
      const until = Date.now() + 10_000;
      while (got.length < 22 && Date.now() < until) got.push(...(await consumer.poll(100, 200)));
      expect(got).toHaveLength(22);
      expect(got.filter((r) => r.key === 'public.orders:["0"]').map((r) => r.value.toString())).toEqual(['v0', 'no-id', 'no-id']);
    } finally {
      await stream.close();
    }
  });

  it('fails a publish whose record the server refuses, and every publish after it, while earlier ones resolved', async () => {
    const topic = `syncline-contract-nats-refused-${randomBytes(4).toString('hex')}`;
    const stream = await open({ partitions: 1, topic });
    const nc = await connect({ servers: url });
    try {
      const producer = await stream.producer();
      const jsm = await nc.jetstreamManager();
      const name = partitionStreamName(topic, 0);
      const { config } = await jsm.streams.info(name);
      // Room for 3 records; the server refuses the 4th with an error PubAck.
      await jsm.streams.update(name, { ...config, max_msgs: 3, discard: DiscardPolicy.New });
      await producer.publish([{ key: 'k', value: Buffer.from('1') }, { key: 'k', value: Buffer.from('2') }]);
      await expect(producer.publish([{ key: 'k', value: Buffer.from('3') }, { key: 'k', value: Buffer.from('4') }])).rejects.toMatchObject({ code: expect.stringMatching(/^NATS_JS_/) });
      await expect(producer.publish([{ key: 'k', value: Buffer.from('5') }])).rejects.toMatchObject({ code: expect.stringMatching(/^NATS_JS_/) });
      expect(await stream.endOffsets()).toEqual(new Map([[0, 3n]]));
    } finally {
      await nc.close();
      await stream.close();
    }
  });
});

describeGroupRebalance('nats', open);

describe('NATS stream: a member that stops heartbeating', () => {
  it('loses its partitions to the other member after the session timeout, and stops returning them', async () => {
    const topic = `syncline-contract-nats-expire-${randomBytes(4).toString('hex')}`;
    created.push({ topic, partitions: 2 });
    const membership = { heartbeatMs: 200, sessionTimeoutMs: 1500 };
    const a = await openNatsStream({ url, topic, partitions: 2, membership });
    const b = await openNatsStream({ url, topic, partitions: 2, membership });
    try {
      const ca = await a.consumer('g');
      expect(ca.assignment()).toEqual([0, 1]);
      const cb = await b.consumer('g');
      const until = Date.now() + 10_000;
      while ((ca.assignment().length !== 1 || cb.assignment().length !== 1) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect([...ca.assignment(), ...cb.assignment()].sort()).toEqual([0, 1]);
      // a's process freezes (no heartbeats, no close): b takes everything after the timeout.
      (ca as unknown as { membershipTimer: NodeJS.Timeout }).membershipTimer.unref();
      clearInterval((ca as unknown as { membershipTimer: NodeJS.Timeout }).membershipTimer);
      const taken = Date.now() + 10_000;
      while (cb.assignment().length !== 2 && Date.now() < taken) await new Promise((r) => setTimeout(r, 100));
      expect(cb.assignment()).toEqual([0, 1]);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('NATS stream: max_deliver', () => {
  /**
   * One reader in a child process whose sink is stuck at offset 0: it prints what its first
   * poll handed out and is then killed with SIGKILL (it dies on its records).
   */
  async function dyingReader(topic: string): Promise<{ n: number; offset: string; deliveries: number | null }> {
    const script = `
      import { openNatsStream } from ${JSON.stringify(path.join(ROOT, 'dist/stream/nats/nats-stream.js'))};
      const stream = await openNatsStream({ url: ${JSON.stringify(url)}, topic: ${JSON.stringify(topic)}, partitions: 1, maxDeliver: 2,
        membership: { heartbeatMs: 100, sessionTimeoutMs: 700 } });
      const c = await stream.consumer('g', { startPositions: async (ps) => new Map(ps.map((p) => [p, 0n])) });
      let got = [];
      while (got.length === 0) got = await c.poll(100, 200);
      console.log(JSON.stringify({ n: got.length, offset: String(got[0].offset), deliveries: got[0].deliveries ?? null }));
      setInterval(() => undefined, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0] as string);
      });
      child.once('exit', (code) => reject(new Error(`reader exited with ${code} before reading`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    return JSON.parse(line) as { n: number; offset: string; deliveries: number | null };
  }

  it('narrows the first poll after readers died on it (kill -9), then hands the record out marked after max_deliver lone deliveries; a clean close does not count', async () => {
    ensureBuilt();
    const topic = `syncline-contract-nats-maxdeliver-${randomBytes(4).toString('hex')}`;
    created.push({ topic, partitions: 1 });
    const stream = await openNatsStream({ url, topic, partitions: 1, maxDeliver: 2, membership: { heartbeatMs: 100, sessionTimeoutMs: 700 } });
    try {
      const producer = await stream.producer();
      await producer.publish(Array.from({ length: 8 }, (_, i) => ({ key: `public.t:["${i}"]`, value: Buffer.from(`v${i}`) })));
      // Readers that close cleanly (stops, restarts) do not count, however often.
      for (let i = 0; i < 3; i++) {
        const c = await stream.consumer('g', { startPositions: async (ps) => new Map(ps.map((p) => [p, 0n])) });
        let got: StreamRecord[] = [];
        const until = Date.now() + 5000;
        while (got.length === 0 && Date.now() < until) got = await c.poll(100, 200);
        expect(got[0]?.deliveries).toBeUndefined();
        await c.close();
      }
      const sizes: number[] = [];
      let marked: { offset: string; deliveries: number | null } | undefined;
      for (let attempt = 0; attempt < 12 && !marked; attempt++) {
        const r = await dyingReader(topic);
        expect(r.offset).toBe('0');
        sizes.push(r.n);
        if (r.deliveries !== null) marked = r;
      }
      expect(marked?.deliveries).toBeGreaterThanOrEqual(3);
      for (let i = 1; i < sizes.length; i++) expect(sizes[i]).toBeLessThanOrEqual(Math.max(1, Math.floor((sizes[i - 1] as number) / 2)));
      expect(sizes.slice(-3)).toEqual([1, 1, 1]);
      // A reader that gets past the record (its sink stored a later position) starts over.
      const c = await stream.consumer('g', { startPositions: async (ps) => new Map(ps.map((p) => [p, 1n])) });
      let got: StreamRecord[] = [];
      const until = Date.now() + 5000;
      while (got.length === 0 && Date.now() < until) got = await c.poll(100, 200);
      expect(got[0]?.offset).toBe(1n);
      expect(got.every((r) => r.deliveries === undefined)).toBe(true);
      await c.close();
    } finally {
      await stream.close();
    }
  }, 120_000);
});

describe('NATS stream: partition count', () => {
  it('refuses to reopen a topic with another partition count', async () => {
    const topic = `syncline-contract-nats-parts-${randomBytes(4).toString('hex')}`;
    const stream = await open({ partitions: 2, topic });
    await stream.close();
    created.push({ topic, partitions: 3 });
    await expect(openNatsStream({ url, topic, partitions: 3 })).rejects.toMatchObject({ code: 'STREAM_PARTITIONS_MISMATCH', retriable: false });
    await expect(openNatsStream({ url, topic, partitions: 1 })).rejects.toMatchObject({ code: 'STREAM_PARTITIONS_MISMATCH', retriable: false });
  });
});

describe('NATS stream: retention gaps', () => {
  it('refuses a start or committed position below the first retained record; a new group starts there', async () => {
    const topic = `syncline-contract-nats-gap-${randomBytes(4).toString('hex')}`;
    const stream = await open({ partitions: 1, topic });
    const nc = await connect({ servers: url });
    try {
      const producer = await stream.producer();
      await producer.publish(Array.from({ length: 10 }, (_, i) => ({ key: 'k', value: Buffer.from(`r${i}`) })));
      await producer.close();
      const committing = await stream.consumer('gap-group', { startPositions: async () => new Map([[0, 0n]]) });
      await committing.commit(new Map([[0, 2n]]));
      await committing.close();
      // What max_age does to old records: offsets 0..4 (sequences 1..5) are gone.
      const jsm = await nc.jetstreamManager();
      await jsm.streams.purge(partitionStreamName(topic, 0), { seq: 6 });

      const err = await stream.consumer('gap-sink', { startPositions: async () => new Map([[0, 2n]]) }).then(
        async (c) => {
          await c.close();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(RetentionGapError);
      expect(err).toMatchObject({ partition: 0, wanted: 2n, firstRetained: 5n, retriable: false });
      await expect(stream.consumer('gap-group')).rejects.toMatchObject({ name: 'RetentionGapError', wanted: 2n, firstRetained: 5n });

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
      await nc.close();
      await stream.close();
    }
  }, 60_000);
});

describe('NATS stream: lost readers', () => {
  it('loses and repeats nothing when its durable consumers vanish mid-read', async () => {
    const topic = `syncline-contract-nats-lost-${randomBytes(4).toString('hex')}`;
    const partitions = 3;
    const stream = await open({ partitions, topic });
    const nc = await connect({ servers: url });
    try {
      const producer = await stream.producer();
      const total = 6000;
      for (let i = 0; i < total; i += 500) {
        await producer.publish(Array.from({ length: 500 }, (_, j) => ({ key: `public.t:["${(i + j) % 101}"]`, value: Buffer.from(`v:${i + j}`), id: `0/${i + j}:1` })));
      }
      const consumer = await stream.consumer('g');
      const jsm = await nc.jetstreamManager();
      const got: StreamRecord[] = [];
      const until = Date.now() + 30_000;
      let round = 0;
      while (got.length < total && Date.now() < until) {
        got.push(...(await consumer.poll(250, 200)));
        // Every few polls, delete the readers under the consumer (as a server restart
        // without state, or an operator, would): it must resume right after what it holds.
        if (++round % 4 === 0 && round < 20) {
          for (let p = 0; p < partitions; p++) await jsm.consumers.delete(partitionStreamName(topic, p), 'g').catch(() => undefined);
        }
      }
      got.push(...(await consumer.poll(1000, 500)));
      expect(got).toHaveLength(total);
      const byPartition = new Map<number, bigint[]>();
      for (const r of got) byPartition.set(r.partition, [...(byPartition.get(r.partition) ?? []), r.offset]);
      for (const offsets of byPartition.values()) expect(offsets).toEqual(offsets.map((_, i) => BigInt(i)));
    } finally {
      await nc.close();
      await stream.close();
    }
  });
});
