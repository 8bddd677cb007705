/**
 * Read-ahead on a NATS consumer (apply polls the next batch while it applies the one
 * before): max_deliver counts deaths of apply against the records of a partition's first
 * poll after a start (nats/delivery-tracker.ts), so those are never handed out by a poll
 * that reads ahead, and nothing is read ahead while they are applied.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import type { StreamRecord } from '../../src/stream/stream.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const created = natsTopicsOfThisFile('The NATS read-ahead test', 2);

async function pollUntil(poll: () => Promise<StreamRecord[]>, want: number): Promise<StreamRecord[]> {
  const got: StreamRecord[] = [];
  const until = Date.now() + 10_000;
  while (got.length < want && Date.now() < until) got.push(...(await poll()));
  return got;
}

describe('NATS consumer: read-ahead and the first records after a start', () => {
  it('hands a partition\'s first records only to a poll that does not read ahead, and forbids reading ahead while they are applied', async () => {
    const topic = `syncline-contract-nats-ahead-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const stream = await openNatsStream({ url: NATS_URL, topic, partitions: 2 });
    try {
      const producer = await stream.producer();
      // Keys of both partitions.
      await producer.publish(Array.from({ length: 200 }, (_, i) => ({ key: `public.t:["${i}"]`, value: Buffer.from(`v${i}`) })));
      const c = await stream.consumer('g');
      try {
        // Every partition waits for its first poll: a poll that reads ahead gets nothing.
        expect(await c.poll(1000, 300, { ahead: true })).toEqual([]);
        const first = await pollUntil(() => c.poll(1000, 300), 1);
        expect(new Set(first.map((r) => r.partition)).size).toBeGreaterThan(0);
        expect(c.readAhead).toBe(false);
        // The rest (a partition whose first records were not buffered yet gets its first poll now).
        const rest = await pollUntil(() => c.poll(1000, 300), 200 - first.length);
        expect(first.length + rest.length).toBe(200);
        // A poll that handed out no first records lets apply read ahead again.
        await producer.publish([{ key: 'public.t:["1"]', value: Buffer.from('again') }]);
        const later = await pollUntil(() => c.poll(1000, 300, { ahead: true }), 1);
        expect(later.map((r) => r.value.toString())).toEqual(['again']);
        expect(c.readAhead).not.toBe(false);
      } finally {
        await c.close();
      }
    } finally {
      await stream.close();
    }
  });
});
