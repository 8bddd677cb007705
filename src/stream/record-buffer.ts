/**
 * The fetched-but-not-yet-polled records of a push-fed consumer (Kafka, NATS): one FIFO per
 * partition, drained round-robin so a busy partition cannot starve the others. Bounding it
 * is the caller's job (it pauses fetching when `size` passes its limit); this only counts.
 */
import type { StreamRecord } from './stream.js';

/** Records a consumer buffers (all partitions) before it stops fetching, unless configured. */
export const DEFAULT_BUFFER_RECORDS = 10_000;

interface Queue {
  items: StreamRecord[];
  head: number;
}

export class RecordBuffer {
  /** Records held, all partitions. */
  size = 0;
  private readonly queues = new Map<number, Queue>();
  private rr = 0;
  private waiter: (() => void) | null = null;
  /** A producer waiting for `size` to fall to its mark (see `room`). */
  private spaceWaiter: { below: number; done: (ok: boolean) => void } | null = null;

  /** Appends `records` (one partition, offset order) and wakes a waiting poll. */
  push(partition: number, records: StreamRecord[]): void {
    if (records.length === 0) return;
    const q = this.queues.get(partition);
    if (q === undefined || q.head === q.items.length) {
      this.queues.set(partition, { items: records, head: 0 });
    } else {
      if (q.head > 4096 && q.head * 2 > q.items.length) {
        q.items = q.items.slice(q.head);
        q.head = 0;
      }
      for (let i = 0; i < records.length; i++) q.items.push(records[i] as StreamRecord);
    }
    this.size += records.length;
    this.waiter?.();
  }

  /** Records held for `partition`. */
  count(partition: number): number {
    const q = this.queues.get(partition);
    return q === undefined ? 0 : q.items.length - q.head;
  }

  /** Drops what is held for `partition`, or for every partition. */
  clear(partition?: number): void {
    if (partition === undefined) {
      this.queues.clear();
      this.size = 0;
    } else {
      const held = this.count(partition);
      this.queues.delete(partition);
      this.size -= held;
    }
    this.spaceFreed();
  }

  /**
   * Resolves true once `size` is at most `below` (poll() took records, or they were
   * dropped), false after `ms` or on `wake()`. One waiter at a time: a newer one ends the
   * older (false).
   */
  room(below: number, ms: number): Promise<boolean> {
    if (this.size <= below) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const finish = (ok: boolean): void => {
        clearTimeout(timer);
        if (this.spaceWaiter === waiter) this.spaceWaiter = null;
        resolve(ok);
      };
      const waiter = { below, done: finish };
      const timer = setTimeout(() => finish(false), ms);
      this.spaceWaiter?.done(false);
      this.spaceWaiter = waiter;
    });
  }

  /**
   * Up to `max` records of `partitions`; each partition's share rotates so every partition
   * gets a turn first, and a partition's records come out in the order they went in.
   */
  take(partitions: readonly number[], max: number): StreamRecord[] {
    const out: StreamRecord[] = [];
    const n = partitions.length;
    if (n === 0 || max <= 0 || this.size === 0) return out;
    let more = true;
    while (more && out.length < max) {
      more = false;
      for (let i = 0; i < n && out.length < max; i++) {
        const quota = Math.ceil((max - out.length) / (n - i));
        const got = this.takeFrom(partitions[(this.rr + i) % n] as number, quota, out);
        if (got === quota) more = true;
      }
      this.rr = (this.rr + 1) % n;
    }
    return out;
  }

  /** Resolves on the next push or `wake()`, or after `ms`. */
  wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.waiter === done) this.waiter = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiter?.();
      this.waiter = done;
    });
  }

  /** Wakes a waiting poll, and ends a `room` wait (false unless there is room). */
  wake(): void {
    this.waiter?.();
    const space = this.spaceWaiter;
    if (space !== null) {
      this.spaceWaiter = null;
      space.done(this.size <= space.below);
    }
  }

  private spaceFreed(): void {
    const space = this.spaceWaiter;
    if (space !== null && this.size <= space.below) {
      this.spaceWaiter = null;
      space.done(true);
    }
  }

  private takeFrom(partition: number, quota: number, out: StreamRecord[]): number {
    const q = this.queues.get(partition);
    if (q === undefined) return 0;
    const end = Math.min(q.items.length, q.head + quota);
    for (let i = q.head; i < end; i++) out.push(q.items[i] as StreamRecord);
    const got = end - q.head;
    q.head = end;
    if (q.head === q.items.length) this.queues.delete(partition);
    this.size -= got;
    this.spaceFreed();
    return got;
  }
}
