import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEmbeddedStream } from '../../src/stream/embedded/embedded-stream.js';
import { describeStreamContract } from './stream-contract.js';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'syncline-contract-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describeStreamContract('embedded', ({ partitions, topic }) => openEmbeddedStream({ path: join(dir, topic), partitions }));

describe('embedded stream: offsetsForTime across segments', () => {
  it('finds the first record at or after a time when the partition has rolled into many segments', async () => {
    let now = 1_000;
    const stream = await openEmbeddedStream({ path: join(dir, 'segments'), partitions: 1, segmentBytes: 256, clock: { now: () => now } });
    try {
      const producer = await stream.producer();
      // Ten publishes at times 1000, 2000, ... each of 5 records (several segments each).
      for (let b = 0; b < 10; b++) {
        now = 1_000 * (b + 1);
        await producer.publish(Array.from({ length: 5 }, (_, i) => ({ key: 'k', value: Buffer.from(`b${b}-${i}-${'x'.repeat(40)}`) })));
      }
      expect(await stream.offsetsForTime(0)).toEqual(new Map([[0, 0n]]));
      expect(await stream.offsetsForTime(1_000)).toEqual(new Map([[0, 0n]]));
      expect(await stream.offsetsForTime(1_001)).toEqual(new Map([[0, 5n]]));
      expect(await stream.offsetsForTime(7_000)).toEqual(new Map([[0, 30n]]));
      // Twice: the second lookup skips the segments remembered as older.
      expect(await stream.offsetsForTime(9_500)).toEqual(new Map([[0, 45n]]));
      expect(await stream.offsetsForTime(9_500)).toEqual(new Map([[0, 45n]]));
      expect(await stream.offsetsForTime(10_001)).toEqual(new Map([[0, 50n]]));
      await producer.close();
    } finally {
      await stream.close();
    }
  });
});
