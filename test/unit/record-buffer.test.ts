import { describe, expect, it } from 'vitest';
import { RecordBuffer } from '../../src/stream/record-buffer.js';
import type { StreamRecord } from '../../src/stream/stream.js';

function records(partition: number, from: number, n: number): StreamRecord[] {
  return Array.from({ length: n }, (_, i) => ({ partition, offset: BigInt(from + i), key: 'k', value: Buffer.alloc(0), timestamp: 0 }));
}

describe('RecordBuffer.room', () => {
  it('resolves at once when the buffer is already at or below the mark', async () => {
    const b = new RecordBuffer();
    b.push(0, records(0, 0, 3));
    await expect(b.room(3, 1000)).resolves.toBe(true);
  });

  it('resolves true once take() brought the buffer down to the mark', async () => {
    const b = new RecordBuffer();
    b.push(0, records(0, 0, 10));
    const room = b.room(4, 5000);
    b.take([0], 3);
    b.take([0], 3);
    await expect(room).resolves.toBe(true);
    expect(b.size).toBe(4);
  });

  it('resolves true when clear() drops what was held', async () => {
    const b = new RecordBuffer();
    b.push(1, records(1, 0, 10));
    const room = b.room(0, 5000);
    b.clear(1);
    await expect(room).resolves.toBe(true);
  });

  it('resolves false after the timeout, or on wake() while still full', async () => {
    const b = new RecordBuffer();
    b.push(0, records(0, 0, 10));
    await expect(b.room(5, 20)).resolves.toBe(false);
    const room = b.room(5, 5000);
    b.wake();
    await expect(room).resolves.toBe(false);
  });

  it('a push does not end the wait', async () => {
    const b = new RecordBuffer();
    b.push(0, records(0, 0, 10));
    const room = b.room(5, 50);
    b.push(0, records(0, 10, 1));
    await expect(room).resolves.toBe(false);
  });
});
