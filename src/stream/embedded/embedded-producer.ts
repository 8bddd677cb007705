/**
 * The embedded stream's producer. Group commit: while one batch is being written and synced,
 * later publish calls queue up and are written together, in call order, by the next batch
 * with one fdatasync per touched partition. It also runs retention once a minute.
 */
import { partitionFor } from '../../core/change.js';
import type { Clock } from '../../core/clock.js';
import { SynclineError } from '../../core/errors.js';
import { GroupCommit } from '../common/group-commit.js';
import type { OutgoingRecord, StreamProducer } from '../stream.js';
import type { PartitionWriter } from './partition-writer.js';
import { validateRecord } from './segment-format.js';
import { releasePidLock } from './pid-lock.js';

const RETENTION_INTERVAL_MS = 60_000;

/** What a producer uses of its stream. */
export interface EmbeddedProducerHost {
  readonly clock: Pick<Clock, 'now'>;
  applyRetention(): Promise<void>;
  /** Wakes this process's consumers after a batch became durable. */
  notifyAppend(): void;
  producerClosed(producer: EmbeddedProducer): void;
}

export class EmbeddedProducer implements StreamProducer {
  private readonly commits: GroupCommit;
  /** Per-partition record lists, reused by every batch. */
  private readonly byPartition: OutgoingRecord[][];
  private retentionTimer: NodeJS.Timeout | null;
  private retentionRun: Promise<void> | null = null;

  /** `lockPath`: the writer lock it holds, released on close. */
  constructor(
    private readonly host: EmbeddedProducerHost,
    private readonly writers: readonly PartitionWriter[],
    private readonly lockPath: string,
  ) {
    this.byPartition = writers.map(() => []);
    this.commits = new GroupCommit({
      broker: 'embedded',
      write: (calls) => this.writeBatch(calls),
      failed: (err) =>
        new SynclineError('STREAM_WRITE_FAILED', `embedded stream write failed (${String(err)}); close and reopen the producer to recover`, {
          retriable: false,
          cause: err,
        }),
      written: () => host.notifyAppend(),
    });
    this.retentionTimer = setInterval(() => this.runRetention(), RETENTION_INTERVAL_MS);
    this.retentionTimer.unref();
  }

  durableOffset(partition: number): bigint {
    return (this.writers[partition] as PartitionWriter).durableOffset;
  }

  publish(records: readonly OutgoingRecord[]): Promise<void> {
    const refused = this.commits.refusal();
    if (refused !== null) return Promise.reject(refused);
    try {
      // Reject a bad record before queuing, so that it cannot fail other callers' batch.
      for (let i = 0; i < records.length; i++) {
        const r = records[i] as OutgoingRecord;
        validateRecord(r.key, r.value);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.commits.enqueue(records);
  }

  async close(): Promise<void> {
    if (this.commits.isClosed) return;
    // Publishes accepted before close still complete.
    const drained = this.commits.close();
    if (this.retentionTimer !== null) clearInterval(this.retentionTimer);
    this.retentionTimer = null;
    await drained;
    await this.retentionRun;
    const results = await Promise.allSettled(this.writers.map((w) => w.close()));
    await releasePidLock(this.lockPath);
    this.host.producerClosed(this);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  private async writeBatch(calls: readonly (readonly OutgoingRecord[])[]): Promise<void> {
    const partitions = this.writers.length;
    const lists = this.byPartition;
    try {
      for (const records of calls) {
        for (let i = 0; i < records.length; i++) {
          const r = records[i] as OutgoingRecord;
          (lists[partitionFor(r.key, partitions)] as OutgoingRecord[]).push(r);
        }
      }
      const timestamp = this.host.clock.now();
      const work: Promise<void>[] = [];
      for (let p = 0; p < partitions; p++) {
        const list = lists[p] as OutgoingRecord[];
        if (list.length > 0) work.push(writeAndSync(this.writers[p] as PartitionWriter, list, timestamp));
      }
      // Wait for every partition before reporting, so no write is still running on failure.
      const results = await Promise.allSettled(work);
      for (const r of results) if (r.status === 'rejected') throw r.reason;
    } finally {
      for (const list of lists) list.length = 0;
    }
  }

  private runRetention(): void {
    if (this.retentionRun !== null || this.commits.isClosed) return;
    this.retentionRun = this.host
      .applyRetention()
      // A failed pass deletes nothing; the next one, a minute later, retries.
      .catch(() => undefined)
      .finally(() => {
        this.retentionRun = null;
      });
  }
}

async function writeAndSync(writer: PartitionWriter, records: readonly OutgoingRecord[], timestamp: number): Promise<void> {
  await writer.append(records, timestamp);
  await writer.sync();
}
