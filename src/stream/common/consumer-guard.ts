/**
 * What poll(), seek() and commit() of every broker's consumer share, with one semantics:
 * - poll() refuses a closed consumer, a failed one (the first failure is latched and thrown
 *   by every later poll) and a second poll() while one runs; then it reads until records
 *   come, the consumer closes or fails, or `maxWaitMs` passed.
 * - seek() takes only a partition assigned to this consumer and an offset >= 0: a partition
 *   of another member of the group, or of none, is STREAM_SEEK_INVALID.
 * - commit() refuses partitions the stream does not have and negative offsets
 *   (STREAM_COMMIT_INVALID); a partition revoked since it was polled is left out without an
 *   error: it belongs to another member now, whose commits must not be overwritten by ours.
 */
import { performance } from 'node:perf_hooks';
import { SynclineError } from '../../core/errors.js';
import type { StreamRecord } from '../stream.js';
import { concurrentPollError, streamClosedError } from './errors.js';

export class ConsumerGuard {
  private closed = false;
  private failure: SynclineError | null = null;
  private running: Promise<StreamRecord[]> | null = null;

  /**
   * `broker` names the adapter in error messages; `assignment` is the consumer's current
   * assignment (see StreamConsumer.assignment).
   */
  constructor(
    private readonly broker: string,
    private readonly partitions: number,
    private readonly assignment: () => readonly number[],
  ) {}

  get isClosed(): boolean {
    return this.closed;
  }

  /** Marks the consumer closed; false when it already was (close() has nothing to do). */
  close(): boolean {
    if (this.closed) return false;
    this.closed = true;
    return true;
  }

  /** The latched failure, if any. */
  get failed(): SynclineError | null {
    return this.failure;
  }

  /** Latches `err` unless an earlier failure is latched already. */
  fail(err: SynclineError): void {
    this.failure ??= err;
  }

  /**
   * poll(): `read` until it returns records, the consumer is closed or has failed, or
   * `maxWaitMs` passed; `wait(remainingMs)` sleeps between reads until something may have
   * arrived.
   */
  poll(maxWaitMs: number, read: () => Promise<StreamRecord[]>, wait: (remainingMs: number) => Promise<void>): Promise<StreamRecord[]> {
    if (this.closed) return Promise.reject(streamClosedError(this.broker, 'consumer'));
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.running !== null) return Promise.reject(concurrentPollError());
    const run = this.pollLoop(maxWaitMs, read, wait).finally(() => {
      this.running = null;
    });
    this.running = run;
    return run;
  }

  /** Resolves once the running poll(), if any, has returned or failed. */
  async idle(): Promise<void> {
    await this.running?.catch(() => undefined);
  }

  /** Throws STREAM_SEEK_INVALID unless `partition` is assigned to this consumer and `offset` >= 0. */
  checkSeek(partition: number, offset: bigint): void {
    if (!this.isPartition(partition) || offset < 0n) {
      throw new SynclineError('STREAM_SEEK_INVALID', `cannot seek partition ${partition} to offset ${offset}`, { retriable: false });
    }
    const assigned = this.assignment();
    if (!assigned.includes(partition)) {
      throw new SynclineError('STREAM_SEEK_INVALID', `cannot seek partition ${partition}: it is not assigned to this consumer (assigned: ${assigned.join(',') || 'none'})`, { retriable: false });
    }
  }

  /**
   * Checks commit()'s positions (STREAM_CLOSED, STREAM_COMMIT_INVALID) and returns those of
   * partitions still assigned to this consumer: the ones to store.
   */
  owned(positions: ReadonlyMap<number, bigint>): [number, bigint][] {
    if (this.closed) throw streamClosedError(this.broker, 'consumer');
    for (const [p, offset] of positions) {
      if (!this.isPartition(p) || offset < 0n) {
        throw new SynclineError('STREAM_COMMIT_INVALID', `cannot commit offset ${offset} for partition ${p}`, { retriable: false });
      }
    }
    const assigned = this.assignment();
    return [...positions].filter(([p]) => assigned.includes(p));
  }

  private isPartition(p: number): boolean {
    return Number.isInteger(p) && p >= 0 && p < this.partitions;
  }

  private async pollLoop(maxWaitMs: number, read: () => Promise<StreamRecord[]>, wait: (remainingMs: number) => Promise<void>): Promise<StreamRecord[]> {
    const deadline = performance.now() + maxWaitMs;
    for (;;) {
      const out = await read();
      if (out.length > 0 || this.closed) return out;
      if (this.failure !== null) throw this.failure;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return out;
      await wait(remaining);
    }
  }
}
