/**
 * seek() on a NATS consumer while its readers are pulling or repositioning: after each seek
 * the next records of the partition start exactly at the offset sought and follow one
 * another, whatever the reader was doing (a pull in flight, a reposition for an earlier
 * seek, waiting for room in the buffer).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openNatsStream } from '../../src/stream/nats/nats-stream.js';
import type { StreamRecord } from '../../src/stream/stream.js';
import { NATS_URL, natsTopicsOfThisFile } from './nats-topics.js';

const url = NATS_URL;
const created = natsTopicsOfThisFile('The NATS seek test', 1);

describe('NATS consumer: seek while the reader pulls or repositions', () => {
  it('resumes exactly at each offset sought', async () => {
    const topic = `syncline-contract-nats-seek-${randomBytes(4).toString('hex')}`;
    created.push(topic);
    const total = 5000;
    const stream = await openNatsStream({ url, topic, partitions: 1, fetchBatch: 100, bufferRecords: 300 });
    try {
      const producer = await stream.producer();
      for (let i = 0; i < total; i += 1000) await producer.publish(Array.from({ length: 1000 }, (_, j) => ({ key: `public.t:["${i + j}"]`, value: Buffer.from(`v${i + j}`) })));
      const c = await stream.consumer('g');
      const problems: string[] = [];
      let seed = 7;
      const rand = (n: number) => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed % n;
      };
      for (let round = 0; round < 40; round++) {
        const target = BigInt(rand(total - 200));
        // Sometimes seek twice in a row (the second during the first's reposition), or after a pause.
        if (rand(3) === 0) c.seek(0, BigInt(rand(total)));
        if (rand(2) === 0) await new Promise((r) => setTimeout(r, rand(30)));
        c.seek(0, target);
        const got: StreamRecord[] = [];
        const until = Date.now() + 5000;
        while (got.length < 150 && Date.now() < until) got.push(...(await c.poll(rand(200) + 1, 100)));
        const offsets = got.map((r) => r.offset);
        const expected = offsets.map((_, i) => target + BigInt(i));
        if (offsets.length < 150 || offsets.some((o, i) => o !== expected[i])) problems.push(`round ${round}: sought ${target}, got ${offsets.slice(0, 5).join(',')}... (${offsets.length})`);
      }
      expect(problems).toEqual([]);
      await c.close();
    } finally {
      await stream.close();
    }
  }, 120_000);
});
