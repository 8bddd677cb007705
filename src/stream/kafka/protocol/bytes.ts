/**
 * The byte-level grammar of the Kafka protocol (big-endian fixed-width integers, int16-length
 * strings, int32-length arrays and bytes; zig-zag varints inside records): a writer into a
 * buffer sized up front (requests are measured before they are written, so nothing is copied
 * to grow) and a reader over one response. No allocation per field.
 */
import { ProtocolError } from '../../../core/errors.js';

/** Bytes of `n` as a zig-zag varint (Kafka's record fields); n is a 32-bit signed integer. */
export function varintSize(n: number): number {
  let v = ((n << 1) ^ (n >> 31)) >>> 0;
  let size = 1;
  while (v >= 0x80) {
    v >>>= 7;
    size++;
  }
  return size;
}

/** Bytes of an int16-length string. */
export function stringSize(s: string): number {
  return 2 + Buffer.byteLength(s);
}

export class ByteWriter {
  readonly buf: Buffer;
  offset = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  int8(v: number): this {
    this.buf[this.offset++] = v & 0xff;
    return this;
  }

  int16(v: number): this {
    this.buf.writeInt16BE(v, this.offset);
    this.offset += 2;
    return this;
  }

  int32(v: number): this {
    this.buf.writeInt32BE(v, this.offset);
    this.offset += 4;
    return this;
  }

  uint32(v: number): this {
    this.buf.writeUInt32BE(v, this.offset);
    this.offset += 4;
    return this;
  }

  /** A 64-bit integer from a JS number within ±2^53 (timestamps, -1 and small offsets). */
  int64(v: number): this {
    const hi = Math.floor(v / 0x1_0000_0000);
    this.buf.writeInt32BE(hi, this.offset);
    this.buf.writeUInt32BE(v - hi * 0x1_0000_0000, this.offset + 4);
    this.offset += 8;
    return this;
  }

  int64n(v: bigint): this {
    this.buf.writeBigInt64BE(v, this.offset);
    this.offset += 8;
    return this;
  }

  /** An int16-length string; null as length -1. */
  string(s: string | null): this {
    if (s === null) return this.int16(-1);
    const at = this.offset;
    const n = this.buf.write(s, at + 2, 'utf8');
    this.buf.writeInt16BE(n, at);
    this.offset = at + 2 + n;
    return this;
  }

  varint(n: number): this {
    let v = ((n << 1) ^ (n >> 31)) >>> 0;
    const buf = this.buf;
    let o = this.offset;
    while (v >= 0x80) {
      buf[o++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[o++] = v;
    this.offset = o;
    return this;
  }

  /** Raw bytes, no length. */
  raw(b: Uint8Array): this {
    this.buf.set(b, this.offset);
    this.offset += b.length;
    return this;
  }

  /** A UTF-8 string's raw bytes, no length; `bytes` is its byte length. */
  utf8(s: string, bytes: number): this {
    this.buf.write(s, this.offset, bytes, 'utf8');
    this.offset += bytes;
    return this;
  }
}

export class ByteReader {
  offset = 0;

  constructor(
    private readonly buf: Buffer,
    /** Names the message in errors. */
    private readonly what: string,
  ) {}

  private need(n: number): number {
    const at = this.offset;
    if (at + n > this.buf.length) throw new ProtocolError(`Kafka: ${this.what} ends after ${this.buf.length} bytes, expected ${at + n}`);
    this.offset = at + n;
    return at;
  }

  int8(): number {
    return this.buf.readInt8(this.need(1));
  }

  int16(): number {
    return this.buf.readInt16BE(this.need(2));
  }

  int32(): number {
    return this.buf.readInt32BE(this.need(4));
  }

  int64(): bigint {
    return this.buf.readBigInt64BE(this.need(8));
  }

  boolean(): boolean {
    return this.int8() !== 0;
  }

  /** An int16-length string; null for length -1. */
  string(): string | null {
    const n = this.int16();
    if (n < 0) return null;
    const at = this.need(n);
    return this.buf.toString('utf8', at, at + n);
  }

  /** An int32 array count (-1, a null array, reads as 0). */
  count(): number {
    const n = this.int32();
    if (n > this.buf.length - this.offset) throw new ProtocolError(`Kafka: ${this.what} announces ${n} entries in ${this.buf.length - this.offset} bytes`);
    return Math.max(0, n);
  }
}
