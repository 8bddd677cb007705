import type { KeyRange } from './snapshot-store.js';

type Key = readonly string[];

/** What a snapshot job records of its chunks (see SnapshotStore). */
export interface ChunkProgress {
  /** Every chunk up to this key has finished; null: none yet. */
  lastKey: string[] | null;
  /** Finished chunks past `lastKey`, in key order. */
  doneRanges: KeyRange[];
}

/**
 * Answers the upper key of a full chunk after `after`, not past `cap`; null when fewer rows
 * than a chunk are left before `cap` (or the end of the table).
 */
export type ChunkBoundary = (after: Key | null, cap: Key | null) => Promise<Key | null>;

/**
 * The chunks of one snapshot job (pure: the boundary lookup is passed in). Chunks are
 * consecutive key ranges (after, upper], each starting where the previous one ends, so
 * together they cover every key exactly once — no gap, no overlap — whatever rows are
 * inserted or deleted meanwhile. Readers on several connections take ranges in key order
 * and may finish them in any order: the recorded progress is the finished prefix
 * (`lastKey`) plus the finished ranges beyond it. A resume plans again from `lastKey`,
 * skipping each recorded range and ending the chunk before one at that range's start, so
 * it rereads at most the chunks that were in flight.
 */
export class ChunkPlan {
  /** Where the next range starts. */
  private cursor: Key | null;
  /** Every range has been planned or skipped, through the end of the table. */
  private ended = false;
  /** Ranges an earlier run finished that planning has not reached yet, in key order. */
  private readonly ahead: KeyRange[];
  /** Ranges from `lastKey` on that this run planned or skipped, in key order. */
  private readonly walked: { range: KeyRange; done: boolean }[] = [];
  private lastKey: string[] | null;
  private planning: Promise<unknown> = Promise.resolve();

  constructor(progress: ChunkProgress) {
    this.lastKey = progress.lastKey;
    this.cursor = progress.lastKey;
    this.ahead = [...progress.doneRanges];
  }

  /** True once every range up to the end of the table has finished. */
  get complete(): boolean {
    return this.ended && this.walked.every((w) => w.done);
  }

  /** The next range to read, or undefined when none is left to plan. Calls are served one at a time. */
  next(boundary: ChunkBoundary): Promise<KeyRange | undefined> {
    const result = this.planning.then(() => this.plan(boundary));
    this.planning = result.catch(() => undefined);
    return result;
  }

  /** Marks a range returned by `next` finished; returns the progress to record. */
  finish(range: KeyRange): ChunkProgress {
    const w = this.walked.find((x) => x.range === range);
    if (w) w.done = true;
    // A finished final range (upper null) stays a range: a key cannot say "to the end".
    while (this.walked[0]?.done && this.walked[0].range.upper !== null) this.lastKey = (this.walked.shift() as { range: KeyRange }).range.upper;
    return this.progress();
  }

  progress(): ChunkProgress {
    return { lastKey: this.lastKey, doneRanges: [...this.walked.filter((w) => w.done).map((w) => w.range), ...this.ahead] };
  }

  private async plan(boundary: ChunkBoundary): Promise<KeyRange | undefined> {
    while (!this.ended) {
      const done = this.ahead[0];
      if (done && sameKey(done.after, this.cursor)) {
        this.ahead.shift();
        this.walked.push({ range: done, done: true });
        this.advance(done.upper);
        continue;
      }
      const found = await boundary(this.cursor, done?.after ?? null);
      const upper = found ? [...found] : done?.after ?? null;
      const range: KeyRange = { after: this.cursor === null ? null : [...this.cursor], upper };
      this.walked.push({ range, done: false });
      this.advance(upper);
      return range;
    }
    return undefined;
  }

  private advance(upper: Key | null): void {
    if (upper === null) this.ended = true;
    else this.cursor = upper;
  }
}

function sameKey(a: Key | null, b: Key | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
