/**
 * A chained record carries one header more than an answered one (Nats-Expected-Last-Msg-Id:
 * the Msg-Id of the record before it, as long as that record's key). A record that fits the
 * server's max_payload without it but not with it was refused by the chained producer
 * (MAX_PAYLOAD_EXCEEDED, not retriable: capture stops) where the producer answering every
 * record stored it. It must be published unchained instead. A record over max_payload even
 * unanswered goes through the topic's object store (claim-check.ts).
 */
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { objectsBucketName, partitionStreamName } from '../../src/stream/nats/nats-names.js';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import { natsMsgIdOf, recordHeaderBlock } from '../../src/stream/nats/record-headers.js';
import type { OutgoingRecord } from '../../src/stream/stream.js';
import { waitFor } from '../helpers/wait.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const created = natsTopicsOfThisFile('The NATS chain max_payload test', 1);

describe('NATS producer: chains and max_payload', () => {
  let nc: NatsConnection;
  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  afterAll(async () => {
    await nc.close();
  });

  it('stores a record that fits max_payload only without the chain header, in order', async () => {
    const topic = `syncline-contract-nats-maxpayload-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    try {
      const producer = await stream.producer();
      const key = `public.t:["${'k'.repeat(200)}"]`;
      const rec = (tag: string, bytes?: number): OutgoingRecord => {
        const id = `0/${tag}`;
        const head = Buffer.byteLength(recordHeaderBlock(key, natsMsgIdOf(key, id)), 'utf8');
        return { key, value: Buffer.from(tag.padEnd(bytes === undefined ? tag.length : bytes - head, '.')), id };
      };
      await producer.publish([rec('a0'), rec('a1')]);
      const max = nc.info?.max_payload as number;
      // Exactly max_payload unanswered-chain-free; chained it would be ~260 bytes over.
      await producer.publish([rec('b0'), rec('big', max), rec('b1')]);
      await producer.publish([rec('c0')]);
      await producer.close();
      const jsm = await nc.jetstreamManager();
      const name = partitionStreamName(topic, 0);
      const { state } = await jsm.streams.info(name);
      const got: string[] = [];
      for (let seq = state.first_seq; seq <= state.last_seq; seq++) got.push(new TextDecoder().decode((await jsm.streams.getMessage(name, { seq })).data).replace(/\.+$/, ''));
      expect(got).toEqual(['a0', 'a1', 'b0', 'big', 'b1', 'c0']);
    } finally {
      await stream.close();
    }
  }, 60_000);

  it('stores a record over max_payload through the object store, in its place, and reads it back whole', async () => {
    const topic = `syncline-contract-nats-maxpayload-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    try {
      const producer = await stream.producer();
      const max = nc.info?.max_payload as number;
      const big = randomBytes(max + 1);
      const key = 'public.t:["big"]';
      await producer.publish([{ key: 'public.t:["1"]', value: Buffer.from('one'), id: '0/1' }, { key, value: big, id: '0/2' }, { key: 'public.t:["3"]', value: Buffer.from('three'), id: '0/3' }]);
      await producer.close();
      // The same record again from a new producer (a capture restart): stored once, its object not put twice.
      const again = await stream.producer();
      await again.publish([{ key, value: big, id: '0/2' }]);
      await again.close();
      const jsm = await nc.jetstreamManager();
      const name = partitionStreamName(topic, 0);
      expect((await jsm.streams.info(name)).state.messages).toBe(3);
      const stored = await jsm.streams.getMessage(name, { seq: 2 });
      expect(stored.data.length).toBe(0);
      expect(stored.header.get('Syncline-Object-Bucket')).toBe(objectsBucketName(topic));
      expect(stored.header.get('Syncline-Object-Size')).toBe(String(max + 1));
      expect(stored.header.get('Syncline-Key')).toBe(key);
      // What a client of its own does with the headers.
      const os = await nc.jetstream().views.os(objectsBucketName(topic));
      expect(Buffer.from((await os.getBlob(stored.header.get('Syncline-Object'))) ?? []).equals(big)).toBe(true);
      const objects = await os.list();
      expect(objects).toHaveLength(1);
      expect((await jsm.streams.info(`OBJ_${objectsBucketName(topic)}`)).state.messages).toBe((objects[0]?.chunks ?? 0) + 1);

      const consumer = await stream.consumer('g');
      const got: { offset: bigint; key: string; value: Buffer }[] = [];
      await waitFor('three records', async () => {
        got.push(...(await consumer.poll(10, 200)));
        return got.length >= 3;
      });
      await consumer.close();
      expect(got.map((r) => [r.offset, r.key])).toEqual([[0n, 'public.t:["1"]'], [1n, key], [2n, 'public.t:["3"]']]);
      expect(got[1]?.value.equals(big)).toBe(true);
      expect(got[2]?.value.toString()).toBe('three');
    } finally {
      await stream.close();
    }
  }, 60_000);

  it('refuses a record whose key alone is over max_payload with its size, key and the fix (nats.js says only MAX_PAYLOAD_EXCEEDED)', async () => {
    const topic = `syncline-contract-nats-maxpayload-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    try {
      const producer = await stream.producer();
      const max = nc.info?.max_payload as number;
      const key = `public.t:["${'k'.repeat(max)}"]`;
      const failure = await producer.publish([{ key: 'public.t:["1"]', value: Buffer.from('x'), id: '0/1' }, { key, value: Buffer.from('y'), id: '0/2' }]).catch((err: unknown) => err);
      expect(failure).toMatchObject({ code: 'NATS_MAX_PAYLOAD_EXCEEDED', retriable: false });
      expect((failure as Error).message).toMatch(new RegExp(`^NATS: a record of ${key.length + 1} bytes \\(key public\\.t:\\["k+…\\) is larger than the server's max_payload of ${max} bytes`));
      await producer.close();
      // Nothing of the call was stored.
      expect((await (await nc.jetstreamManager()).streams.info(partitionStreamName(topic, 0))).state.messages).toBe(0);
    } finally {
      await stream.close();
    }
  }, 60_000);
});
