/**
 * The NATS producer's chains (src/stream/nats/publish-chains.ts) against the real server:
 * once a partition's last Msg-Id is known, its records are stored without an answer each,
 * every one expecting the one before it, and the call's last one answered. What must hold:
 * everything stored once and in order; and when a record of a chain is not stored (refused
 * without an answer, or another publisher's message came in between), nothing after it in
 * that partition is, and the call fails (retriably when publishing again can succeed).
 */
import { randomBytes } from 'node:crypto';
import { connect, headers, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SynclineError } from '../../src/core/errors.js';
import { partitionStreamName, partitionSubject } from '../../src/stream/nats/nats-names.js';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import type { OutgoingRecord } from '../../src/stream/stream.js';
import { storedValues as stored } from './nats-stored.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const created = natsTopicsOfThisFile('The NATS publish chain test', 4);

const records = (tag: string, n: number, keys = n, bytes = 0): OutgoingRecord[] =>
  Array.from({ length: n }, (_, i) => ({ key: `public.t:["${i % keys}"]`, value: Buffer.from(`${tag}${i}`.padEnd(bytes, '.')), id: `0/${tag}:${i}` }));


const values = (rs: OutgoingRecord[]): string[] => rs.map((r) => r.value.toString().replace(/\.+$/, ''));

describe('NATS producer: chained publishes', () => {
  let nc: NatsConnection;
  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  afterAll(async () => {
    await nc.close();
  });

  it('chains a partition once its last Msg-Id is known, storing every record once and in order', async () => {
    const topic = `syncline-contract-nats-chains-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 4 });
    try {
      const producer = await stream.producer();
      const calls = [records('a', 40), records('b', 400, 40), records('c', 40)];
      // The first call is answered record by record; the next ones, sent after its answers, are chained.
      await producer.publish(calls[0] as OutgoingRecord[]);
      await Promise.all([producer.publish(calls[1] as OutgoingRecord[]), producer.publish(calls[2] as OutgoingRecord[])]);
      await producer.close();
      const all = calls.flat();
      const jsm = await nc.jetstreamManager();
      let total = 0;
      let chained = 0;
      for (let p = 0; p < 4; p++) {
        const got = await stored(nc, topic, p);
        const mine = values(all.filter((r) => got.includes(r.value.toString())));
        expect(got).toEqual(mine); // in publish order, once each
        total += got.length;
        const name = partitionStreamName(topic, p);
        const { state } = await jsm.streams.info(name);
        for (let seq = state.first_seq; seq <= state.last_seq; seq++) if ((await jsm.streams.getMessage(name, { seq })).header?.get('Nats-Expected-Last-Msg-Id')) chained++;
      }
      expect(total).toBe(all.length);
      // Every record after the first call expected the one before it.
      expect(chained).toBe(all.length - 40);
    } finally {
      await stream.close();
    }
  }, 60_000);

  it('fails the call retriably and stores nothing more of that partition when another message came in between', async () => {
    const topic = `syncline-contract-nats-chains-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    try {
      const producer = await stream.producer();
      const [a, b, c] = [records('a', 5), records('b', 5), records('c', 5)] as [OutgoingRecord[], OutgoingRecord[], OutgoingRecord[]];
      await producer.publish(a);
      await producer.publish(b); // chained
      // Another publisher (a second capture on the same topic, a hand-made message).
      const h = headers();
      h.set('Syncline-Key', 'public.t:["x"]');
      await (await nc.jetstream()).publish(`${partitionSubject(topic, 0)}.public.t`, Buffer.from('foreign'), { headers: h });
      const failure = (await producer.publish(c).then(() => undefined, (err: unknown) => err)) as SynclineError | undefined;
      expect(failure).toMatchObject({ code: 'NATS_CHAIN_BROKEN', retriable: true });
      expect(await stored(nc, topic, 0)).toEqual([...values(a), ...values(b), 'foreign']);
      // Capture's restart: a new producer answers every record until it knows the last Msg-Id.
      const again = await stream.producer();
      await again.publish(c);
      await again.publish(records('d', 3));
      await again.close();
      expect(await stored(nc, topic, 0)).toEqual([...values(a), ...values(b), 'foreign', ...values(c), 'd0', 'd1', 'd2']);
      // Another publisher writes this topic: after the break, the stream's producers chain nothing.
      const jsm = await nc.jetstreamManager();
      const last = await jsm.streams.getMessage(partitionStreamName(topic, 0), { last_by_subj: `${partitionSubject(topic, 0)}.public.t` });
      expect(new TextDecoder().decode(last.data)).toBe('d2');
      expect(last.header?.get('Nats-Expected-Last-Msg-Id') ?? '').toBe('');
      await producer.close().catch(() => undefined);
    } finally {
      await stream.close();
    }
  }, 60_000);

  it('stores nothing after a record the server refused without an answer, and names the refusal when answered', async () => {
    const topic = `syncline-contract-nats-chains-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 1 });
    try {
      const producer = await stream.producer();
      const a = records('a', 3);
      await producer.publish(a);
      const jsm = await nc.jetstreamManager();
      const name = partitionStreamName(topic, 0);
      const { config } = await jsm.streams.info(name);
      await jsm.streams.update(name, { ...config, max_msg_size: 400 });
      const small = records('s', 4, 4, 10);
      const big = records('big', 1, 1, 600);
      const call = [small[0], big[0], small[1], small[2], small[3]] as OutgoingRecord[];
      const failure = (await producer.publish(call).then(() => undefined, (err: unknown) => err)) as SynclineError | undefined;
      expect(failure).toMatchObject({ code: 'NATS_CHAIN_BROKEN', retriable: true });
      expect(await stored(nc, topic, 0)).toEqual([...values(a), 's0']);
      // Published again (answered, after the break), the refusal is named and final.
      const again = await stream.producer();
      const named = (await again.publish(big).then(() => undefined, (err: unknown) => err)) as SynclineError | undefined;
      expect(named?.retriable).toBe(false);
      expect(named?.message).toMatch(/maximum|size/i);
      expect(await stored(nc, topic, 0)).toEqual([...values(a), 's0']);
      await again.close().catch(() => undefined);
      await producer.close().catch(() => undefined);
    } finally {
      await stream.close();
    }
  }, 60_000);
});
