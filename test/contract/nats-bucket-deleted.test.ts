/**
 * The NATS positions bucket (committed positions, leases, heartbeats) deleted under a running
 * consumer: it can neither heartbeat nor commit, and its partitions would go unread forever
 * if it kept polling empty; it must fail instead, so that the pipeline reports it. Likewise a
 * membership round held by a call that never settles.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'nats';
import { describe, expect, it } from 'vitest';
import { positionsBucketName } from '../../src/stream/nats/nats-names.js';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const url = NATS_URL;
const created = natsTopicsOfThisFile('The NATS bucket test', 2);

describe('NATS consumer: its positions bucket deleted', () => {
  it('fails the consumer (poll throws) instead of polling nothing forever', async () => {
    const topic = `syncline-contract-nats-bucket-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url, topic, partitions: 2, membership: { heartbeatMs: 100, sessionTimeoutMs: 1000 } });
    const nc = await connect({ servers: url });
    try {
      const producer = await stream.producer();
      await producer.publish(Array.from({ length: 20 }, (_, i) => ({ key: `public.t:["${i}"]`, value: Buffer.from(`v${i}`) })));
      const consumer = await stream.consumer('g');
      let got = 0;
      const until = Date.now() + 10_000;
      while (got < 20 && Date.now() < until) got += (await consumer.poll(100, 200)).length;
      expect(got).toBe(20);
      const jsm = await nc.jetstreamManager();
      await jsm.streams.delete(`KV_${positionsBucketName(topic)}`);
      await producer.publish([{ key: 'public.t:["x"]', value: Buffer.from('after') }]);
      let failure: unknown;
      const end = Date.now() + 8000;
      while (failure === undefined && Date.now() < end) await consumer.poll(100, 200).catch((e: unknown) => (failure = e));
      expect(String(failure)).toMatch(/positions|bucket|not found/i);
      await consumer.close();
    } finally {
      await nc.close();
      await stream.close();
    }
  }, 30_000);
});

describe('NATS consumer: a membership round that never ends', () => {
  it('fails the consumer (retriable) instead of leaving it expired, polling nothing, and close() hanging', async () => {
    const topic = `syncline-contract-nats-stalled-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url, topic, partitions: 2, membership: { heartbeatMs: 50, sessionTimeoutMs: 300 } });
    try {
      const consumer = await stream.consumer('g');
      // A nats.js call that never settles (seen after connection cuts): the next heartbeat.
      const kv = (consumer as unknown as { kv: { put: (...a: unknown[]) => Promise<unknown> } }).kv;
      kv.put = () => new Promise(() => undefined);
      let failure: unknown;
      const end = Date.now() + 10_000;
      while (failure === undefined && Date.now() < end) await consumer.poll(100, 200).catch((e: unknown) => (failure = e));
      expect(failure).toMatchObject({ code: 'NATS_MEMBERSHIP_STALLED', retriable: true });
      await consumer.close();
    } finally {
      await stream.close();
    }
  }, 30_000);
});
