/**
 * The segment files of one partition directory: their names (the offset of their first
 * record, 20 digits, zero padded, so names sort like offsets), the listing, and a scan of
 * their valid records. Used by the partition's log, writer and readers alike.
 */
import { readdir, type FileHandle } from 'node:fs/promises';
import { SynclineError } from '../../core/errors.js';
import { isCode } from './fs-durable.js';
import { CORRUPT, checkRecord, declaredLength, recordOffset, recordTimestamp } from './segment-format.js';

const SEGMENT_NAME = /^(\d{20})\.log$/;

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

export function corruptError(file: string, position: number, detail: string): SynclineError {
  return new SynclineError(
    'STREAM_CORRUPT',
    `embedded stream segment ${file} is corrupt at byte ${position}: ${detail}. ` +
      'This is not a torn write (those are only ever at the end of the last segment); ' +
      'restore the stream directory from a backup or start a new one.',
    { retriable: false },
  );
}

export async function readFully(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

export interface ScanResult {
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
export async function scanSegment(
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
