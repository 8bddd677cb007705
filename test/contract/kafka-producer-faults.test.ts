/**
 * The idempotent producer against a real broker under faults (red team, 2026-12-06): batches
 * over the topic's max.message.bytes, a topic made or remade by another process, connections
 * cut at any point of a produce, and a leader that moves. The promise under test: every
 * record of a send that resolved is stored exactly once, in order per partition; anything
 * else is an error that says what happened.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotentProducer, type IdempotentProducerOptions } from '../../src/stream/kafka/idempotent-producer.js';
import { KafkaConnection } from '../../src/stream/kafka/kafka-connection.js';
import { decodeMetadataResponse, type ProduceRecord } from '../../src/stream/kafka/protocol/messages.js';
import { requireListening } from './broker-check.js';

const port = Number(process.env.KAFKA_PORT ?? 9092);
const brokers = [`127.0.0.1:${port}`];
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
const topics = new Set<string>();
const fast = { maxAttempts: 5, baseMs: 20, maxMs: 100, jitter: false };

beforeAll(async () => {
  await requireListening('127.0.0.1', port, 'The Kafka contract tests need a broker: start one with `bash scripts/kafka.sh start` (KAFKA_PORT selects the port).');
  await admin.connect();
});

afterAll(async () => {
  if (topics.size > 0) await admin.deleteTopics({ topics: [...topics] }).catch(() => undefined);
  await admin.disconnect();
});

async function createTopic(topic: string, partitions: number, config: Record<string, string> = {}): Promise<string> {
  topics.add(topic);
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: partitions, configEntries: Object.entries(config).map(([name, value]) => ({ name, value })) }] });
  return topic;
}

const newTopic = (partitions: number, config: Record<string, string> = {}): Promise<string> => createTopic(`kafka13-faults-${randomBytes(4).toString('hex')}`, partitions, config);

async function stored(topic: string): Promise<Map<number, number>> {
  return new Map((await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, Number(o.high)]));
}

/** Every value of the topic per partition, in offset order. */
async function readAll(topic: string, partitions: number): Promise<Map<number, string[]>> {
  const total = [...(await stored(topic)).values()].reduce((a, b) => a + b, 0);
  const seen = new Map<number, string[]>(Array.from({ length: partitions }, (_, p) => [p, []]));
  const consumer = kafka.consumer({ groupId: `g-${topic}` });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let count = 0;
  await new Promise<void>((resolve) => {
    if (total === 0) resolve();
    void consumer.run({
      eachMessage: async ({ partition, message }) => {
        seen.get(partition)?.push(message.value?.toString() ?? '');
        if (++count === total) resolve();
      },
    });
  });
  await consumer.disconnect();
  return seen;
}

const records = (n: number, tag: string, size = 0): ProduceRecord[] => Array.from({ length: n }, (_, i) => ({ key: `k${i % 7}`, value: Buffer.from(`${tag}-${i}`.padEnd(size, '.')) }));

type RequestAction = 'forward' | 'cut-before' | 'cut-mid-request';
type ResponseAction = Buffer | 'cut-after' | 'cut-mid-answer';

interface ProxyHooks {
  onRequest?: (apiKey: number) => RequestAction;
  /** The response frame (size prefix included) of a request with `apiKey`; what to do with it. */
  onResponse?: (apiKey: number, frame: Buffer) => ResponseAction;
}

interface Proxy {
  port: number;
  requests: Map<number, number>;
  close: () => void;
}

/** Splits a byte stream into Kafka frames (int32 size prefix), calling `onFrame` with each whole frame. */
function framer(onFrame: (frame: Buffer) => void): (chunk: Buffer) => void {
  let buffered: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readInt32BE(0)) {
      const size = buffered.readInt32BE(0);
      onFrame(buffered.subarray(0, 4 + size));
      buffered = buffered.subarray(4 + size);
    }
  };
}

/**
 * A TCP proxy in front of the broker that sees whole frames: each request can be forwarded,
 * or the connection cut before it or halfway through it; each response passed, replaced, or
 * the connection cut instead of it or halfway through it.
 */
function frameProxy(hooks: ProxyHooks): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  const requests = new Map<number, number>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port });
    sockets.add(client).add(upstream);
    const apiKeys = new Map<number, number>(); // correlation id → api key
    const cut = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on(
      'data',
      framer((frame) => {
        if (client.destroyed) return;
        const apiKey = frame.readInt16BE(4);
        requests.set(apiKey, (requests.get(apiKey) ?? 0) + 1);
        const action = hooks.onRequest?.(apiKey) ?? 'forward';
        if (action === 'cut-before') return cut();
        if (action === 'cut-mid-request') {
          upstream.write(frame.subarray(0, frame.length >> 1), cut);
          return;
        }
        apiKeys.set(frame.readInt32BE(8), apiKey);
        upstream.write(frame);
      }),
    );
    upstream.on(
      'data',
      framer((frame) => {
        if (client.destroyed) return;
        const id = frame.readInt32BE(4);
        const apiKey = apiKeys.get(id) ?? -1;
        apiKeys.delete(id);
        const action = hooks.onResponse?.(apiKey, frame) ?? frame;
        if (action === 'cut-after') return cut();
        if (action === 'cut-mid-answer') {
          client.write(frame.subarray(0, frame.length >> 1), cut);
          return;
        }
        client.write(action);
      }),
    );
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', cut);
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as net.AddressInfo).port,
        requests,
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      });
    });
  });
}

function producerVia(proxyPort: number, topic: string, extra: Partial<IdempotentProducerOptions> = {}): IdempotentProducer {
  return new IdempotentProducer({ brokers, clientId: 'test', topic, retry: fast, connect: (host, _port, timeoutMs) => KafkaConnection.connect(host, proxyPort, timeoutMs), ...extra });
}

/** A seeded generator (mulberry32): a failing run can be repeated. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Sets the error code of `partition` in a Produce v3 response frame (one topic). */
function withProduceError(frame: Buffer, partition: number, code: number): Buffer {
  const out = Buffer.from(frame);
  let o = 4 + 4; // size, correlation id
  const topicsCount = out.readInt32BE(o);
  o += 4;
  for (let t = 0; t < topicsCount; t++) {
    o += 2 + out.readInt16BE(o);
    const n = out.readInt32BE(o);
    o += 4;
    for (let p = 0; p < n; p++, o += 4 + 2 + 8 + 8) if (out.readInt32BE(o) === partition) out.writeInt16BE(code, o + 4);
  }
  return out;
}

/** A Metadata v4 response frame for `topic` with its partitions led by the given nodes. */
function metadataFrame(correlationId: number, topic: string, nodes: { nodeId: number; port: number }[], leaders: Map<number, number>): Buffer {
  const parts: Buffer[] = [];
  const int16 = (v: number): void => void parts.push(Buffer.from([(v >> 8) & 0xff, v & 0xff]));
  const int32 = (v: number): void => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(v);
    parts.push(b);
  };
  const str = (s: string | null): void => {
    if (s === null) return int16(-1);
    int16(Buffer.byteLength(s));
    parts.push(Buffer.from(s));
  };
  int32(correlationId);
  int32(0); // throttle
  int32(nodes.length);
  for (const n of nodes) {
    int32(n.nodeId);
    str('127.0.0.1');
    int32(n.port);
    str(null);
  }
  str(null); // cluster id
  int32(nodes[0]?.nodeId ?? -1); // controller
  int32(1);
  int16(0);
  str(topic);
  parts.push(Buffer.from([0])); // not internal
  int32(leaders.size);
  for (const [p, leader] of leaders) {
    int16(0);
    int32(p);
    int32(leader);
    int32(1);
    int32(leader);
    int32(1);
    int32(leader);
  }
  const body = Buffer.concat(parts);
  const size = Buffer.alloc(4);
  size.writeInt32BE(body.length);
  return Buffer.concat([size, body]);
}

describe('Kafka idempotent producer under faults', () => {
  it("splits a batch over the topic's max.message.bytes whose records fit, and stores it whole and in order", async () => {
    const topic = await newTopic(2, { 'max.message.bytes': '2000' });
    const producer = new IdempotentProducer({ brokers, clientId: 'test', topic, retry: fast });
    await producer.connect();
    try {
      // 9 × ~300 B in one partition's batch: ~2.9 kB, over the topic's 2000 B; each record fits.
      await producer.send(new Map([[0, records(9, 'a', 300)], [1, records(2, 'a', 300)]]));
      await producer.send(new Map([[0, records(3, 'b', 300)]]));
    } finally {
      producer.close();
    }
    const seen = await readAll(topic, 2);
    expect(seen.get(0)?.map((v) => v.replace(/\.+$/, ''))).toEqual([...records(9, 'a'), ...records(3, 'b')].map((r) => r.value?.toString()));
    expect(seen.get(1)).toHaveLength(2);
  });

  it('fails a record larger than the topic accepts at once, saying its size and which setting to raise, and stores nothing', async () => {
    const topic = await newTopic(1, { 'max.message.bytes': '2000' });
    const producer = new IdempotentProducer({ brokers, clientId: 'test', topic, retry: { maxAttempts: 10, baseMs: 1000, maxMs: 1000, jitter: false } });
    await producer.connect();
    const began = Date.now();
    try {
      await expect(producer.send(new Map([[0, [...records(2, 'ok', 100), { key: 'big', value: Buffer.alloc(5000, 120) }, ...records(2, 'after', 100)]]]))).rejects.toMatchObject({
        code: 'KAFKA_MESSAGE_TOO_LARGE',
        retriable: false,
        message: expect.stringMatching(/record of 5003 bytes \(key 3, value 5000\).*max\.message\.bytes/) as unknown,
      });
    } finally {
      producer.close();
    }
    expect(Date.now() - began).toBeLessThan(1000); // no backoff, no retry: it cannot pass
    // The records before it in its batch were split off and stored; nothing from it on.
    expect((await readAll(topic, 1)).get(0)?.map((v) => v.replace(/\.+$/, ''))).toEqual(['ok-0', 'ok-1']);
  });

  it("fails a record over the broker's socket.request.max.bytes (100 MiB) at once instead of retrying a dropped connection", async () => {
    // Even with the topic's max.message.bytes above it: the broker drops a larger request's connection unanswered.
    const topic = await newTopic(1, { 'max.message.bytes': String(200 * 1024 * 1024) });
    const producer = new IdempotentProducer({ brokers, clientId: 'test', topic, retry: fast });
    await producer.connect();
    try {
      await expect(producer.send(new Map([[0, [{ key: 'k', value: Buffer.alloc(101 * 1024 * 1024, 97) }]]]))).rejects.toMatchObject({
        code: 'KAFKA_MESSAGE_TOO_LARGE',
        retriable: false,
        message: expect.stringMatching(/socket\.request\.max\.bytes.*largest record has 105906177 bytes/) as unknown,
      });
    } finally {
      producer.close();
    }
  });

  it('refuses a topic that another process made with another partition count', async () => {
    const topic = await newTopic(2);
    const producer = new IdempotentProducer({ brokers, clientId: 'test', topic, partitions: 3, retry: fast });
    try {
      await expect(producer.connect()).rejects.toMatchObject({ code: 'STREAM_PARTITIONS_MISMATCH', retriable: false, message: expect.stringContaining('has 2 partitions but 3 are configured') as unknown });
    } finally {
      producer.close();
    }
  });

  it('fails, saying the partition count, when the topic is deleted and made again with fewer partitions', async () => {
    const topic = await newTopic(2);
    const producer = new IdempotentProducer({ brokers, clientId: 'test', topic, partitions: 2, retry: { maxAttempts: 30, baseMs: 100, maxMs: 300, jitter: false } });
    await producer.connect();
    try {
      await producer.send(new Map([[0, records(3, 'a')], [1, records(3, 'a')]]));
      await admin.deleteTopics({ topics: [topic] });
      await createTopic(topic, 1);
      // Partition 1 is gone: its leader unknown, the metadata read again says why, and that cannot pass.
      await expect(producer.send(new Map([[1, records(1, 'b')]]))).rejects.toMatchObject({ code: 'STREAM_PARTITIONS_MISMATCH', retriable: false });
    } finally {
      producer.close();
    }
    expect(await stored(topic)).toEqual(new Map([[0, 0]]));
  });

  it('fails instead of writing on when the topic is deleted and made again under it (acknowledged records gone)', async () => {
    const topic = await newTopic(2);
    const producer = new IdempotentProducer({ brokers, clientId: 'test', topic, partitions: 2, retry: { maxAttempts: 30, baseMs: 100, maxMs: 300, jitter: false } });
    await producer.connect();
    try {
      await producer.send(new Map([[0, records(5, 'a')], [1, records(3, 'a')]]));
      await admin.deleteTopics({ topics: [topic] });
      await createTopic(topic, 2);
      await expect(producer.send(new Map([[0, records(2, 'b')]]))).rejects.toMatchObject({ code: 'KAFKA_LOG_TRUNCATED', retriable: false, message: expect.stringContaining('partition 0 stored a batch at offset 0') as unknown });
      await expect(producer.send(new Map([[1, records(1, 'c')]]))).rejects.toMatchObject({ code: 'KAFKA_LOG_TRUNCATED' });
    } finally {
      producer.close();
    }
  });

  it('stores every record once and in order when connections are cut at any point of a produce', async () => {
    const seed = Number(process.env.SYNCLINE_TEST_SEED ?? Date.now() % 1_000_000);
    const next = random(seed);
    const topic = await newTopic(3);
    let cuts = 0;
    const proxy = await frameProxy({
      onRequest: (apiKey) => {
        if (apiKey !== 0) return 'forward';
        const r = next();
        if (r < 0.1) return (cuts++, 'cut-before');
        if (r < 0.2) return (cuts++, 'cut-mid-request');
        return 'forward';
      },
      onResponse: (apiKey, frame) => {
        if (apiKey !== 0) return frame;
        const r = next();
        if (r < 0.15) return (cuts++, 'cut-after'); // stored, the answer lost
        if (r < 0.25) return (cuts++, 'cut-mid-answer');
        return frame;
      },
    });
    const producer = producerVia(proxy.port, topic, { retry: { maxAttempts: 40, baseMs: 5, maxMs: 20, jitter: false } });
    const sent = new Map<number, string[]>([[0, []], [1, []], [2, []]]);
    try {
      await producer.connect();
      for (let s = 0; s < 60; s++) {
        const batch = new Map<number, ProduceRecord[]>();
        for (let p = 0; p < 3; p++) {
          if (next() < 0.3) continue;
          const list = records(1 + Math.floor(next() * 40), `s${s}p${p}`);
          batch.set(p, list);
          sent.get(p)?.push(...list.map((r) => r.value?.toString() ?? ''));
        }
        await producer.send(batch);
      }
    } finally {
      producer.close();
      proxy.close();
    }
    expect(cuts, `seed ${seed}`).toBeGreaterThan(10);
    expect(await readAll(topic, 3), `seed ${seed}`).toEqual(sent);
  });

  it('sends again to the new leader when a stored batch is answered NOT_LEADER_OR_FOLLOWER, and stores it once', async () => {
    const topic = await newTopic(2);
    // Node 99 is a second address of the same broker: the metadata below says it now leads partition 1.
    const moved = await frameProxy({});
    let leaderMoved = false;
    let sends = 0;
    const proxy = await frameProxy({
      onResponse: (apiKey, frame) => {
        if (apiKey === 3 && leaderMoved) {
          const real = decodeMetadataResponse(frame.subarray(8), topic);
          const node = real.brokers[0] as { nodeId: number };
          return metadataFrame(frame.readInt32BE(4), topic, [{ nodeId: node.nodeId, port }, { nodeId: 99, port: moved.port }], new Map([[0, node.nodeId], [1, 99]]));
        }
        if (apiKey === 0 && !leaderMoved && sends === 2) {
          leaderMoved = true;
          return withProduceError(frame, 1, 6); // stored by the broker, refused in the answer
        }
        return frame;
      },
    });
    const producer = new IdempotentProducer({
      brokers,
      clientId: 'test',
      topic,
      retry: fast,
      // The bootstrap and node 1 through the first proxy; node 99's address is the second one's port.
      connect: (host, p, timeoutMs) => KafkaConnection.connect(host, p === moved.port ? moved.port : proxy.port, timeoutMs),
    });
    try {
      await producer.connect();
      for (; sends < 5; ) {
        sends++;
        await producer.send(new Map([[0, records(4, `s${sends}`)], [1, records(3, `s${sends}`)]]));
      }
    } finally {
      producer.close();
      proxy.close();
      moved.close();
    }
    expect(leaderMoved).toBe(true);
    expect(moved.requests.get(0)).toBeGreaterThanOrEqual(4); // the resend and the later sends of partition 1
    const seen = await readAll(topic, 2);
    for (const p of [0, 1]) expect(seen.get(p)).toEqual([1, 2, 3, 4, 5].flatMap((s) => records(p === 0 ? 4 : 3, `s${s}`).map((r) => r.value?.toString())));
  });
});
