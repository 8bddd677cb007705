/**
 * A NATS partition stream deleted under a running consumer and created again (an operator
 * resetting the topic; the next capture start creates the streams): the new stream's
 * sequences start at 1 again, below the group's position. Reading on from that position
 * would skip the new stream's first records without a trace; the consumer must either read
 * them or fail.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'nats';
import { describe, expect, it } from 'vitest';
import { partitionStreamName } from '../../src/stream/nats/nats-names.js';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import type { StreamRecord } from '../../src/stream/stream.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const url = NATS_URL;
const created = natsTopicsOfThisFile('The NATS stream recreation test', 1);

const batch = (tag: string, n: number) => Array.from({ length: n }, (_, i) => ({ key: `public.t:["${i}"]`, value: Buffer.from(`${tag}${i}`) }));

describe('NATS consumer: its partition stream deleted and created again', () => {
  it('reads the new stream from its start, or fails; it does not skip its first records', async () => {
    const topic = `syncline-contract-nats-recreate-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url, topic, partitions: 1, membership: { heartbeatMs: 100, sessionTimeoutMs: 1000 } });
    const nc = await connect({ servers: url });
    try {
      const producer = await stream.producer();
      await producer.publish(batch('a', 50));
      const consumer = await stream.consumer('g');
      const got: StreamRecord[] = [];
      let until = Date.now() + 10_000;
      while (got.length < 50 && Date.now() < until) got.push(...(await consumer.poll(100, 200)));
      await consumer.commit(new Map([[0, 50n]]));
      const jsm = await nc.jetstreamManager();
      await jsm.streams.delete(partitionStreamName(topic, 0));
      // A capture start creates the stream again and publishes into it.
      const again = await openNatsStream({ url, topic, partitions: 1 });
      const p2 = await again.producer();
      await p2.publish(batch('b', 20));
      await p2.close();
      await again.close();
      const after: string[] = [];
      let failure: unknown;
      until = Date.now() + 8000;
      while (failure === undefined && after.length < 20 && Date.now() < until) {
        await consumer
          .poll(100, 200)
          .then((rs) => after.push(...rs.map((r) => r.value.toString())))
          .catch((e: unknown) => (failure = e));
      }
      if (failure === undefined) expect(after).toEqual(batch('b', 20).map((r) => r.value.toString()));
      else expect(String(failure)).toMatch(/created again|not found/);
      await consumer.close();
    } finally {
      await nc.close();
      await stream.close();
    }
  }, 30_000);
});
