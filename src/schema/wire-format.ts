/**
 * Confluent's wire format (what every Confluent-compatible serializer reads and writes):
 *
 *   record  = Int8 magic (0) Int32 schemaId (big-endian) [MessageIndexes] Payload
 *   MessageIndexes (Protobuf only) = the path of the message type in its .proto file:
 *             zigzag-varint count, then count zigzag-varint indexes; the common path [0]
 *             (the file's first message) is written as the single byte 0 (count 0).
 *
 * Pure functions; a record that breaks the grammar is an EVENT_MALFORMED SynclineError.
 */
import { SynclineError } from '../core/errors.js';

export const MAGIC_BYTE = 0;

export interface FramedRecord {
  schemaId: number;
  /** Protobuf: the message indexes; absent for Avro and JSON Schema. */
  messageIndexes?: number[];
  payload: Buffer;
}

export function frame(schemaId: number, payload: Buffer, messageIndexes?: readonly number[]): Buffer {
  const indexes = messageIndexes === undefined ? undefined : encodeMessageIndexes(messageIndexes);
  const out = Buffer.allocUnsafe(5 + (indexes?.length ?? 0) + payload.length);
  out[0] = MAGIC_BYTE;
  out.writeUInt32BE(schemaId, 1);
  let at = 5;
  if (indexes) at += indexes.copy(out, at);
  payload.copy(out, at);
  return out;
}

/** True when `value` starts like a Confluent-framed record (JSON starts with `{`). */
export function isFramed(value: Buffer): boolean {
  return value.length >= 5 && value[0] === MAGIC_BYTE;
}

export function unframe(value: Buffer, withMessageIndexes: boolean): FramedRecord {
  if (!isFramed(value)) throw malformed(`not in the Confluent wire format (magic byte ${value[0] ?? 'missing'}, ${value.length} bytes)`);
  const schemaId = value.readUInt32BE(1);
  if (!withMessageIndexes) return { schemaId, payload: value.subarray(5) };
  const { indexes, end } = decodeMessageIndexes(value, 5);
  return { schemaId, messageIndexes: indexes, payload: value.subarray(end) };
}

/** The schema id of a framed record, without reading further. */
export function schemaIdOf(value: Buffer): number {
  if (!isFramed(value)) throw malformed(`not in the Confluent wire format (magic byte ${value[0] ?? 'missing'}, ${value.length} bytes)`);
  return value.readUInt32BE(1);
}

export function encodeMessageIndexes(indexes: readonly number[]): Buffer {
  if (indexes.length === 1 && indexes[0] === 0) return Buffer.from([0]);
  const bytes: number[] = [];
  writeVarint(bytes, zigzag(indexes.length));
  for (const i of indexes) {
    if (!Number.isInteger(i) || i < 0) throw new RangeError(`message index ${i} is not a non-negative integer`);
    writeVarint(bytes, zigzag(i));
  }
  return Buffer.from(bytes);
}

export function decodeMessageIndexes(buf: Buffer, start: number): { indexes: number[]; end: number } {
  let at = start;
  const next = (): number => {
    const r = readVarint(buf, at);
    at = r.end;
    return unzigzag(r.value);
  };
  const count = next();
  if (count === 0) return { indexes: [0], end: at };
  if (count < 0 || count > buf.length) throw malformed(`message index count ${count} is impossible`);
  const indexes = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    const v = next();
    if (v < 0) throw malformed(`negative message index ${v}`);
    indexes[i] = v;
  }
  return { indexes, end: at };
}

function zigzag(n: number): number {
  return n >= 0 ? n * 2 : -n * 2 - 1;
}

function unzigzag(n: number): number {
  return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
}

function writeVarint(out: number[], n: number): void {
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
}

function readVarint(buf: Buffer, start: number): { value: number; end: number } {
  let value = 0;
  let mul = 1;
  for (let at = start; at < buf.length && at < start + 5; at++) {
    const b = buf[at] as number;
    value += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) return { value, end: at + 1 };
    mul *= 0x80;
  }
  throw malformed('a message index varint is truncated or longer than 5 bytes');
}

function malformed(why: string): SynclineError {
  return new SynclineError('EVENT_MALFORMED', `stream record ${why}`, { retriable: false });
}
