/**
 * The NATS partition reader when a pull's deliveries never reach it, while the durable
 * consumer counts them as delivered and its next pull starts after them. Found by
 * `bench/stream.bench.mjs` at load ~10 when the reader used nats.js's fetch(), which ends a
 * pull on its own timer and unsubscribes: a new group's reader skipped a partition's first
 * 1,000 records (one pull). The same happens to deliveries on the wire when a connection
 * drops; here the server sends the pull's deliveries to an inbox nobody reads.
 */
import { randomBytes } from 'node:crypto';
import { Empty, StorageType, connect, createInbox, headers, type JetStreamManager, type NatsConnection, type PublishOptions } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RecordBuffer } from '../../src/stream/record-buffer.js';
import { requireListening } from './broker-check.js';
import { startReader } from './nats-reader-host.js';

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

/**
 * A connection whose first `dropped` pull requests have their deliveries sent where nobody
 * reads them, as when the connection drops with them on the wire; `lost()` counts those
 * drops as the consumer counts disconnects.
 */
function droppingPulls(conn: NatsConnection, dropped: number): { nc: NatsConnection; lost: () => number } {
  let left = dropped;
  const publish = conn.publish.bind(conn);
  const nc = Object.assign(Object.create(conn) as NatsConnection, {
    publish: (subject: string, data?: Uint8Array | string, options?: PublishOptions) => {
      if (subject.startsWith('$JS.API.CONSUMER.MSG.NEXT.') && left > 0) {
        left--;
        return publish(subject, data, { ...options, reply: createInbox() });
      }
      return publish(subject, data, options);
    },
  });
  return { nc, lost: () => dropped - left };
}

async function readerOf(name: string, explicitStart: boolean, startAt: bigint, conn: { nc: NatsConnection; lost: () => number }, manager?: JetStreamManager) {
  return startReader(name, startAt, explicitStart, { nc: conn.nc, jsm: manager ?? (await nc.jetstreamManager()), disconnects: conn.lost });
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
    const r = await readerOf(name, false, 0n, droppingPulls(nc, 1));
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
    const r = await readerOf(name, true, 40n, droppingPulls(nc, 2));
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
    const r = await readerOf(name, false, 0n, droppingPulls(nc, 1));
    try {
      const got = await offsetsBuffered(r.buffer, 20);
      expect(got).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(30 + i)));
      expect(r.failure()).toBeUndefined();
    } finally {
      await r.close();
    }
  });
});

describe('NATS partition reader: a request it gave up on, then a lost connection', () => {
  it('asks the server what it delivered when the next pull comes back empty, and reads what was lost', async () => {
    const name = await streamWith(20);
    // Armed, the next pull is ended at once on the reader's side by a 408 that is not the
    // server's (a late 408 of an earlier request does that), while the server keeps the
    // request open and sends its deliveries where nobody reads them, as into a connection
    // that drops (the count goes up while the reader's next pull waits).
    let armed = false;
    let lost = 0;
    const publish = nc.publish.bind(nc);
    const conn = Object.assign(Object.create(nc) as NatsConnection, {
      publish: (subject: string, data?: Uint8Array | string, options?: PublishOptions) => {
        if (!armed || !subject.startsWith('$JS.API.CONSUMER.MSG.NEXT.') || options?.reply === undefined) return publish(subject, data, options);
        armed = false;
        publish(subject, data, { ...options, reply: createInbox() });
        publish(options.reply, Empty, { headers: headers(408, 'Request Timeout') });
        setTimeout(() => lost++, 200);
      },
    });
    const r = await readerOf(name, true, 0n, { nc: conn, lost: () => lost });
    try {
      expect(await offsetsBuffered(r.buffer, 20)).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(i)));
      armed = true;
      while (armed) await new Promise((res) => setTimeout(res, 10));
      const js = nc.jetstream();
      for (let i = 20; i < 30; i++) await js.publish(`${name}.0`, Buffer.from(`r${i}`));
      // The 10 records went to the open request's dead inbox; the reader's next pulls come
      // back empty (408) until it asks the server.
      expect(await offsetsBuffered(r.buffer, 10)).toEqual(Array.from({ length: 10 }, (_, i) => BigInt(20 + i)));
      expect(r.failure()).toBeUndefined();
    } finally {
      await r.close();
    }
  });
});

describe('NATS partition reader: its durable consumer deleted by someone else', () => {
  it('repositions again, even when the consumer is deleted right after its creation, and reads every record once', async () => {
    const name = await streamWith(3000);
    const jsm = await nc.jetstreamManager();
    // A deletion by another reader of the group (or an operator) can land between the
    // creation of the consumer and the reader's first pull: make one land there at the
    // second creation.
    let creations = 0;
    const add = jsm.consumers.add.bind(jsm.consumers);
    const consumers = Object.assign(Object.create(jsm.consumers) as JetStreamManager['consumers'], {
      add: async (...args: Parameters<JetStreamManager['consumers']['add']>) => {
        const info = await add(...args);
        if (++creations === 2) await jsm.consumers.delete(name, 'g');
        return info;
      },
    });
    const r = await readerOf(name, true, 0n, { nc, lost: () => 0 }, Object.assign(Object.create(jsm) as JetStreamManager, { consumers }));
    try {
      // The first creation was positionAt's; deleting the consumer under the running reader
      // makes it reposition, and the second creation is deleted at once.
      await jsm.consumers.delete(name, 'g').catch(() => undefined);
      const got = await offsetsBuffered(r.buffer, 3000);
      expect(r.failure()).toBeUndefined();
      expect(got).toEqual(Array.from({ length: 3000 }, (_, i) => BigInt(i)));
      expect(creations).toBeGreaterThanOrEqual(3);
    } finally {
      await r.close();
    }
  });
});
