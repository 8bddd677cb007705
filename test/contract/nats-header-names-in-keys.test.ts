/**
 * nats-server (2.9.x, the machine's) finds a header by the first occurrence of its name in
 * the whole header block, and takes it only when that occurrence starts a line: a record
 * key (Syncline-Key, Syncline-Table, or the key inside a Msg-Id) holding the text
 * `Nats-Msg-Id` or `Nats-Expected-Last-Msg-Id` before the real header hid that header from the
 * server. A hidden Expected-Last-Msg-Id let a chained record be stored after one the server
 * refused without an answer (and, as the call's answered record, resolved the call: the
 * refused record lost); a hidden Msg-Id stored a republished record twice and broke the
 * next chain. Keys are user data (a text primary key).
 */
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partitionStreamName } from '../../src/stream/nats/nats-names.js';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import type { OutgoingRecord } from '../../src/stream/stream.js';
import { storedValues as stored } from './nats-stored.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const created = natsTopicsOfThisFile('The NATS header-names-in-keys test', 1);


const record = (key: string, value: string, id: string, bytes = 0): OutgoingRecord => ({ key, value: Buffer.from(value.padEnd(bytes, '.')), id });

describe('NATS producer: keys holding JetStream header names', () => {
  let nc: NatsConnection;
  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  afterAll(async () => {
    await nc.close();
  });

  it('stores nothing of a chain after a refused record when a key names Nats-Expected-Last-Msg-Id, and fails the call', async () => {
    const topic = `syncline-contract-nats-hdrkey-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    try {
      const producer = await stream.producer();
      await producer.publish([record('public.t:["a"]', 'a0', '0/1:0'), record('public.t:["a"]', 'a1', '0/1:1')]);
      const jsm = await nc.jetstreamManager();
      const name = partitionStreamName(topic, 0);
      const { config } = await jsm.streams.info(name);
      await jsm.streams.update(name, { ...config, max_msg_size: 400 });
      // Chained: `big` is refused without an answer; the record after it expects it.
      const call = [record('public.t:["a"]', 's0', '0/2:0'), record('public.t:["a"]', 'big', '0/2:1', 600), record('public.t:["Nats-Expected-Last-Msg-Id"]', 'after', '0/2:2')];
      const outcome = await producer.publish(call).then(
        () => 'resolved',
        (err: { code?: string }) => err.code,
      );
      expect(await stored(nc, topic)).toEqual(['a0', 'a1', 's0']);
      expect(outcome).toBe('NATS_CHAIN_BROKEN');
      await producer.close().catch(() => undefined);
    } finally {
      await stream.close();
    }
  }, 60_000);

  it('drops a republished record whose key names Nats-Msg-Id, and keeps chaining after it', async () => {
    const topic = `syncline-contract-nats-hdrkey-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    try {
      const weird = [record('public.t:["Nats-Msg-Id"]', 'w0', '0/1:0'), record('public.t:["x Nats-Msg-Id y"]', 'w1', '0/1:1')];
      const first = await stream.producer();
      await first.publish(weird);
      // Chained from here on: a record after the odd key expects its Msg-Id.
      await first.publish([record('public.t:["b"]', 'b0', '0/2:0')]);
      await first.publish([record('public.t:["Nats-Msg-Id"]', 'w2', '0/3:0'), record('public.t:["c"]', 'c0', '0/3:1')]);
      await first.close();
      // Capture's restart republishes after the confirmed position: all dropped as duplicates.
      const again = await stream.producer();
      await again.publish(weird);
      await again.close();
      expect(await stored(nc, topic)).toEqual(['w0', 'w1', 'b0', 'w2', 'c0']);
    } finally {
      await stream.close();
    }
  }, 60_000);
});
