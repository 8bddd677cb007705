/**
 * A reader of one partition of the embedded stream (see partition-log.ts).
 */
import { existsSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { RetentionGapError, type StreamRecord } from '../stream.js';
import { isCode } from './fs-durable.js';
import type { PartitionLog } from './partition-log.js';
import { INCOMPLETE, checkRecord, declaredLength, recordKey, recordOffset, recordTimestamp, recordValue } from './segment-format.js';
import { corruptError, listSegments, readFully } from './segment-files.js';

const EMPTY = Buffer.alloc(0);

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
    // Records at or past the durable mark are not synced yet: not returned (see partition-log.ts).
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
      // Known without I/O when the writer is in this process: every durable record was
      // scanned. Else a reader caught up reads the file again, looks for a next segment and
      // stats its own (three file operations per partition per poll: ~600 a second at a
      // light load in `syncline run`).
      if (durable !== undefined && this.scanOffset >= durable) break;
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
