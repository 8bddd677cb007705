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
 *   writer.lock                    pid of the one process holding a producer
 *   partition-<p>/<base>.log       segments, see partition-log.ts and segment-format.ts
 *   groups/<groupId>.json          committed positions of a consumer group
 */
import { EventEmitter } from 'node:events';
import { link, mkdir, open, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { partitionFor } from '../../core/change.js';
import type { Clock } from '../../core/clock.js';
import { ConfigError, SynclineError } from '../../core/errors.js';
import type {
  ConsumerOptions,
  OutgoingRecord,
  Stream,
  StreamConsumer,
  StreamProducer,
  StreamRecord,
} from '../stream.js';
import {
  DEFAULT_READ_CHUNK_BYTES,
  DEFAULT_SEGMENT_BYTES,
  PartitionLog,
  fsyncDir,
  isCode,
  type PartitionReader,
  type PartitionWriter,
} from './partition-log.js';
import { validateRecord } from './segment-format.js';

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

const FORMAT = 1;
const DEFAULT_RETENTION_HOURS = 168;
const DEFAULT_POLL_INTERVAL_MS = 10;
const RETENTION_INTERVAL_MS = 60_000;
const systemNow: Pick<Clock, 'now'> = { now: () => Date.now() };

/**
 * In-process append notifications, one per resolved stream path and shared by every stream
 * instance opened on it. `seq` lets a consumer notice an append that happened between its
 * last read and the start of its wait.
 */
interface Notifier {
  emitter: EventEmitter;
  seq: number;
  refs: number;
}
const notifiers = new Map<string, Notifier>();

function acquireNotifier(key: string): Notifier {
  let n = notifiers.get(key);
  if (n === undefined) {
    const emitter = new EventEmitter();
    emitter.setMaxListeners(0); // one listener per waiting consumer, unbounded by design
    n = { emitter, seq: 0, refs: 0 };
    notifiers.set(key, n);
  }
  n.refs++;
  return n;
}

function releaseNotifier(key: string, n: Notifier): void {
  if (--n.refs === 0 && notifiers.get(key) === n) notifiers.delete(key);
}

let tmpCounter = 0;

/** Writes `file` so that a crash leaves either the old or the new content, never a mix. */
async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = `${file}.${process.pid}.${++tmpCounter}.tmp`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(file));
}

/**
 * Creates `file` with `data` only if it does not exist: written and synced under a private
 * name, then hard-linked into place (link fails if the name exists). False if it existed.
 */
async function createFileExclusive(file: string, data: string): Promise<boolean> {
  const tmp = `${file}.${process.pid}.${++tmpCounter}.tmp`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, file);
    } catch (err) {
      if (isCode(err, 'EEXIST')) return false;
      throw err;
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await fsyncDir(dirname(file));
  return true;
}

function closedError(what: string): SynclineError {
  return new SynclineError('STREAM_CLOSED', `embedded stream ${what} is closed`, { retriable: false });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return isCode(err, 'EPERM');
  }
}

/**
 * Takes `writer.lock`. The lock is first written in full to a private file and then
 * hard-linked into place, so no process ever sees an empty lock of a live writer and
 * mistakes it for a stale one. A lock whose pid is dead was left by a killed writer.
 */
async function acquireWriterLock(dir: string): Promise<string> {
  const lockPath = join(dir, 'writer.lock');
  const tmp = `${lockPath}.${process.pid}.${++tmpCounter}.tmp`;
  await writeFile(tmp, `${process.pid}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(tmp, lockPath);
        return lockPath;
      } catch (err) {
        if (!isCode(err, 'EEXIST') || attempt >= 5) throw err;
      }
      let content: string;
      try {
        content = await readFile(lockPath, 'utf8');
      } catch (err) {
        if (isCode(err, 'ENOENT')) continue;
        throw err;
      }
      const pid = Number.parseInt(content.trim(), 10);
      if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
        const own = pid === process.pid;
        throw new SynclineError(
          'STREAM_LOCKED',
          `embedded stream at ${dir} is locked by writer process ${pid}${own ? ' (this process, which already has an open producer)' : ''}. ` +
            'Only one process may publish to an embedded stream at a time: stop the other writer, ' +
            `or, if pid ${pid} is not a syncline process (a reused pid), delete ${lockPath}.`,
          { retriable: !own },
        );
      }
      // Stale (its writer was killed): remove and retry. Two processes taking over the same
      // stale lock in the same instant is the one race left; it needs a crash and two
      // simultaneous restarts.
      try {
        await unlink(lockPath);
      } catch (err) {
        if (!isCode(err, 'ENOENT')) throw err;
      }
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

async function releaseWriterLock(lockPath: string): Promise<void> {
  try {
    const pid = Number.parseInt((await readFile(lockPath, 'utf8')).trim(), 10);
    if (pid === process.pid) await unlink(lockPath);
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err;
  }
}

/** Whether a stream was created at `path` (its meta.json): `syncline status` reads one without creating it. */
export async function embeddedStreamExists(path: string): Promise<boolean> {
  return readFile(join(path, 'meta.json')).then(() => true, () => false);
}

async function ensureMeta(dir: string, partitions: number): Promise<void> {
  const metaPath = join(dir, 'meta.json');
  let text: string;
  try {
    text = await readFile(metaPath, 'utf8');
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err;
    // Create-if-absent: of two processes creating the stream at once, one wins and the
    // other validates against the winner's partition count instead of overwriting it.
    if (await createFileExclusive(metaPath, `${JSON.stringify({ partitions, format: FORMAT })}\n`)) return;
    text = await readFile(metaPath, 'utf8');
  }
  let meta: { partitions?: unknown; format?: unknown };
  try {
    meta = JSON.parse(text) as { partitions?: unknown; format?: unknown };
  } catch (err) {
    throw new SynclineError('STREAM_META_INVALID', `embedded stream metadata ${metaPath} is not valid JSON`, {
      retriable: false,
      cause: err,
    });
  }
  if (meta.format !== FORMAT || typeof meta.partitions !== 'number') {
    throw new SynclineError(
      'STREAM_META_INVALID',
      `embedded stream metadata ${metaPath} has format ${String(meta.format)}; this version reads format ${FORMAT}`,
      { retriable: false },
    );
  }
  if (meta.partitions !== partitions) {
    throw new SynclineError(
      'STREAM_PARTITIONS_MISMATCH',
      `embedded stream at ${dir} has ${meta.partitions} partitions but ${partitions} are configured. ` +
        'The count cannot change (keys would move to other partitions and lose their order): ' +
        `set stream.partitions back to ${meta.partitions}, or point stream.path at a new directory.`,
      { retriable: false },
    );
  }
}

function positiveInteger(name: string, value: number | undefined, min: number, issues: string[]): void {
  if (value !== undefined && (!Number.isInteger(value) || value < min)) {
    issues.push(`stream.${name}: must be an integer >= ${min}, got ${String(value)}`);
  }
}

/** Opens (creating if needed) the embedded stream at `opts.path`. */
export async function openEmbeddedStream(opts: EmbeddedStreamOptions): Promise<Stream> {
  const issues: string[] = [];
  positiveInteger('partitions', opts.partitions, 1, issues);
  positiveInteger('segmentBytes', opts.segmentBytes, 1, issues);
  positiveInteger('pollIntervalMs', opts.pollIntervalMs, 1, issues);
  positiveInteger('readChunkBytes', opts.readChunkBytes, 64, issues);
  if (opts.retentionHours !== undefined && !(opts.retentionHours > 0)) {
    issues.push(`stream.retentionHours: must be > 0, got ${String(opts.retentionHours)}`);
  }
  if (issues.length > 0) throw new ConfigError(issues);

  const dir = resolve(opts.path);
  await mkdir(join(dir, 'groups'), { recursive: true });
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
  readonly dir: string;
  readonly logs: readonly PartitionLog[];
  readonly clock: Pick<Clock, 'now'>;
  readonly pollIntervalMs: number;
  private readonly retentionMs: number;
  private readonly notifier: Notifier | null;
  private producerRef: EmbeddedProducer | null = null;
  private readonly consumers = new Set<EmbeddedConsumer>();
  private closed = false;

  constructor(dir: string, logs: PartitionLog[], opts: EmbeddedStreamOptions) {
    this.dir = dir;
    this.logs = logs;
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
    const groupsDir = join(this.dir, 'groups');
    let names: string[];
    try {
      names = await readdir(groupsDir);
    } catch (err) {
      if (isCode(err, 'ENOENT')) return new Map();
      throw err;
    }
    const lowest = new Map<number, bigint>();
    for (const name of names) {
      if (!name.endsWith('.json')) continue; // skips the temporary files of atomic writes
      let positions: Map<number, bigint>;
      try {
        positions = await readGroupFile(join(groupsDir, name));
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
    if (this.closed) throw closedError('');
    const lockPath = await acquireWriterLock(this.dir);
    const writers: PartitionWriter[] = [];
    try {
      for (const log of this.logs) writers.push(await log.openWriter());
    } catch (err) {
      await Promise.allSettled(writers.map((w) => w.close()));
      await releaseWriterLock(lockPath);
      throw err;
    }
    const producer = new EmbeddedProducer(this, writers, lockPath);
    this.producerRef = producer;
    return producer;
  }

  async consumer(groupId: string, options: ConsumerOptions = {}): Promise<StreamConsumer> {
    if (this.closed) throw closedError('');
    if (groupId.length === 0) throw new SynclineError('STREAM_GROUP_INVALID', 'consumer group id is empty', { retriable: false });
    const groupFile = join(this.dir, 'groups', `${encodeURIComponent(groupId)}.json`);
    const stored = await readGroupFile(groupFile);
    // The single consumer of a group is assigned every partition.
    const start = options.startPositions ? await options.startPositions(this.logs.map((log) => log.partition)) : new Map<number, bigint>();
    // No position (neither asked for nor committed): from the first retained record. An asked
    // or committed position that retention deleted is refused by the reader (RetentionGapError).
    const readers = this.logs.map((log) => log.openReader(start.get(log.partition) ?? stored.get(log.partition) ?? null));
    const consumer = new EmbeddedConsumer(this, groupFile, readers);
    this.consumers.add(consumer);
    return consumer;
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
    if (this.closed) throw closedError('');
    const offsets = await Promise.all(this.logs.map((log) => log.offsetForTime(timestampMs)));
    const result = new Map<number, bigint>();
    for (let p = 0; p < offsets.length; p++) result.set(p, offsets[p] as bigint);
    return result;
  }

  notifyAppend(): void {
    const n = this.notifier;
    if (n === null) return;
    n.seq++;
    n.emitter.emit('append');
  }

  producerClosed(producer: EmbeddedProducer): void {
    if (this.producerRef === producer) this.producerRef = null;
  }

  consumerClosed(consumer: EmbeddedConsumer): void {
    this.consumers.delete(consumer);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closing: Promise<void>[] = [];
    if (this.producerRef !== null) closing.push(this.producerRef.close());
    for (const c of this.consumers) closing.push(c.close());
    const results = await Promise.allSettled(closing);
    if (this.notifier !== null) releaseNotifier(this.dir, this.notifier);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
}

interface PendingPublish {
  records: readonly OutgoingRecord[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit: while one batch is being written and synced, later publish calls queue up
 * and are written together, in call order, by the next batch with one fdatasync per
 * touched partition.
 */
class EmbeddedProducer implements StreamProducer {
  private readonly stream: EmbeddedStream;
  private readonly writers: readonly PartitionWriter[];
  private readonly lockPath: string;
  /** Per-partition record lists, reused by every batch. */
  private readonly byPartition: OutgoingRecord[][];
  private queue: PendingPublish[] = [];
  private draining: Promise<void> | null = null;
  private retentionTimer: NodeJS.Timeout | null;
  private retentionRun: Promise<void> | null = null;
  /** Set by the first failed batch: later publishes are refused so none is stored after it. */
  private failure: SynclineError | null = null;
  private closed = false;

  constructor(stream: EmbeddedStream, writers: PartitionWriter[], lockPath: string) {
    this.stream = stream;
    this.writers = writers;
    this.lockPath = lockPath;
    this.byPartition = writers.map(() => []);
    this.retentionTimer = setInterval(() => this.runRetention(), RETENTION_INTERVAL_MS);
    this.retentionTimer.unref();
  }

  durableOffset(partition: number): bigint {
    return (this.writers[partition] as PartitionWriter).durableOffset;
  }

  publish(records: readonly OutgoingRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(closedError('producer'));
    if (this.failure !== null) return Promise.reject(this.failure);
    try {
      // Reject a bad record before queuing, so that it cannot fail other callers' batch.
      for (let i = 0; i < records.length; i++) {
        const r = records[i] as OutgoingRecord;
        validateRecord(r.key, r.value);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    // Copy the list (not the records): callers often reuse their batch array right away,
    // and this one is written only when its group commit starts.
    const copy = records.slice();
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ records: copy, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.retentionTimer !== null) clearInterval(this.retentionTimer);
    this.retentionTimer = null;
    // Publishes accepted before close still complete.
    await this.draining;
    await this.retentionRun;
    const results = await Promise.allSettled(this.writers.map((w) => w.close()));
    await releaseWriterLock(this.lockPath);
    this.stream.producerClosed(this);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  private async drain(): Promise<void> {
    // Yield once so that publishes issued in the same tick join the first batch.
    await Promise.resolve();
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        try {
          if (this.failure !== null) throw this.failure;
          await this.writeBatch(batch);
        } catch (err) {
          this.failure ??= new SynclineError(
            'STREAM_WRITE_FAILED',
            `embedded stream write failed (${String(err)}); close and reopen the producer to recover`,
            { retriable: false, cause: err },
          );
          for (const p of batch) p.reject(this.failure);
          continue;
        }
        for (const p of batch) p.resolve();
        this.stream.notifyAppend();
      }
    } finally {
      this.draining = null;
    }
  }

  private async writeBatch(batch: readonly PendingPublish[]): Promise<void> {
    const partitions = this.writers.length;
    const lists = this.byPartition;
    try {
      for (const call of batch) {
        const records = call.records;
        for (let i = 0; i < records.length; i++) {
          const r = records[i] as OutgoingRecord;
          (lists[partitionFor(r.key, partitions)] as OutgoingRecord[]).push(r);
        }
      }
      const timestamp = this.stream.clock.now();
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
    if (this.retentionRun !== null || this.closed) return;
    this.retentionRun = this.stream
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

async function readGroupFile(file: string): Promise<Map<number, bigint>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isCode(err, 'ENOENT')) return new Map();
    throw err;
  }
  const positions = new Map<number, bigint>();
  try {
    const parsed = JSON.parse(text) as { positions?: Record<string, string> };
    for (const [p, offset] of Object.entries(parsed.positions ?? {})) positions.set(Number(p), BigInt(offset));
  } catch (err) {
    throw new SynclineError('STREAM_GROUP_INVALID', `consumer group file ${file} is not valid`, {
      retriable: false,
      cause: err,
    });
  }
  return positions;
}

/**
 * The single consumer of a group; it is assigned every partition. Reads are round-robin
 * over the partitions so that one busy partition cannot starve the others.
 */
class EmbeddedConsumer implements StreamConsumer {
  private readonly stream: EmbeddedStream;
  private readonly groupFile: string;
  private readonly readers: readonly PartitionReader[];
  private readonly assigned: readonly number[];
  private rr = 0;
  private polling: Promise<StreamRecord[]> | null = null;
  private wake: (() => void) | null = null;
  private commits: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(stream: EmbeddedStream, groupFile: string, readers: PartitionReader[]) {
    this.stream = stream;
    this.groupFile = groupFile;
    this.readers = readers;
    this.assigned = Object.freeze(readers.map((_, p) => p));
  }

  assignment(): readonly number[] {
    return this.assigned;
  }

  poll(maxRecords: number, maxWaitMs: number): Promise<StreamRecord[]> {
    if (this.closed) return Promise.reject(closedError('consumer'));
    if (this.polling !== null) {
      return Promise.reject(
        new SynclineError('STREAM_CONCURRENT_POLL', 'poll() called while a previous poll() is still running', {
          retriable: false,
        }),
      );
    }
    const run = this.pollLoop(maxRecords, maxWaitMs).finally(() => {
      this.polling = null;
    });
    this.polling = run;
    return run;
  }

  seek(partition: number, offset: bigint): void {
    const reader = this.readers[partition];
    if (reader === undefined || offset < 0n) {
      throw new SynclineError('STREAM_SEEK_INVALID', `cannot seek partition ${partition} to offset ${offset}`, {
        retriable: false,
      });
    }
    reader.seek(offset);
  }

  commit(positions: ReadonlyMap<number, bigint>): Promise<void> {
    if (this.closed) return Promise.reject(closedError('consumer'));
    for (const [p, offset] of positions) {
      if (this.readers[p] === undefined || offset < 0n) {
        return Promise.reject(
          new SynclineError('STREAM_COMMIT_INVALID', `cannot commit offset ${offset} for partition ${p}`, {
            retriable: false,
          }),
        );
      }
    }
    const snapshot = new Map(positions);
    // Serialized: each commit reads the previous file and merges, so partitions not named keep their position.
    const run = this.commits.then(() => this.writeCommit(snapshot));
    this.commits = run.catch(() => undefined);
    return run;
  }

  committed(): Promise<Map<number, bigint>> {
    return readGroupFile(this.groupFile);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake?.();
    await this.polling?.catch(() => undefined);
    await this.commits;
    const results = await Promise.allSettled(this.readers.map((r) => r.close()));
    this.stream.consumerClosed(this);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  private async writeCommit(positions: ReadonlyMap<number, bigint>): Promise<void> {
    const merged = await readGroupFile(this.groupFile);
    for (const [p, offset] of positions) merged.set(p, offset);
    const out: Record<string, string> = {};
    for (const [p, offset] of [...merged].sort((a, b) => a[0] - b[0])) out[String(p)] = offset.toString();
    await writeFileAtomic(this.groupFile, `${JSON.stringify({ format: FORMAT, positions: out })}\n`);
  }

  private async pollLoop(maxRecords: number, maxWaitMs: number): Promise<StreamRecord[]> {
    const deadline = performance.now() + maxWaitMs;
    const notifier = this.stream.notifications;
    for (;;) {
      const seen = notifier?.seq ?? 0;
      const out = await this.readRound(maxRecords);
      if (out.length > 0 || this.closed) return out;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return out;
      // An in-process append since our read started: read again at once.
      if (notifier !== null && notifier.seq !== seen) continue;
      await this.waitForData(Math.min(remaining, this.stream.pollIntervalMs), notifier);
    }
  }

  /** Up to `max` records, each partition's share rotating so every partition gets a turn first. */
  private async readRound(max: number): Promise<StreamRecord[]> {
    const out: StreamRecord[] = [];
    const readers = this.readers;
    const n = readers.length;
    if (max <= 0) return out;
    let more = true;
    while (more && out.length < max && !this.closed) {
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
