import { partitionFor } from '../core/change.js';
import { ConsumerGuard } from '../stream/common/consumer-guard.js';
import type { ConsumerOptions, OutgoingRecord, Stream, StreamConsumer, StreamProducer, StreamRecord } from '../stream/stream.js';

/**
 * An in-memory Stream for unit tests: partitions by `partitionFor(key)`, offsets from 0,
 * per-group committed positions, seek, replay by time. It passes the stream contract suite.
 * One consumer of a group reads every partition (no rebalancing); nothing survives the
 * process.
 */
export class MemoryStream implements Stream {
  private readonly logs: StreamRecord[][];
  private readonly committedByGroup = new Map<string, Map<number, bigint>>();
  private readonly waiters = new Set<() => void>();
  private closed = false;

  constructor(readonly partitions = 4) {
    this.logs = Array.from({ length: partitions }, () => []);
  }

  async producer(): Promise<StreamProducer> {
    return {
      publish: async (records: readonly OutgoingRecord[]) => this.append(records),
      close: async () => undefined,
    };
  }

  async consumer(groupId: string, options: ConsumerOptions = {}): Promise<StreamConsumer> {
    const all = this.logs.map((_, p) => p);
    const committed = this.committedByGroup.get(groupId) ?? new Map<number, bigint>();
    const start = options.startPositions ? await options.startPositions(all) : new Map<number, bigint>();
    const next = new Map<number, bigint>(all.map((p) => [p, start.get(p) ?? committed.get(p) ?? 0n]));
    // Only its seek and commit checks: every broker validates them the same way.
    const guard = new ConsumerGuard('memory', this.partitions, () => all);
    let open = true;
    let cursor = 0;
    const read = (max: number): StreamRecord[] => {
      const out: StreamRecord[] = [];
      // Round-robin over partitions so one busy partition does not starve the others.
      for (let scanned = 0; scanned < all.length && out.length < max; scanned++) {
        const p = (cursor + scanned) % all.length;
        const log = this.logs[p] as StreamRecord[];
        let at = next.get(p) ?? 0n;
        while (out.length < max && at < BigInt(log.length)) out.push(log[Number(at++)] as StreamRecord);
        next.set(p, at);
      }
      cursor = (cursor + 1) % all.length;
      return out;
    };
    return {
      assignment: () => all,
      poll: async (maxRecords, maxWaitMs) => {
        if (!open) return [];
        const now = read(maxRecords);
        if (now.length > 0 || maxWaitMs <= 0) return now;
        await this.waitForAppend(maxWaitMs);
        return open ? read(maxRecords) : [];
      },
      seek: (partition, offset) => {
        guard.checkSeek(partition, offset);
        next.set(partition, offset);
      },
      commit: async (positions) => {
        const g = this.committedByGroup.get(groupId) ?? new Map<number, bigint>();
        for (const [p, o] of guard.owned(positions)) g.set(p, o);
        this.committedByGroup.set(groupId, g);
      },
      committed: async () => new Map(this.committedByGroup.get(groupId) ?? []),
      close: async () => {
        open = false;
      },
    };
  }

  async endOffsets(): Promise<Map<number, bigint>> {
    return new Map(this.logs.map((log, p) => [p, BigInt(log.length)]));
  }

  async offsetsForTime(timestampMs: number): Promise<Map<number, bigint>> {
    return new Map(
      this.logs.map((log, p) => {
        const i = log.findIndex((r) => r.timestamp >= timestampMs);
        return [p, BigInt(i < 0 ? log.length : i)];
      }),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const wake of this.waiters) wake();
  }

  /** Every record of `partition`, for assertions. */
  records(partition: number): readonly StreamRecord[] {
    return this.logs[partition] ?? [];
  }

  private append(records: readonly OutgoingRecord[]): void {
    if (this.closed) throw new Error('MemoryStream is closed');
    const timestamp = Date.now();
    for (const r of records) {
      const partition = partitionFor(r.key, this.partitions);
      const log = this.logs[partition] as StreamRecord[];
      log.push({ partition, offset: BigInt(log.length), key: r.key, value: r.value, timestamp });
    }
    for (const wake of this.waiters) wake();
  }

  private waitForAppend(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }
}
