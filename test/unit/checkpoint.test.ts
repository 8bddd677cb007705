import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Checkpoint, type InFlightBatch } from '../../src/pipeline/checkpoint.js';

describe('checkpoint: confirm only over the done prefix', () => {
  it('holds the position behind an outstanding batch even when later ones are stored', () => {
    const c = new Checkpoint(5n);
    const a = c.begin(10n);
    const b = c.begin(undefined); // a batch inside an open transaction: no position of its own
    const d = c.begin(30n);
    expect(c.complete(d)).toBe(false);
    expect(c.complete(b)).toBe(false);
    expect(c.confirmed).toBe(5n);
    expect(c.outstanding).toBe(3);
    expect(c.complete(a)).toBe(true);
    expect(c.confirmed).toBe(30n);
    expect(c.outstanding).toBe(0);
  });

  it('resolves whenDurable once every batch begun before it is stored', async () => {
    const c = new Checkpoint(0n);
    await c.whenDurable(); // nothing outstanding
    const a = c.begin(1n);
    const b = c.begin(2n);
    let durable = false;
    const waiting = c.whenDurable().then(() => (durable = true));
    c.begin(3n); // begun after: not waited for
    c.complete(b);
    await Promise.resolve();
    expect(durable).toBe(false);
    c.complete(a);
    await waiting;
    expect(durable).toBe(true);
  });

  it('never confirms past an unacknowledged batch, and reaches the last position once all are acknowledged (any interleaving)', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 1000n }),
        // Per batch: the position step it covers (undefined: the batch ends inside a transaction).
        fc.array(fc.option(fc.bigInt({ min: 1n, max: 100n }), { nil: undefined }), { minLength: 1, maxLength: 30 }),
        // The schedule: each step publishes the next batch or acknowledges an outstanding one.
        fc.array(fc.nat(), { maxLength: 120 }),
        (start, steps, schedule) => {
          const c = new Checkpoint(start);
          const positions: (bigint | undefined)[] = [];
          let at = start;
          for (const s of steps) {
            if (s === undefined) positions.push(undefined);
            else positions.push((at += s));
          }
          const batches: InFlightBatch[] = [];
          const acked = new Set<number>();
          const outstanding: number[] = [];
          let last = c.confirmed;
          const check = (): void => {
            // The highest position of the batches before the first unacknowledged one.
            let allowed = start;
            for (let i = 0; i < batches.length && acked.has(i); i++) allowed = positions[i] ?? allowed;
            expect(c.confirmed).toBe(allowed);
            expect(c.confirmed >= last).toBe(true);
            last = c.confirmed;
          };
          const ack = (k: number): void => {
            const [i] = outstanding.splice(k % outstanding.length, 1) as [number];
            acked.add(i);
            c.complete(batches[i] as InFlightBatch);
            check();
          };
          for (const choice of schedule) {
            if (batches.length < positions.length && (outstanding.length === 0 || choice % 2 === 0)) {
              outstanding.push(batches.length);
              batches.push(c.begin(positions[batches.length]));
            } else if (outstanding.length > 0) ack(choice >> 1);
          }
          while (batches.length < positions.length) {
            outstanding.push(batches.length);
            batches.push(c.begin(positions[batches.length]));
          }
          while (outstanding.length > 0) ack(outstanding.length - 1);
          const defined = positions.filter((p): p is bigint => p !== undefined);
          expect(c.confirmed).toBe(defined[defined.length - 1] ?? start);
          expect(c.outstanding).toBe(0);
        },
      ),
      { numRuns: 500 },
    );
  });
});
