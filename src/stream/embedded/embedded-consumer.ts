/**
 * The embedded stream's consumer: the single consumer of a group, assigned every partition.
 * Reads are round-robin over the partitions so that one busy partition cannot starve the
 * others; commits go to the group's file (stream-dir.ts).
 */
import type { BrokerClients } from '../common/broker-stream.js';
import { ConsumerGuard } from '../common/consumer-guard.js';
import type { StreamConsumer, StreamRecord } from '../stream.js';
import type { Notifier } from './append-notifier.js';
import type { PartitionReader } from './partition-reader.js';
import { releasePidLock } from './pid-lock.js';
import { mergeIntoGroupFile, readGroupFile } from './stream-dir.js';

/** What a consumer uses of its stream. */
export interface EmbeddedConsumerHost {
  /** In-process append notifications, unless the stream was opened without them. */
  readonly notifications: Notifier | null;
  /** How often a waiting consumer checks the files for appends by other processes. */
  readonly pollIntervalMs: number;
  readonly clients: BrokerClients;
}

export class EmbeddedConsumer implements StreamConsumer {
  private readonly assigned: readonly number[];
  private readonly guard: ConsumerGuard;
  private rr = 0;
  private wake: (() => void) | null = null;
  private commits: Promise<void> = Promise.resolve();

  constructor(
    private readonly host: EmbeddedConsumerHost,
    private readonly groupFile: string,
    private readonly lockPath: string,
    private readonly readers: readonly PartitionReader[],
  ) {
    this.assigned = Object.freeze(readers.map((_, p) => p));
    this.guard = new ConsumerGuard('embedded', readers.length, () => this.assigned);
  }

  assignment(): readonly number[] {
    return this.assigned;
  }

  poll(maxRecords: number, maxWaitMs: number): Promise<StreamRecord[]> {
    const notifier = this.host.notifications;
    let seen = 0;
    return this.guard.poll(
      maxWaitMs,
      () => {
        seen = notifier?.seq ?? 0;
        return this.readRound(maxRecords);
      },
      async (remaining) => {
        // An in-process append since our read started: read again at once.
        if (notifier !== null && notifier.seq !== seen) return;
        await this.waitForData(Math.min(remaining, this.host.pollIntervalMs), notifier);
      },
    );
  }

  seek(partition: number, offset: bigint): void {
    this.guard.checkSeek(partition, offset);
    (this.readers[partition] as PartitionReader).seek(offset);
  }

  async commit(positions: ReadonlyMap<number, bigint>): Promise<void> {
    const snapshot = new Map(this.guard.owned(positions));
    // Serialized: each commit reads the previous file and merges, so partitions not named keep their position.
    const run = this.commits.then(() => mergeIntoGroupFile(this.groupFile, snapshot));
    this.commits = run.catch(() => undefined);
    return run;
  }

  committed(): Promise<Map<number, bigint>> {
    return readGroupFile(this.groupFile);
  }

  async close(): Promise<void> {
    if (!this.guard.close()) return;
    this.wake?.();
    await this.guard.idle();
    await this.commits;
    const results = await Promise.allSettled([...this.readers.map((r) => r.close()), releasePidLock(this.lockPath)]);
    this.host.clients.delete(this);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /** Up to `max` records, each partition's share rotating so every partition gets a turn first. */
  private async readRound(max: number): Promise<StreamRecord[]> {
    const out: StreamRecord[] = [];
    const readers = this.readers;
    const n = readers.length;
    if (max <= 0) return out;
    let more = true;
    while (more && out.length < max && !this.guard.isClosed) {
      more = false;
      for (let i = 0; i < n && out.length < max; i++) {
        const quota = Math.ceil((max - out.length) / (n - i));
        const got = await (readers[(this.rr + i) % n] as PartitionReader).read(quota, out);
        // A partition that filled its share may have more: another round if room is left.
        if (got === quota) more = true;
      }
      this.rr = (this.rr + 1) % n;
    }
    return out;
  }

  private waitForData(ms: number, notifier: Notifier | null): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        notifier?.emitter.off('append', done);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      notifier?.emitter.on('append', done);
      this.wake = done;
    });
  }
}
