/**
 * The embedded stream (`stream.broker: embedded`): a durable, partitioned, append-only log in
 * a local directory, for single-machine deployments and the demo.
 *
 * Why segment files with a CRC per record, and not SQLite:
 * - No native build. better-sqlite3 compiles from source (minutes on our machines) wherever
 *   no prebuilt binary matches; plain files need nothing but Node.
 * - A log is append-only: sequential appends and sequential reads of files are its natural
 *   shape, with no B-tree, page cache or vacuum in between.
 * - A CRC per record makes a torn tail (a write cut by kill -9 or power loss) detectable, so
 *   recovery truncates exactly the bytes that were never acknowledged.
 * - One fdatasync per group commit makes every acknowledged record durable while many small
 *   concurrent publishes share the cost of one sync.
 *
 * Layout of `path`:
 *   meta.json                      {"partitions": N, "format": 1}; the partition count is fixed
 *   writer.lock                    pid of the one process holding a producer (pid-lock.ts)
 *   partition-<p>/<base>.log       segments, see partition-log.ts and segment-format.ts
 *   groups/<groupId>.json          committed positions of a consumer group (stream-dir.ts)
 *   groups/<groupId>.lock          pid of the process consuming the group (pid-lock.ts)
 */
import { mkdir, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Clock } from '../../core/clock.js';
import { SynclineError } from '../../core/errors.js';
import { BrokerClients, DEFAULT_RETENTION_HOURS, checkStreamOptions } from '../common/broker-stream.js';
import type { ConsumerOptions, Stream, StreamConsumer, StreamProducer } from '../stream.js';
import { acquireNotifier, notifyAppend, releaseNotifier, type Notifier } from './append-notifier.js';
import { EmbeddedConsumer } from './embedded-consumer.js';
import { EmbeddedProducer } from './embedded-producer.js';
import { isCode } from './fs-durable.js';
import { DEFAULT_READ_CHUNK_BYTES, DEFAULT_SEGMENT_BYTES, PartitionLog } from './partition-log.js';
import type { PartitionWriter } from './partition-writer.js';
import { ensureMeta, groupFile, groupLockFile, groupsDir, readGroupFile } from './stream-dir.js';
import { acquirePidLock, acquireWriterLock, releasePidLock } from './pid-lock.js';

export interface EmbeddedStreamOptions {
  /** Directory of the stream; created if missing. */
  path: string;
  /** Fixed at creation: reopening with another count throws STREAM_PARTITIONS_MISMATCH. */
  partitions: number;
  /** Segments whose last record is older are deleted. Default 168 (7 days). */
  retentionHours?: number;
  /** A segment rolls once it would exceed this size. Default 64 MiB. */
  segmentBytes?: number;
  /** How often a waiting consumer checks the files for appends by other processes. Default 10. */
  pollIntervalMs?: number;
  /** Read buffer per consumed partition. Default 1 MiB. */
  readChunkBytes?: number;
  /**
   * Wake consumers of this process as soon as a producer of this process appends (default
   * true). False leaves only file polling, as for a producer in another process.
   */
  shareNotifications?: boolean;
  /** Source of record timestamps and of the retention cutoff. Default: system clock. */
  clock?: Pick<Clock, 'now'>;
}

const DEFAULT_POLL_INTERVAL_MS = 10;
const systemNow: Pick<Clock, 'now'> = { now: () => Date.now() };

function positiveInteger(name: string, value: number | undefined, min: number, issues: string[]): void {
  if (value !== undefined && (!Number.isInteger(value) || value < min)) {
    issues.push(`stream.${name}: must be an integer >= ${min}, got ${String(value)}`);
  }
}

/** Opens (creating if needed) the embedded stream at `opts.path`. */
export { embeddedStreamExists } from './stream-dir.js';

export async function openEmbeddedStream(opts: EmbeddedStreamOptions): Promise<Stream> {
  const issues: string[] = [];
  positiveInteger('segmentBytes', opts.segmentBytes, 1, issues);
  positiveInteger('pollIntervalMs', opts.pollIntervalMs, 1, issues);
  positiveInteger('readChunkBytes', opts.readChunkBytes, 64, issues);
  checkStreamOptions(opts, issues);

  const dir = resolve(opts.path);
  await mkdir(groupsDir(dir), { recursive: true });
  await ensureMeta(dir, opts.partitions);
  const logs: PartitionLog[] = [];
  for (let p = 0; p < opts.partitions; p++) {
    const partDir = join(dir, `partition-${p}`);
    await mkdir(partDir, { recursive: true });
    logs.push(
      new PartitionLog(partDir, p, {
        segmentBytes: opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES,
        readChunkBytes: opts.readChunkBytes ?? DEFAULT_READ_CHUNK_BYTES,
      }),
    );
  }
  const stream = new EmbeddedStream(dir, logs, opts);
  try {
    await stream.applyRetention();
  } catch (err) {
    await stream.close();
    throw err;
  }
  return stream;
}

class EmbeddedStream implements Stream {
  readonly partitions: number;
  readonly clock: Pick<Clock, 'now'>;
  readonly pollIntervalMs: number;
  readonly clients = new BrokerClients('embedded');
  private readonly retentionMs: number;
  private readonly notifier: Notifier | null;
  private producerRef: EmbeddedProducer | null = null;

  constructor(
    private readonly dir: string,
    private readonly logs: readonly PartitionLog[],
    opts: EmbeddedStreamOptions,
  ) {
    this.partitions = logs.length;
    this.clock = opts.clock ?? systemNow;
    this.pollIntervalMs = opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    this.retentionMs = (opts.retentionHours ?? DEFAULT_RETENTION_HOURS) * 3_600_000;
    this.notifier = opts.shareNotifications === false ? null : acquireNotifier(dir);
  }

  get notifications(): Notifier | null {
    return this.notifier;
  }

  /**
   * Deletes expired segments, except those holding records that a consumer group recorded in
   * `groups/` has not consumed yet. Why this is safe: a group file is written only after the
   * sink committed (apply commits the stream after the sink), so it is never ahead of what
   * was applied; holding back to it keeps at least what the group still needs and can only
   * keep more. Without it an apply outage longer than `retentionHours` would lose records
   * (now refused with RetentionGapError rather than skipped, but lost all the same). The
   * price: a group that is never run again pins its partitions' segments; delete its file
   * (`groups/<group>.json`) to release them. Groups that never committed hold nothing.
   */
  async applyRetention(): Promise<void> {
    const cutoff = this.clock.now() - this.retentionMs;
    const keepFrom = await this.lowestGroupPositions();
    await Promise.all(this.logs.map((log) => log.applyRetention(cutoff, keepFrom.get(log.partition))));
  }

  /** Per partition, the lowest position committed by any group in `groups/` (0 where a group has none). */
  private async lowestGroupPositions(): Promise<Map<number, bigint>> {
    const groups = groupsDir(this.dir);
    let names: string[];
    try {
      names = await readdir(groups);
    } catch (err) {
      if (isCode(err, 'ENOENT')) return new Map();
      throw err;
    }
    const lowest = new Map<number, bigint>();
    for (const name of names) {
      if (!name.endsWith('.json')) continue; // skips the temporary files of atomic writes
      let positions: Map<number, bigint>;
      try {
        positions = await readGroupFile(join(groups, name));
      } catch {
        // Unreadable: its consumer refuses to open anyway (STREAM_GROUP_INVALID), and one bad
        // file must not stop retention for good.
        continue;
      }
      // A partition the group has not committed yet is unconsumed from its start: kept whole.
      for (let p = 0; p < this.logs.length; p++) {
        const offset = positions.get(p) ?? 0n;
        const low = lowest.get(p);
        if (low === undefined || offset < low) lowest.set(p, offset);
      }
    }
    return lowest;
  }

  async producer(): Promise<StreamProducer> {
    this.clients.checkOpen();
    const lockPath = await acquireWriterLock(this.dir);
    const writers: PartitionWriter[] = [];
    try {
      for (const log of this.logs) writers.push(await log.openWriter());
    } catch (err) {
      await Promise.allSettled(writers.map((w) => w.close()));
      await releasePidLock(lockPath);
      throw err;
    }
    const producer = this.clients.add(new EmbeddedProducer(this, writers, lockPath));
    this.producerRef = producer;
    return producer;
  }

  async consumer(groupId: string, options: ConsumerOptions = {}): Promise<StreamConsumer> {
    this.clients.checkConsumer(groupId);
    const file = groupFile(this.dir, groupId);
    const lockPath = await this.lockGroup(groupId);
    try {
      const stored = await readGroupFile(file);
      // The single consumer of a group is assigned every partition.
      const start = options.startPositions ? await options.startPositions(this.logs.map((log) => log.partition)) : new Map<number, bigint>();
      // No position (neither asked for nor committed): from the first retained record. An asked
      // or committed position that retention deleted is refused by the reader (RetentionGapError).
      const readers = this.logs.map((log) => log.openReader(start.get(log.partition) ?? stored.get(log.partition) ?? null));
      return this.clients.add(new EmbeddedConsumer(this, file, lockPath, readers));
    } catch (err) {
      await releasePidLock(lockPath);
      throw err;
    }
  }

  /**
   * A group has one consumer, assigned every partition, so a second process consuming it
   * would read and apply everything twice (a webhook sink would deliver twice). It waits
   * instead: the error is retriable, so a second `syncline apply` retries with backoff and
   * takes over as soon as the first stops or is killed, a standby as in a Kafka group.
   */
  private async lockGroup(groupId: string): Promise<string> {
    await mkdir(groupsDir(this.dir), { recursive: true });
    const lockPath = groupLockFile(this.dir, groupId);
    return acquirePidLock(
      lockPath,
      (pid, own) =>
        new SynclineError(
          'STREAM_GROUP_BUSY',
          `consumer group "${groupId}" of the embedded stream at ${this.dir} is consumed by process ${pid}${own ? ' (this process, which has a consumer of it open)' : ''}; ` +
            'a group has one consumer at a time, so this one waits until it stops' +
            (own ? '' : ` (if pid ${pid} is not a syncline process, a reused pid, delete ${lockPath})`),
          { retriable: !own },
        ),
    );
  }

  async committedOffsets(groupId: string): Promise<Map<number, bigint>> {
    this.clients.checkOpen();
    return readGroupFile(groupFile(this.dir, groupId));
  }

  async endOffsets(): Promise<Map<number, bigint>> {
    const result = new Map<number, bigint>();
    const producer = this.producerRef;
    if (producer !== null) {
      // Our own writer knows exactly; no need to read the files. Up to the durable mark only,
      // which is where readers of this process stop.
      for (let p = 0; p < this.partitions; p++) result.set(p, producer.durableOffset(p));
      return result;
    }
    const ends = await Promise.all(this.logs.map((log) => log.endOffset()));
    for (let p = 0; p < ends.length; p++) result.set(p, ends[p] as bigint);
    return result;
  }

  async offsetsForTime(timestampMs: number): Promise<Map<number, bigint>> {
    this.clients.checkOpen();
    const offsets = await Promise.all(this.logs.map((log) => log.offsetForTime(timestampMs)));
    const result = new Map<number, bigint>();
    for (let p = 0; p < offsets.length; p++) result.set(p, offsets[p] as bigint);
    return result;
  }

  notifyAppend(): void {
    if (this.notifier !== null) notifyAppend(this.notifier);
  }

  producerClosed(producer: EmbeddedProducer): void {
    if (this.producerRef === producer) this.producerRef = null;
    this.clients.delete(producer);
  }

  close(): Promise<void> {
    return this.clients.close(() => {
      if (this.notifier !== null) releaseNotifier(this.dir, this.notifier);
    });
  }
}
