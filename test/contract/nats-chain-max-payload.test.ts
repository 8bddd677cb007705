/**
 * A chained record carries one header more than an answered one (Nats-Expected-Last-Msg-Id:
 * the Msg-Id of the record before it, as long as that record's key). A record that fits the
 * server's max_payload without it but not with it was refused by the chained producer
 * (MAX_PAYLOAD_EXCEEDED, not retriable: capture stops) where the producer answering every
 * record stored it. It must be published unchained instead.
 */
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partitionStreamName } from '../../src/stream/nats/nats-names.js';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import { natsMsgIdOf, recordHeaderBlock } from '../../src/stream/nats/record-headers.js';
import type { OutgoingRecord } from '../../src/stream/stream.js';
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

  it('refuses a record over max_payload with its size, key and the fix (nats.js says only MAX_PAYLOAD_EXCEEDED)', async () => {
    const topic = `syncline-contract-nats-maxpayload-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    try {
      const producer = await stream.producer();
      const max = nc.info?.max_payload as number;
      const failure = await producer.publish([{ key: 'public.t:["1"]', value: Buffer.from('x'), id: '0/1' }, { key: 'public.t:["big"]', value: Buffer.alloc(max + 1, 'y'), id: '0/2' }]).catch((err: unknown) => err);
      expect(failure).toMatchObject({ code: 'NATS_MAX_PAYLOAD_EXCEEDED', retriable: false });
      expect((failure as Error).message).toBe(
        `NATS: a record of ${max + 1} bytes (key public.t:["big"]) is larger than the server's max_payload of ${max} bytes: raise max_payload in the nats-server configuration beyond it (at most 64 MB), or keep such values out of the published tables`,
      );
      await producer.close();
    } finally {
      await stream.close();
    }
  }, 60_000);
});
