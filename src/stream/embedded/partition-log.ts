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
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir, isCode } from './fs-durable.js';
import { PartitionReader } from './partition-reader.js';
import { PartitionWriter, durableEndOf } from './partition-writer.js';
import { listSegments, scanSegment, segmentFileName } from './segment-files.js';

export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_READ_CHUNK_BYTES = 1024 * 1024;

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
    return durableEndOf(this.dir);
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
