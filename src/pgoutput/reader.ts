import { ProtocolError } from '../core/errors.js';

/**
 * A cursor over one message. Reused across messages (reset per message) so decoding
 * allocates only the values it returns. Every read checks bounds: a truncated or corrupt
 * message raises a ProtocolError instead of returning garbage.
 */
export class BufferReader {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private end = 0;

  reset(buf: Buffer, start = 0, end = buf.length): this {
    this.buf = buf;
    this.pos = start;
    this.end = end;
    return this;
  }

  get offset(): number {
    return this.pos;
  }

  remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) {
      throw new ProtocolError(`message truncated: needed ${n} byte(s) at offset ${this.pos}, ${this.end - this.pos} left`);
    }
  }

  uint8(): number {
    this.need(1);
    return this.buf[this.pos++] as number;
  }

  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  uint32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  uint64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  int64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A NUL-terminated string. */
  cstring(): string {
    const nul = this.buf.indexOf(0, this.pos);
    if (nul < 0 || nul >= this.end) throw new ProtocolError(`unterminated string at offset ${this.pos}`);
    const s = this.buf.toString('utf8', this.pos, nul);
    this.pos = nul + 1;
    return s;
  }

  utf8(length: number): string {
    this.need(length);
    const b = this.buf;
    const start = this.pos;
    const end = start + length;
    this.pos = end;
    if (length <= SHORT_ASCII) {
      let orBits = 0;
      for (let i = start; i < end; i++) orBits |= b[i] as number;
      if (orBits < 0x80) return shortAscii(b, start, length);
    }
    return b.toString('utf8', start, end);
  }

  bytes(length: number): Buffer {
    this.need(length);
    const b = this.buf.subarray(this.pos, this.pos + length);
    this.pos += length;
    return b;
  }

  rest(): Buffer {
    const b = this.buf.subarray(this.pos, this.end);
    this.pos = this.end;
    return b;
  }
}

/** Values up to this many bytes are made in JavaScript when they are ASCII (see shortAscii). */
const SHORT_ASCII = 12;

const fromCharCode = String.fromCharCode;

/**
 * The ASCII bytes `b[s, s + n)` (n <= SHORT_ASCII) as a string. Most values of a row
 * are short (keys, numbers, flags, codes): a native UTF-8 decode costs a call into C++ each,
 * two to three times what `String.fromCharCode` with the bytes as arguments costs, which also
 * makes a flat string (a concatenation would make a rope, flattened again when written).
 */
function shortAscii(b: Buffer, s: number, n: number): string {
  switch (n) {
    case 0: return '';
    case 1: return fromCharCode(b[s] as number);
    case 2: return fromCharCode(b[s] as number, b[s + 1] as number);
    case 3: return fromCharCode(b[s] as number, b[s + 1] as number, b[s + 2] as number);
    case 4: return fromCharCode(b[s] as number, b[s + 1] as number, b[s + 2] as number, b[s + 3] as number);
    case 5: return fromCharCode(b[s] as number, b[s + 1] as number, b[s + 2] as number, b[s + 3] as number, b[s + 4] as number);
    case 6: return fromCharCode(b[s] as number, b[s + 1] as number, b[s + 2] as number, b[s + 3] as number, b[s + 4] as number, b[s + 5] as number);
    case 7: return fromCharCode(b[s] as number, b[s + 1] as number, b[s + 2] as number, b[s + 3] as number, b[s + 4] as number, b[s + 5] as number, b[s + 6] as number);
    case 8: return fromCharCode(b[s] as number, b[s + 1] as number, b[s + 2] as number, b[s + 3] as number, b[s + 4] as number, b[s + 5] as number, b[s + 6] as number, b[s + 7] as number);
    // Together under 13 characters, V8 copies the two into one flat string.
    default: return shortAscii(b, s, 8) + shortAscii(b, s + 8, n - 8);
  }
}
