/**
 * The single writer of a partition, and the partition's durable high-water mark (see
 * partition-log.ts): advanced only after fdatasync, it is where readers of this process stop.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { SynclineError } from '../../core/errors.js';
import type { OutgoingRecord } from '../stream.js';
import { fsyncDir } from './fs-durable.js';
import type { PartitionLog } from './partition-log.js';
import { encodeRecordInto, encodedLength } from './segment-format.js';

/**
 * Per partition directory, the offset below which every record is synced, set by the writer
 * of this process (absent when this process has none). Module-wide so that every stream
 * instance opened on the same path in this process honours it.
 */
const durableMarks = new Map<string, { writer: PartitionWriter; end: bigint }>();

const MAX_SAFE_OFFSET = BigInt(Number.MAX_SAFE_INTEGER);

/** The durable mark of the partition directory `dir`, when a writer of this process holds it. */
export function durableEndOf(dir: string): bigint | undefined {
  return durableMarks.get(dir)?.end;
}

async function writeFully(fh: FileHandle, buf: Buffer, from: number, to: number, position: number): Promise<void> {
  let at = from;
  while (at < to) {
    const { bytesWritten } = await fh.write(buf, at, to - at, position + (at - from));
    at += bytesWritten;
  }
}

/**
 * The single writer of a partition. `append` writes without syncing so that a group commit
 * can write every touched partition first and then `sync` them in parallel.
 */
export class PartitionWriter {
  private readonly log: PartitionLog;
  private fh: FileHandle | null;
  private base: bigint;
  private size: number;
  private next: bigint;
  private lastTimestamp: number | null;
  private failed: unknown = null;

  /** @internal use PartitionLog.openWriter */
  constructor(
    log: PartitionLog,
    fh: FileHandle,
    base: bigint,
    size: number,
    next: bigint,
    lastTimestamp: number | null,
  ) {
    this.log = log;
    this.fh = fh;
    this.base = base;
    this.size = size;
    this.next = next;
    this.lastTimestamp = lastTimestamp;
  }

  /** Creates the writer and makes it the one that sets the partition's durable mark. */
  static registered(
    log: PartitionLog,
    fh: FileHandle,
    base: bigint,
    size: number,
    next: bigint,
    lastTimestamp: number | null,
  ): PartitionWriter {
    const writer = new PartitionWriter(log, fh, base, size, next, lastTimestamp);
    // Everything in the files was synced by openWriter.
    durableMarks.set(log.dir, { writer, end: next });
    return writer;
  }

  /** Offset the next appended record gets. */
  get nextOffset(): bigint {
    return this.next;
  }

  /** Offset below which every appended record is synced (readers of this process stop there). */
  get durableOffset(): bigint {
    const mark = durableMarks.get(this.log.dir);
    return mark?.writer === this ? mark.end : this.next;
  }

  /**
   * Encodes `records` (stamped `timestamp`) into one buffer and writes it, rolling segments
   * as needed. After a failure the writer refuses further work: the file may hold a partial
   * batch, which only the recovery of a fresh writer may truncate.
   */
  async append(records: readonly OutgoingRecord[], timestamp: number): Promise<void> {
    this.checkUsable();
    const count = records.length;
    if (count === 0) return;
    const segmentBytes = this.log.segmentBytes;
    // Everything encoded into one buffer, sized for the longest keys (a UTF-16 code unit takes
    // at most 3 UTF-8 bytes): one write syscall per segment touched, and no pass to measure
    // the keys first. The records at which a new segment starts are rare: lazily allocated.
    let room = 0;
    for (let i = 0; i < count; i++) {
      const r = records[i] as OutgoingRecord;
      room += encodedLength(r.key.length * 3, r.value.length);
    }
    const buf = Buffer.allocUnsafe(room);
    let total = 0;
    let fill = this.size;
    let cutBytes: number[] | null = null;
    let cutRecords: number[] | null = null;
    // Offsets as numbers while they are safe integers (always, short of 2^53 records).
    const first = this.next;
    const numbered = first + BigInt(count) <= MAX_SAFE_OFFSET;
    let offset = numbered ? Number(first) : 0;
    for (let i = 0; i < count; i++) {
      const r = records[i] as OutgoingRecord;
      const end = encodeRecordInto(buf, total, numbered ? offset++ : first + BigInt(i), timestamp, r.key, r.value);
      const len = end - total;
      if (fill > 0 && fill + len > segmentBytes) {
        (cutBytes ??= []).push(total);
        (cutRecords ??= []).push(i);
        fill = 0;
      }
      fill += len;
      total = end;
    }
    try {
      let from = 0;
      const cuts = cutBytes?.length ?? 0;
      for (let c = 0; c <= cuts; c++) {
        const to = c < cuts ? (cutBytes as number[])[c] as number : total;
        if (to > from) {
          await writeFully(this.fh as FileHandle, buf, from, to, this.size);
          this.size += to - from;
        }
        if (c < cuts) {
          const firstInNew = (cutRecords as number[])[c] as number;
          // The old segment's last record came from this batch unless the cut is at its start.
          const oldLast = firstInNew > 0 ? timestamp : this.lastTimestamp;
          await this.roll(this.next + BigInt(firstInNew), oldLast);
        }
        from = to;
      }
    } catch (err) {
      this.failed = err;
      throw err;
    }
    this.next += BigInt(count);
    this.lastTimestamp = timestamp;
  }

  /**
   * fdatasync of the active segment: the appended records are durable once it resolves, and
   * only then does the durable mark (what readers of this process may return) move past them.
   */
  async sync(): Promise<void> {
    this.checkUsable();
    const upTo = this.next;
    try {
      await (this.fh as FileHandle).datasync();
    } catch (err) {
      this.failed = err;
      throw err;
    }
    const mark = durableMarks.get(this.log.dir);
    if (mark?.writer === this && mark.end < upTo) mark.end = upTo;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    // Synced records stay readable; without a writer, readers go by the files again.
    if (durableMarks.get(this.log.dir)?.writer === this) durableMarks.delete(this.log.dir);
    if (fh !== null) await fh.close();
  }

  private checkUsable(): void {
    if (this.failed !== null) {
      throw new SynclineError(
        'STREAM_WRITE_FAILED',
        `embedded stream partition ${this.log.partition} failed an earlier write; close and reopen the producer to recover`,
        { retriable: false, cause: this.failed },
      );
    }
    if (this.fh === null) {
      throw new SynclineError('STREAM_CLOSED', 'embedded stream producer is closed', { retriable: false });
    }
  }

  private async roll(newBase: bigint, oldLastTimestamp: number | null): Promise<void> {
    const old = this.fh as FileHandle;
    // Sync the full segment before the next exists: readers and recovery rely on every
    // segment but the last being complete.
    await old.datasync();
    this.fh = null;
    await old.close();
    if (oldLastTimestamp !== null) this.log.rememberLastTimestamp(this.base, oldLastTimestamp);
    this.fh = await open(this.log.segmentPath(newBase), 'wx');
    this.base = newBase;
    this.size = 0;
    await fsyncDir(this.log.dir);
  }
}
