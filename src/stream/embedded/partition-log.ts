/**
 * One partition of the embedded stream: a directory of append-only segment files, each named
 * by the offset of its first record (20 digits, zero padded, so names sort like offsets).
 * Only the last segment is ever written; it rolls to a new file at `segmentBytes`.
 *
 * Crash model: a `kill -9` can leave the last segment with a torn tail (a record cut short,
 * or bytes whose CRC fails). The writer truncates it on open; readers treat it as "not yet
 * written" and never return it, because a recovering writer will overwrite those bytes.
 *
 * Durable high-water mark: a writer advances its partition's mark only after fdatasync, and
 * readers in the same process stop there. Without it a reader in the writer's process (apply
 * in `syncline run`) could apply records that are still only in the page cache and store
 * positions past them; an OS crash or power loss would then take those records back.
 * (A kill -9 keeps the page cache; readers in another process cannot see the mark and read
 * what the files show, as before.)
 */
import { existsSync } from 'node:fs';
import { open, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { SynclineError } from '../../core/errors.js';
import { RetentionGapError, type OutgoingRecord, type StreamRecord } from '../stream.js';
import { fsyncDir, isCode } from './fs-durable.js';
import {
  CORRUPT,
  INCOMPLETE,
  checkRecord,
  declaredLength,
  encodeRecordInto,
  encodedLength,
  recordKey,
  recordOffset,
  recordTimestamp,
  recordValue,
} from './segment-format.js';

export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_READ_CHUNK_BYTES = 1024 * 1024;

const SEGMENT_NAME = /^(\d{20})\.log$/;
const EMPTY = Buffer.alloc(0);

export function segmentFileName(base: bigint): string {
  return `${base.toString().padStart(20, '0')}.log`;
}

/** Base offsets of the partition's segments, ascending. A missing directory has none. */
export async function listSegments(dir: string): Promise<bigint[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isCode(err, 'ENOENT')) return [];
    throw err;
  }
  const bases: bigint[] = [];
  for (const name of names) {
    const m = SEGMENT_NAME.exec(name);
    if (m?.[1] !== undefined) bases.push(BigInt(m[1]));
  }
  return bases.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Per partition directory, the offset below which every record is synced, set by the writer
 * of this process (absent when this process has none). Module-wide so that every stream
 * instance opened on the same path in this process honours it.
 */
const durableMarks = new Map<string, { writer: PartitionWriter; end: bigint }>();

function corruptError(file: string, position: number, detail: string): SynclineError {
  return new SynclineError(
    'STREAM_CORRUPT',
    `embedded stream segment ${file} is corrupt at byte ${position}: ${detail}. ` +
      'This is not a torn write (those are only ever at the end of the last segment); ' +
      'restore the stream directory from a backup or start a new one.',
    { retriable: false },
  );
}

async function readFully(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

async function writeFully(fh: FileHandle, buf: Buffer, from: number, to: number, position: number): Promise<void> {
  let at = from;
  while (at < to) {
    const { bytesWritten } = await fh.write(buf, at, to - at, position + (at - from));
    at += bytesWritten;
  }
}

interface ScanResult {
  /** File position after the last valid record. */
  end: number;
  /** Offset the next record will have. */
  nextOffset: bigint;
  /** Timestamp of the last valid record, if any. */
  lastTimestamp: number | null;
  /**
   * `end`: the file ends after the last valid record; `found`: stopped before the first
   * record stamped at or after `untilTimestamp` (its offset is `nextOffset`); otherwise
   * what follows the last valid record.
   */
  stop: 'end' | 'incomplete' | 'corrupt' | 'found';
}

/**
 * Walks the valid records of a segment from `from` (whose record must have offset
 * `expected`) in chunks, without materializing them; with `untilTimestamp`, stops before
 * the first record stamped at or after it.
 */
async function scanSegment(
  fh: FileHandle,
  file: string,
  from: number,
  expected: bigint,
  chunkBytes: number,
  untilTimestamp = Number.POSITIVE_INFINITY,
): Promise<ScanResult> {
  let buf = Buffer.allocUnsafe(chunkBytes);
  let pos = from;
  let next = expected;
  let lastTimestamp: number | null = null;
  for (;;) {
    const got = await readFully(fh, buf, buf.length, pos);
    if (got === 0) return { end: pos, nextOffset: next, lastTimestamp, stop: 'end' };
    let at = 0;
    let size = 0;
    for (;;) {
      size = checkRecord(buf, at, got);
      if (size < 0) break;
      const offset = recordOffset(buf, at);
      if (offset !== next) throw corruptError(file, pos + at, `record has offset ${offset}, expected ${next}`);
      const timestamp = recordTimestamp(buf, at);
      if (timestamp >= untilTimestamp) return { end: pos + at, nextOffset: next, lastTimestamp, stop: 'found' };
      lastTimestamp = timestamp;
      next++;
      at += size;
    }
    if (size === CORRUPT) return { end: pos + at, nextOffset: next, lastTimestamp, stop: 'corrupt' };
    // INCOMPLETE: a short read means end of file; otherwise the chunk cut a record.
    if (got < buf.length) {
      return { end: pos + at, nextOffset: next, lastTimestamp, stop: at === got ? 'end' : 'incomplete' };
    }
    if (at === 0) {
      // A record larger than the buffer: grow to its declared size (bounded by MAX_BODY_BYTES).
      buf = Buffer.allocUnsafe(declaredLength(buf, 0, got));
    }
    pos += at;
  }
}

export interface PartitionLogOptions {
  segmentBytes?: number;
  readChunkBytes?: number;
}

/** One partition directory: opens its writer and readers, applies retention, finds its end. */
export class PartitionLog {
  readonly dir: string;
  readonly partition: number;
  readonly segmentBytes: number;
  readonly readChunkBytes: number;
  /** Last record timestamp of non-active segments already scanned or rolled by this process. */
  private readonly lastTimestamps = new Map<bigint, number>();
  // Incremental end-offset scan: the last segment seen and how far it was read.
  private endBase = -1n;
  private endPos = 0;
  private endNext = 0n;

  constructor(dir: string, partition: number, options: PartitionLogOptions = {}) {
    this.dir = dir;
    this.partition = partition;
    this.segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    this.readChunkBytes = options.readChunkBytes ?? DEFAULT_READ_CHUNK_BYTES;
  }

  segmentPath(base: bigint): string {
    return join(this.dir, segmentFileName(base));
  }

  /**
   * Offset below which every record is durable (fdatasync done), when a writer of this
   * process holds the partition; undefined otherwise (the files are all there is to go by).
   */
  get durableEnd(): bigint | undefined {
    return durableMarks.get(this.dir)?.end;
  }

  /** Recovers the last segment (truncating a torn tail) and returns the partition's writer. */
  async openWriter(): Promise<PartitionWriter> {
    const bases = await listSegments(this.dir);
    const base = bases[bases.length - 1];
    if (base === undefined) {
      const fh = await open(this.segmentPath(0n), 'wx');
      try {
        await fsyncDir(this.dir);
      } catch (err) {
        await fh.close();
        throw err;
      }
      return PartitionWriter.registered(this, fh, 0n, 0, 0n, null);
    }
    const file = this.segmentPath(base);
    const fh = await open(file, 'r+');
    try {
      const scan = await scanSegment(fh, file, 0, base, this.readChunkBytes);
      if (scan.stop !== 'end') {
        // Torn tail of a killed writer: never acknowledged (publish resolves only after
        // fdatasync of complete records), so dropping it loses nothing.
        await fh.truncate(scan.end);
      }
      // Always: a killed writer may have left complete records it never synced; they become
      // durable now, before readers of this process may pass them (the durable mark).
      await fh.datasync();
      return PartitionWriter.registered(this, fh, base, scan.end, scan.nextOffset, scan.lastTimestamp);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /**
   * A reader from `position`, or, with null, from the first retained record. A position that
   * retention has deleted makes `read` throw RetentionGapError rather than skip ahead.
   */
  openReader(position: bigint | null): PartitionReader {
    return new PartitionReader(this, position);
  }

  /**
   * Offset the next appended record will get, as far as the files show now. Reads only what
   * was appended since the previous call.
   */
  async endOffset(): Promise<bigint> {
    const bases = await listSegments(this.dir);
    const last = bases[bases.length - 1];
    if (last === undefined) return 0n;
    if (last !== this.endBase) {
      this.endBase = last;
      this.endPos = 0;
      this.endNext = last;
    }
    const file = this.segmentPath(last);
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (err) {
      if (isCode(err, 'ENOENT')) return this.endNext;
      throw err;
    }
    try {
      const scan = await scanSegment(fh, file, this.endPos, this.endNext, this.readChunkBytes);
      this.endPos = scan.end;
      this.endNext = scan.nextOffset;
    } finally {
      await fh.close();
    }
    // A writer of this process may have appended records it has not synced yet: readers stop
    // at the durable mark, so the end they can reach is there.
    const durable = this.durableEnd;
    return durable !== undefined && durable < this.endNext ? durable : this.endNext;
  }

  /**
   * Offset of the first record stamped at or after `timestampMs`, else the end offset.
   * Segments whose last timestamp is known to be earlier are skipped unread; the others are
   * scanned in order (timestamps follow append order unless the clock stepped back).
   */
  async offsetForTime(timestampMs: number): Promise<bigint> {
    const bases = await listSegments(this.dir);
    for (let i = 0; i < bases.length; i++) {
      const base = bases[i] as bigint;
      const last = this.lastTimestamps.get(base);
      if (last !== undefined && last < timestampMs) continue;
      const file = this.segmentPath(base);
      let fh: FileHandle;
      try {
        fh = await open(file, 'r');
      } catch (err) {
        if (isCode(err, 'ENOENT')) continue; // deleted by retention meanwhile
        throw err;
      }
      try {
        const scan = await scanSegment(fh, file, 0, base, this.readChunkBytes, timestampMs);
        if (scan.stop === 'found') return scan.nextOffset;
        // A non-active segment is complete: remember its last timestamp for the next lookup.
        if (i < bases.length - 1 && scan.lastTimestamp !== null) this.lastTimestamps.set(base, scan.lastTimestamp);
      } finally {
        await fh.close();
      }
    }
    return this.endOffset();
  }

  /** Called by the writer when it closes a segment, so retention need not re-read it. */
  rememberLastTimestamp(base: bigint, timestamp: number): void {
    this.lastTimestamps.set(base, timestamp);
  }

  /**
   * Deletes the oldest non-active segments whose last record is older than `cutoffMs`.
   * Only a prefix is deleted, so the remaining offsets stay contiguous. Returns the count.
   * With `keepFrom`, a segment holding any offset at or after it is kept, whatever its age.
   */
  async applyRetention(cutoffMs: number, keepFrom?: bigint): Promise<number> {
    const bases = await listSegments(this.dir);
    let deleted = 0;
    // The last segment is the active one: never deleted, even when idle for long.
    for (let i = 0; i < bases.length - 1; i++) {
      const base = bases[i] as bigint;
      // Segment i holds the offsets [base, next base): it still has records not consumed.
      if (keepFrom !== undefined && (bases[i + 1] as bigint) > keepFrom) break;
      const file = this.segmentPath(base);
      let last = this.lastTimestamps.get(base);
      if (last === undefined) {
        let mtimeMs: number;
        try {
          mtimeMs = (await stat(file)).mtimeMs;
        } catch (err) {
          if (isCode(err, 'ENOENT')) continue; // another process's retention got there first
          throw err;
        }
        // The last append happened no later than the file's mtime, so a segment modified
        // after the cutoff is certainly kept; this avoids reading every segment at startup.
        if (mtimeMs >= cutoffMs) break;
        const scanned = await this.readLastTimestamp(file, base);
        if (scanned === null) continue;
        last = scanned;
        this.lastTimestamps.set(base, last);
      }
      if (last >= cutoffMs) break;
      try {
        await unlink(file);
        deleted++;
      } catch (err) {
        if (!isCode(err, 'ENOENT')) throw err;
      }
      this.lastTimestamps.delete(base);
    }
    if (deleted > 0) await fsyncDir(this.dir);
    return deleted;
  }

  private async readLastTimestamp(file: string, base: bigint): Promise<number | null> {
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (err) {
      if (isCode(err, 'ENOENT')) return null;
      throw err;
    }
    try {
      // An empty non-active segment cannot be produced by the writer; treat it as expired.
      return (await scanSegment(fh, file, 0, base, this.readChunkBytes)).lastTimestamp ?? Number.NEGATIVE_INFINITY;
    } finally {
      await fh.close();
    }
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
    // Pass 1: sizes and the records at which a new segment starts (rare, so lazily allocated).
    let total = 0;
    let fill = this.size;
    let cutBytes: number[] | null = null;
    let cutRecords: number[] | null = null;
    for (let i = 0; i < count; i++) {
      const r = records[i] as OutgoingRecord;
      const len = encodedLength(Buffer.byteLength(r.key, 'utf8'), r.value.length);
      if (fill > 0 && fill + len > segmentBytes) {
        (cutBytes ??= []).push(total);
        (cutRecords ??= []).push(i);
        fill = 0;
      }
      fill += len;
      total += len;
    }
    // Pass 2: encode everything into one buffer: one write syscall per segment touched.
    const buf = Buffer.allocUnsafe(total);
    let pos = 0;
    let offset = this.next;
    for (let i = 0; i < count; i++) {
      const r = records[i] as OutgoingRecord;
      pos = encodeRecordInto(buf, pos, offset, timestamp, r.key, r.value);
      offset++;
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

/**
 * Reads one partition from a position, in chunks through a kept-open file handle, while a
 * writer (in this or another process) may be appending. Bytes after the last valid record
 * are never kept across reads: they may be a torn tail that a recovering writer overwrites.
 */
export class PartitionReader {
  private readonly log: PartitionLog;
  /** Next offset to return. */
  private pos: bigint;
  /** False while the reader is to start at the first retained record (no position asked). */
  private explicit: boolean;
  private fh: FileHandle | null = null;
  /** Base offset of the open segment. */
  private base = 0n;
  /** Offset of the record at `filePos` (records below `pos` are skipped after a seek). */
  private scanOffset = 0n;
  /** File position of `buf[bufStart]`. */
  private filePos = 0;
  private buf: Buffer = EMPTY;
  private bufStart = 0;
  private bufEnd = 0;
  private relocate = true;

  /** @internal use PartitionLog.openReader */
  constructor(log: PartitionLog, position: bigint | null) {
    this.log = log;
    this.pos = position ?? 0n;
    this.explicit = position !== null;
  }

  get position(): bigint {
    return this.pos;
  }

  seek(offset: bigint): void {
    this.pos = offset;
    this.explicit = true;
    this.relocate = true;
  }

  /**
   * Appends up to `max` records to `out` and returns how many. Zero means nothing new yet.
   * Throws RetentionGapError when retention deleted records from the reader's position on.
   */
  async read(max: number, out: StreamRecord[]): Promise<number> {
    if (this.relocate && !(await this.locate())) return 0;
    const partition = this.log.partition;
    // Records at or past the durable mark are not synced yet: not returned (see the top).
    const durable = this.log.durableEnd;
    let n = 0;
    // Whether the buffer was just filled from the file: if it then holds no complete
    // record, this segment has nothing more for now.
    let fresh = false;
    while (n < max) {
      const buf = this.buf;
      const at = this.bufStart;
      const size = checkRecord(buf, at, this.bufEnd);
      if (size > 0) {
        const offset = recordOffset(buf, at);
        if (durable !== undefined && offset >= durable) break;
        if (offset !== this.scanOffset) {
          throw corruptError(this.currentFile(), this.filePos, `record has offset ${offset}, expected ${this.scanOffset}`);
        }
        this.scanOffset = offset + 1n;
        this.bufStart = at + size;
        this.filePos += size;
        if (offset >= this.pos) {
          out.push({
            partition,
            offset,
            key: recordKey(buf, at),
            value: recordValue(buf, at, size),
            timestamp: recordTimestamp(buf, at),
          });
          this.pos = offset + 1n;
          n++;
        }
        fresh = false;
        continue;
      }
      if (!fresh) {
        await this.fill(size);
        fresh = true;
        continue;
      }
      if (!(await this.nextSegment())) break;
      fresh = false;
    }
    // Once it returned a record the reader has a position of its own: a later gap is a loss.
    if (n > 0) this.explicit = true;
    return n;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    this.relocate = true;
    this.buf = EMPTY;
    this.bufStart = this.bufEnd = 0;
    if (fh !== null) await fh.close();
  }

  private currentFile(): string {
    return this.log.segmentPath(this.base);
  }

  /**
   * Opens the segment holding `pos`; a reader without a position starts at the oldest one.
   * A position that retention deleted is refused: moving up to the first retained record
   * would skip records nobody consumed, silently.
   */
  private async locate(): Promise<boolean> {
    await this.close();
    const bases = await listSegments(this.log.dir);
    const first = bases[0];
    if (first === undefined) return false;
    if (this.pos < first) {
      if (this.explicit) {
        this.relocate = true;
        throw new RetentionGapError('embedded stream', this.log.partition, this.pos, first);
      }
      this.pos = first;
    }
    let base = first;
    for (const b of bases) {
      if (b > this.pos) break;
      base = b;
    }
    try {
      this.fh = await open(this.log.segmentPath(base), 'r');
    } catch (err) {
      if (isCode(err, 'ENOENT')) return false; // deleted by retention meanwhile: retry next read
      throw err;
    }
    this.base = base;
    this.scanOffset = base;
    this.filePos = 0;
    this.relocate = false;
    return true;
  }

  /** Drops unconsumed buffered bytes and reads from the file at `filePos`. */
  private async fill(code: number): Promise<void> {
    let need = this.log.readChunkBytes;
    if (code === INCOMPLETE) {
      const declared = declaredLength(this.buf, this.bufStart, this.bufEnd);
      if (declared > need) need = declared;
    }
    // Grow for a large record; shrink back afterwards so one big record does not pin memory.
    if (this.buf.length < need || this.buf.length > Math.max(need, this.log.readChunkBytes)) {
      this.buf = Buffer.allocUnsafe(need);
    }
    this.bufStart = 0;
    this.bufEnd = await readFully(this.fh as FileHandle, this.buf, this.buf.length, this.filePos);
  }

  /**
   * Called when the current segment has no complete record after `filePos`. Moves to the
   * next segment if it exists (the writer creates it only after finishing this one).
   */
  private async nextSegment(): Promise<boolean> {
    const nextFile = this.log.segmentPath(this.scanOffset);
    // A segment without records yet is the active one (the writer never rolls away from an
    // empty segment), and its own name is the one a next segment would have.
    // existsSync: a stat without an exception object per idle check on the poll path.
    if (this.scanOffset === this.base || !existsSync(nextFile)) {
      // Retention may have deleted this segment and the ones after it: start over.
      if ((await (this.fh as FileHandle).stat()).nlink === 0) return this.locate();
      return false;
    }
    // Our last read may predate the writer's final appends to this segment: read once more.
    await this.fill(INCOMPLETE);
    const size = checkRecord(this.buf, this.bufStart, this.bufEnd);
    if (size > 0) return true;
    if (this.bufEnd > this.bufStart) {
      throw corruptError(
        this.currentFile(),
        this.filePos,
        'bytes that are not a record before the start of the next segment',
      );
    }
    const old = this.fh as FileHandle;
    this.fh = null;
    await old.close();
    try {
      this.fh = await open(nextFile, 'r');
    } catch (err) {
      if (isCode(err, 'ENOENT')) return this.locate();
      throw err;
    }
    this.base = this.scanOffset;
    this.filePos = 0;
    this.buf = this.buf.length > this.log.readChunkBytes ? EMPTY : this.buf;
    this.bufStart = this.bufEnd = 0;
    return true;
  }
}
