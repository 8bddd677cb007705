/**
 * The NATS partition reader when the client drops a pull's deliveries: nats.js stops a fetch
 * on its own timer (expires × 1.05) and unsubscribes, so messages the server had already
 * delivered to the pull's inbox are never seen, while the durable consumer counts them as
 * delivered and its next pull starts after them. A busy event loop makes that timer fire
 * before the socket's data is read. Found by `bench/stream.bench.mjs` at load ~10: a new
 * group's reader skipped a partition's first 1,000 records (one pull).
 */
import { randomBytes } from 'node:crypto';
import { StorageType, connect, type Consumer, type ConsumerMessages, type FetchOptions, type JetStreamClient, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PartitionReader, type ReaderHost } from '../../src/stream/nats/partition-reader.js';
import { RecordBuffer } from '../../src/stream/record-buffer.js';
import { requireListening } from './broker-check.js';

const url = 'nats://127.0.0.1:4222';
let nc: NatsConnection;
const streams: string[] = [];

beforeAll(async () => {
  await requireListening('127.0.0.1', 4222, 'The NATS partition reader test needs nats-server with JetStream on 127.0.0.1:4222 (see test/contract/nats.contract.test.ts)');
  nc = await connect({ servers: url });
});

afterAll(async () => {
  if (!nc) return;
  const jsm = await nc.jetstreamManager();
  for (const s of streams) await jsm.streams.delete(s).catch(() => undefined);
  await nc.close();
});

/** A JetStream client whose first `dropped` fetches are consumed at the server and lost on the way. */
function droppingFetches(js: JetStreamClient, dropped: number): JetStreamClient {
  let left = dropped;
  const get = js.consumers.get.bind(js.consumers);
  const consumers = Object.create(js.consumers) as JetStreamClient['consumers'];
  consumers.get = async (...args: Parameters<JetStreamClient['consumers']['get']>) => {
    const consumer = await get(...args);
    const fetch = consumer.fetch.bind(consumer);
    const wrapped = Object.create(consumer) as Consumer;
    wrapped.fetch = async (opts?: FetchOptions): Promise<ConsumerMessages> => {
      const pull = await fetch(opts);
      if (left <= 0) return pull;
      left--;
      // The server delivers the pull; the client never hands it over.
      for await (const _ of pull) void _;
      return emptyPull();
    };
    return wrapped;
  };
  return Object.assign(Object.create(js) as JetStreamClient, { consumers });
}

function emptyPull(): ConsumerMessages {
  const it = (async function* () {})();
  return Object.assign(it, { stop: () => undefined, getPending: () => 0 }) as unknown as ConsumerMessages;
}

async function readerOf(name: string, explicitStart: boolean, startAt: bigint, js: JetStreamClient) {
  const jsm = await nc.jetstreamManager();
  const buffer = new RecordBuffer();
  let closed = false;
  let failure: Error | undefined;
  const host: ReaderHost = {
    jsm,
    js,
    durable: 'g',
    groupId: 'g',
    buffer,
    perPartition: 100_000,
    fetchBatch: 100,
    isClosed: () => closed,
    fail: (e) => {
      failure = e;
    },
    waitForSpace: (ms) => new Promise((r) => setTimeout(r, ms)),
    wakeLoops: () => undefined,
  };
  const reader = new PartitionReader(host, 0, name);
  await reader.positionAt(startAt, explicitStart);
  reader.start();
  return {
    buffer,
    failure: () => failure,
    close: async () => {
      closed = true;
      await reader.stop();
    },
  };
}

async function streamWith(records: number): Promise<string> {
  const name = `reader_${randomBytes(4).toString('hex')}`;
  streams.push(name);
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name, subjects: [`${name}.>`], storage: StorageType.Memory });
  const js = nc.jetstream();
  for (let i = 0; i < records; i++) await js.publish(`${name}.0`, Buffer.from(`r${i}`));
  return name;
}

async function offsetsBuffered(buffer: RecordBuffer, want: number): Promise<bigint[]> {
  const got: bigint[] = [];
  const deadline = Date.now() + 15_000;
  while (got.length < want && Date.now() < deadline) {
    for (const r of buffer.take([0], 1000)) got.push(r.offset);
    if (got.length < want) await new Promise((r) => setTimeout(r, 20));
  }
  return got;
}

describe('NATS partition reader: deliveries the client dropped are read again', () => {
  it('a new group (no position of its own) starts at the first record even when its first pull is lost', async () => {
    const name = await streamWith(250);
    const r = await readerOf(name, false, 0n, droppingFetches(nc.jetstream(), 1));
    try {
      const got = await offsetsBuffered(r.buffer, 250);
      expect(got).toEqual(Array.from({ length: 250 }, (_, i) => BigInt(i)));
      expect(r.failure()).toBeUndefined();
    } finally {
      await r.close();
    }
  });

  it('a group with a position, and a pull lost later on, read every record once, in order', async () => {
    const name = await streamWith(250);
    const r = await readerOf(name, true, 40n, droppingFetches(nc.jetstream(), 2));
    try {
      const got = await offsetsBuffered(r.buffer, 210);
      expect(got).toEqual(Array.from({ length: 210 }, (_, i) => BigInt(40 + i)));
      expect(r.failure()).toBeUndefined();
    } finally {
      await r.close();
    }
  });

  it('a new group on a stream whose first records were deleted starts at the first one retained', async () => {
    const name = await streamWith(50);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.purge(name, { keep: 20 });
    const r = await readerOf(name, false, 0n, droppingFetches(nc.jetstream(), 1));
    try {
      const got = await offsetsBuffered(r.buffer, 20);
      expect(got).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(30 + i)));
      expect(r.failure()).toBeUndefined();
    } finally {
      await r.close();
    }
  });
});

describe('NATS partition reader: its durable consumer deleted by someone else', () => {
  it('repositions again, even when the consumer is deleted between its creation and its lookup, and reads every record once', async () => {
    const name = await streamWith(3000);
    const jsm = await nc.jetstreamManager();
    // A deletion by another reader of the group (or an operator) can land between the
    // creation of the consumer and its lookup: make one land there at the second lookup.
    const js = nc.jetstream();
    const get = js.consumers.get.bind(js.consumers);
    let lookups = 0;
    const consumers = Object.create(js.consumers) as JetStreamClient['consumers'];
    consumers.get = async (...args: Parameters<JetStreamClient['consumers']['get']>) => {
      if (++lookups === 2) await jsm.consumers.delete(name, 'g');
      return get(...args);
    };
    const r = await readerOf(name, true, 0n, Object.assign(Object.create(js) as JetStreamClient, { consumers }));
    try {
      // The first lookup was positionAt's; deleting the consumer under the running reader
      // makes it reposition, and the second lookup finds it deleted again.
      await jsm.consumers.delete(name, 'g').catch(() => undefined);
      const got = await offsetsBuffered(r.buffer, 3000);
      expect(r.failure()).toBeUndefined();
      expect(got).toEqual(Array.from({ length: 3000 }, (_, i) => BigInt(i)));
    } finally {
      await r.close();
    }
  });
});
