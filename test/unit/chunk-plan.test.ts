import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChunkPlan, type ChunkProgress } from '../../src/source/chunk-plan.js';
import type { KeyRange } from '../../src/source/snapshot-store.js';

/** A table of integer keys and the boundary lookup chunkBoundary does in SQL. */
function table(keys: number[], size: number): { keys: Set<number>; boundary: (after: readonly string[] | null, cap: readonly string[] | null) => Promise<string[] | null> } {
  const set = new Set(keys);
  return {
    keys: set,
    boundary: async (after, cap) => {
      const sorted = [...set].filter((k) => (after === null || k > Number(after[0])) && (cap === null || k <= Number(cap[0]))).sort((a, b) => a - b);
      const k = sorted[size - 1];
      return k === undefined ? null : [String(k)];
    },
  };
}

const lower = (r: KeyRange): number => (r.after === null ? -Infinity : Number(r.after[0]));
const upper = (r: KeyRange): number => (r.upper === null ? Infinity : Number(r.upper[0]));

describe('ChunkPlan: parallel chunks finishing out of order, resumed after kills', () => {
  it('plans consecutive ranges that end at the end of the table', async () => {
    const t = table([1, 2, 3, 4, 5, 6, 7], 3);
    const plan = new ChunkPlan({ lastKey: null, doneRanges: [] });
    const ranges: KeyRange[] = [];
    for (let r = await plan.next(t.boundary); r; r = await plan.next(t.boundary)) ranges.push(r);
    expect(ranges).toEqual([
      { after: null, upper: ['3'] },
      { after: ['3'], upper: ['6'] },
      { after: ['6'], upper: null },
    ]);
    expect(plan.complete).toBe(false);
    // The last finishes first: it is recorded as a range, the prefix does not move.
    expect(plan.finish(ranges[2] as KeyRange)).toEqual({ lastKey: null, doneRanges: [{ after: ['6'], upper: null }] });
    expect(plan.finish(ranges[1] as KeyRange)).toEqual({ lastKey: null, doneRanges: [{ after: ['3'], upper: ['6'] }, { after: ['6'], upper: null }] });
    expect(plan.finish(ranges[0] as KeyRange)).toEqual({ lastKey: ['6'], doneRanges: [{ after: ['6'], upper: null }] });
    expect(plan.complete).toBe(true);
  });

  it('a resume skips recorded ranges and ends the chunk before one at its start', async () => {
    const t = table([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 4);
    const plan = new ChunkPlan({ lastKey: ['2'], doneRanges: [{ after: ['4'], upper: ['7'] }] });
    const ranges: KeyRange[] = [];
    for (let r = await plan.next(t.boundary); r; r = await plan.next(t.boundary)) ranges.push(r);
    expect(ranges).toEqual([
      { after: ['2'], upper: ['4'] },
      { after: ['7'], upper: null },
    ]);
    plan.finish(ranges[1] as KeyRange);
    expect(plan.finish(ranges[0] as KeyRange)).toEqual({ lastKey: ['7'], doneRanges: [{ after: ['7'], upper: null }] });
    expect(plan.complete).toBe(true);
  });

  it('concurrent next() calls are served one at a time', async () => {
    const t = table(Array.from({ length: 100 }, (_, i) => i + 1), 10);
    const plan = new ChunkPlan({ lastKey: null, doneRanges: [] });
    const ranges = await Promise.all(Array.from({ length: 12 }, () => plan.next(t.boundary)));
    // Ten full chunks and the (empty) rest after the tenth boundary.
    expect(ranges.filter((r) => r !== undefined)).toHaveLength(11);
    expect(ranges.map((r) => r?.after?.[0] ?? null).slice(0, 3)).toEqual([null, '10', '20']);
  });

  it('every key is read by exactly one finished chunk, across kills, any finish order and concurrent writes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 1, max: 400 }), { maxLength: 200 }),
        fc.integer({ min: 1, max: 25 }),
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 300 }),
        async (initial, size, parallelism, choices) => {
          const t = table(initial, size);
          let stored: ChunkProgress = { lastKey: null, doneRanges: [] };
          const finished: KeyRange[] = [];
          let planned = 0;
          let kills = 0;
          let step = 0;
          const choice = (): number => choices[step++ % choices.length] as number;
          for (let run = 0; run < 50; run++) {
            const plan = new ChunkPlan(JSON.parse(JSON.stringify(stored)) as ChunkProgress);
            const inFlight: KeyRange[] = [];
            let killed = false;
            for (;;) {
              while (inFlight.length < parallelism) {
                const r = await plan.next(t.boundary);
                if (!r) break;
                inFlight.push(r);
                planned++;
              }
              if (inFlight.length === 0) break;
              const c = choice();
              if (c % 11 === 0) {
                // A write between chunks: insert or delete a key anywhere.
                const k = 1 + (c % 450);
                if (t.keys.has(k)) t.keys.delete(k);
                else t.keys.add(k);
              }
              if (c % 13 === 0 && run < 40) {
                killed = true; // kill -9: in-flight chunks are lost
                kills++;
                break;
              }
              const [r] = inFlight.splice(c % inFlight.length, 1);
              finished.push(r as KeyRange);
              stored = plan.finish(r as KeyRange);
            }
            if (!killed) {
              expect(plan.complete).toBe(true);
              break;
            }
          }
          // The finished ranges form one chain from the start to the end: no gap, no overlap.
          const chain = [...finished].sort((a, b) => lower(a) - lower(b));
          expect(chain[0]?.after ?? null).toBeNull();
          expect(chain[chain.length - 1]?.upper).toBeNull();
          for (let i = 1; i < chain.length; i++) expect(lower(chain[i] as KeyRange)).toBe(upper(chain[i - 1] as KeyRange));
          // Rereads are bounded by the chunks in flight at each kill.
          expect(planned - finished.length).toBeLessThanOrEqual(kills * parallelism);
        },
      ),
      { numRuns: 300 },
    );
  });
});
