/**
 * Record wire format of the embedded stream's segment files. Pure: no I/O.
 *
 *   segment  = *record
 *   record   = bodyLength:u32BE  crc:u32BE  body          ; crc = CRC-32 (zlib) of body
 *   body     = offset:u64BE  timestamp:f64BE  keyLength:u16BE  key:utf8[keyLength]  value:bytes
 *              ; value fills the rest of the body: bodyLength - 18 - keyLength bytes
 *
 * A segment is written append-only, so after a crash only its tail can be damaged: a record
 * may be cut short (incomplete) or hold bytes that were never fully written (its CRC fails).
 * The decoder therefore never throws on bad input; it reports where the good records end
 * and why it stopped, and the caller decides (truncate on recovery, "not yet there" when
 * reading while a writer appends).
 */
import { crc32 } from 'node:zlib';
import { SynclineError } from '../../core/errors.js';

/** bodyLength + crc. */
export const HEADER_BYTES = 8;
/** offset + timestamp + keyLength. */
export const BODY_FIXED_BYTES = 18;
export const MAX_KEY_BYTES = 0xffff;
/**
 * Largest body accepted. A length field above it can only be garbage, so a reader never
 * waits for (or allocates) gigabytes because of a torn header.
 */
export const MAX_BODY_BYTES = 256 * 1024 * 1024;

/** `checkRecord` result: the buffer ends inside the record; more bytes may complete it. */
export const INCOMPLETE = -1;
/** `checkRecord` result: the bytes at this position are not a valid record. */
export const CORRUPT = -2;

/** Size on disk of a record whose key takes `keyBytes` UTF-8 bytes. */
export function encodedLength(keyBytes: number, valueBytes: number): number {
  return HEADER_BYTES + BODY_FIXED_BYTES + keyBytes + valueBytes;
}

/** Throws unless the record can be encoded; cheap for the usual short keys. */
export function validateRecord(key: string, value: Uint8Array): void {
  // A UTF-16 code unit takes at most 3 UTF-8 bytes: only long keys need an exact count.
  if (key.length * 3 > MAX_KEY_BYTES && Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) {
    throw new SynclineError(
      'STREAM_RECORD_TOO_LARGE',
      `stream record key is ${Buffer.byteLength(key, 'utf8')} bytes; at most ${MAX_KEY_BYTES} are allowed`,
      { retriable: false },
    );
  }
  if (BODY_FIXED_BYTES + MAX_KEY_BYTES + value.length > MAX_BODY_BYTES) {
    throw new SynclineError(
      'STREAM_RECORD_TOO_LARGE',
      `stream record value is ${value.length} bytes; at most ${MAX_BODY_BYTES - BODY_FIXED_BYTES - MAX_KEY_BYTES} are allowed`,
      { retriable: false },
    );
  }
}

/**
 * Writes one record at `pos` of `target` (which must have room for
 * `encodedLength(Buffer.byteLength(key), value.length)` bytes) and returns the position after it.
 * `offset` may be a number when it is a safe integer: a writer counting its records in
 * numbers makes no bigint per record.
 */
export function encodeRecordInto(
  target: Buffer,
  pos: number,
  offset: bigint | number,
  timestamp: number,
  key: string,
  value: Uint8Array,
): number {
  const body = pos + HEADER_BYTES;
  if (typeof offset === 'bigint') target.writeBigUInt64BE(offset, body);
  else {
    target.writeUInt32BE(Math.floor(offset / 4294967296), body);
    target.writeUInt32BE(offset >>> 0, body + 4);
  }
  target.writeDoubleBE(timestamp, body + 8);
  // The key length is known only after writing it (no second UTF-8 pass).
  const keyBytes = writeKey(target, key, body + BODY_FIXED_BYTES);
  target.writeUInt16BE(keyBytes, body + 16);
  const valuePos = body + BODY_FIXED_BYTES + keyBytes;
  target.set(value, valuePos);
  const end = valuePos + value.length;
  const bodyLength = end - body;
  target.writeUInt32BE(bodyLength, pos);
  // The CRC of the short part before the value here, continued over the value by zlib: the
  // value is a view already, while a view of the body would be one more object per record.
  target.writeUInt32BE(crc32(value, crc32Of(target, body, valuePos)), pos + 4);
  return end;
}

/** Writes `key` as UTF-8 at `pos`; returns its length in bytes. ASCII (the usual key) without a native call. */
function writeKey(target: Buffer, key: string, pos: number): number {
  const n = key.length;
  if (n > 64) return target.write(key, pos, 'utf8');
  for (let i = 0; i < n; i++) {
    const c = key.charCodeAt(i);
    if (c > 0x7f) return target.write(key, pos, 'utf8');
    target[pos + i] = c;
  }
  return n;
}

/** CRC-32 (zlib's) of a few bytes, `b[start, end)`, byte by byte. */
function crc32Of(b: Uint8Array, start: number, end: number): number {
  let c = -1;
  for (let i = start; i < end; i++) c = (CRC_TABLE[(c ^ (b[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** One record as a fresh buffer. */
export function encodeRecord(offset: bigint, timestamp: number, key: string, value: Uint8Array): Buffer {
  validateRecord(key, value);
  const buf = Buffer.allocUnsafe(encodedLength(Buffer.byteLength(key, 'utf8'), value.length));
  encodeRecordInto(buf, 0, offset, timestamp, key, value);
  return buf;
}

/**
 * Total length of the record whose header starts at `pos`, as declared by its length field,
 * or INCOMPLETE when the header itself is cut, or CORRUPT when the length is impossible.
 * Lets a reader size its next read for a record larger than its buffer.
 */
export function declaredLength(buf: Buffer, pos: number, end: number): number {
  if (end - pos < HEADER_BYTES) return INCOMPLETE;
  const bodyLength = buf.readUInt32BE(pos);
  if (bodyLength < BODY_FIXED_BYTES || bodyLength > MAX_BODY_BYTES) return CORRUPT;
  return HEADER_BYTES + bodyLength;
}

/**
 * Validates the record at `pos` (reading no further than `end`): returns its total length,
 * INCOMPLETE, or CORRUPT. Once this returned a length the field readers below are safe.
 */
export function checkRecord(buf: Buffer, pos: number, end: number): number {
  const total = declaredLength(buf, pos, end);
  if (total < 0) return total;
  if (end - pos < total) return INCOMPLETE;
  const body = pos + HEADER_BYTES;
  const recordEnd = pos + total;
  if (crc32(buf.subarray(body, recordEnd)) !== buf.readUInt32BE(pos + 4)) return CORRUPT;
  if (BODY_FIXED_BYTES + buf.readUInt16BE(body + 16) > total - HEADER_BYTES) return CORRUPT;
  return total;
}

export function recordOffset(buf: Buffer, pos: number): bigint {
  return buf.readBigUInt64BE(pos + HEADER_BYTES);
}

export function recordTimestamp(buf: Buffer, pos: number): number {
  return buf.readDoubleBE(pos + HEADER_BYTES + 8);
}

export function recordKey(buf: Buffer, pos: number): string {
  const keyStart = pos + HEADER_BYTES + BODY_FIXED_BYTES;
  return buf.toString('utf8', keyStart, keyStart + buf.readUInt16BE(pos + HEADER_BYTES + 16));
}

/**
 * The value of the checked record at `pos` with total length `size`, copied so that the
 * caller may reuse `buf` (readers keep one read buffer per partition).
 */
export function recordValue(buf: Buffer, pos: number, size: number): Buffer {
  const start = pos + HEADER_BYTES + BODY_FIXED_BYTES + buf.readUInt16BE(pos + HEADER_BYTES + 16);
  const end = pos + size;
  const value = Buffer.allocUnsafe(end - start);
  buf.copy(value, 0, start, end);
  return value;
}

export interface DecodedRecord {
  offset: bigint;
  timestamp: number;
  key: string;
  value: Buffer;
}

/**
 * Why decoding stopped: `end` — the buffer ends exactly after the last record; `limit` —
 * `maxRecords` were decoded; `incomplete` — the buffer ends inside a record; `corrupt` — the
 * bytes at `next` are not a valid record.
 */
export type DecodeStop = 'end' | 'limit' | 'incomplete' | 'corrupt';

export interface DecodeResult {
  records: DecodedRecord[];
  /** Position after the last complete, valid record: where a torn tail would start. */
  next: number;
  stop: DecodeStop;
}

/** Decodes consecutive records of `buf[start, end)`. Never throws on bad bytes. */
export function decodeRecords(
  buf: Buffer,
  start = 0,
  end = buf.length,
  maxRecords = Number.POSITIVE_INFINITY,
): DecodeResult {
  const records: DecodedRecord[] = [];
  let pos = start;
  for (;;) {
    if (pos === end) return { records, next: pos, stop: 'end' };
    if (records.length >= maxRecords) return { records, next: pos, stop: 'limit' };
    const size = checkRecord(buf, pos, end);
    if (size === INCOMPLETE) return { records, next: pos, stop: 'incomplete' };
    if (size === CORRUPT) return { records, next: pos, stop: 'corrupt' };
    records.push({
      offset: recordOffset(buf, pos),
      timestamp: recordTimestamp(buf, pos),
      key: recordKey(buf, pos),
      value: recordValue(buf, pos, size),
    });
    pos += size;
  }
}
