import { describe, expect, it } from 'vitest';
import { nextDelivery, type DeliveryRecord } from '../../src/stream/nats/delivery-tracker.js';

/** Simulates readers that die during their first poll every time, from `handed` records. */
function attemptsUntilExhausted(firstHanded: number, maxDeliver: number): { caps: number[]; attempts: number } {
  let prev: DeliveryRecord | undefined;
  const caps: number[] = [];
  for (let attempt = 1; attempt < 100; attempt++) {
    const d = nextDelivery(prev, 7n, maxDeliver);
    if (d.exhausted) return { caps, attempts: attempt };
    const handed = Math.min(d.cap, firstHanded);
    caps.push(handed);
    prev = { offset: '7', count: d.count, singles: d.singles, handed };
  }
  throw new Error('never exhausted');
}

describe('NATS max_deliver bookkeeping (nextDelivery)', () => {
  it('halves the first poll after each failed attempt, then dead-letters after maxDeliver lone deliveries', () => {
    const { caps, attempts } = attemptsUntilExhausted(1000, 3);
    expect(caps).toEqual([1000, 500, 250, 125, 62, 31, 15, 7, 3, 1, 1, 1]);
    expect(attempts).toBe(13);
  });

  it('starts over at another offset, and does not count an attempt that handed nothing out', () => {
    expect(nextDelivery({ offset: '6', count: 9, singles: 9, handed: 1 }, 7n, 3)).toMatchObject({ count: 1, cap: Infinity, exhausted: false });
    expect(nextDelivery({ offset: '7', count: 4, singles: 0, handed: 0 }, 7n, 3)).toMatchObject({ count: 1, exhausted: false });
    expect(nextDelivery(undefined, 0n, 1)).toMatchObject({ count: 1, exhausted: false });
    expect(nextDelivery({ offset: '7', count: 2, singles: 0, handed: 1 }, 7n, 1)).toMatchObject({ count: 3, cap: 1, exhausted: true });
  });
});
