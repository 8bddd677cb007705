import { ProtocolError } from '../core/errors.js';
import type { Lsn } from '../core/lsn.js';
import { BufferReader } from './reader.js';

/*
 * Streaming replication frames carried in CopyData (PostgreSQL docs, "Streaming
 * Replication Protocol"):
 *   XLogData          'w' Int64 dataStart Int64 walEnd Int64 sendTime Byte* data
 *   PrimaryKeepalive  'k' Int64 walEnd Int64 sendTime Int8 replyRequested
 *   StandbyStatus     'r' Int64 written Int64 flushed Int64 applied Int64 clock Int8 replyRequested
 */
export type ReplicationFrame =
  | { tag: 'xlog'; dataStart: Lsn; dataOffset: number }
  | { tag: 'keepalive'; walEnd: Lsn; sendTime: bigint; replyRequested: boolean };

const reader = new BufferReader();

/**
 * Parses a frame header; for XLogData the pgoutput message is `chunk[dataOffset..]`. Every
 * change comes in one: its walEnd and sendTime, which nothing uses, are not read (two bigints).
 */
export function parseReplicationFrame(chunk: Buffer): ReplicationFrame {
  const r = reader.reset(chunk);
  const tag = r.uint8();
  if (tag === 0x77 /* w */) {
    if (r.remaining() < 24) throw new ProtocolError(`XLogData frame of ${chunk.length} bytes: its header alone takes 25`);
    return { tag: 'xlog', dataStart: r.uint64(), dataOffset: 25 };
  }
  if (tag === 0x6b /* k */) {
    return { tag: 'keepalive', walEnd: r.uint64(), sendTime: r.int64(), replyRequested: r.uint8() === 1 };
  }
  throw new ProtocolError(`unknown replication frame 0x${tag.toString(16)}`);
}

/** Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01). */
const PG_EPOCH_OFFSET_US = 946_684_800_000_000n;

export function standbyStatusUpdate(written: Lsn, flushed: Lsn, applied: Lsn, nowMs: number, replyRequested = false): Buffer {
  const b = Buffer.allocUnsafe(34);
  b[0] = 0x72;
  b.writeBigUInt64BE(written, 1);
  b.writeBigUInt64BE(flushed, 9);
  b.writeBigUInt64BE(applied, 17);
  b.writeBigInt64BE(BigInt(nowMs) * 1000n - PG_EPOCH_OFFSET_US, 25);
  b[33] = replyRequested ? 1 : 0;
  return b;
}

/** PostgreSQL timestamps on the wire: microseconds since 2000-01-01 UTC. ISO with microseconds. */
export function pgTimestampToIso(us: bigint): string {
  const unixUs = us + PG_EPOCH_OFFSET_US;
  const ms = unixUs / 1000n;
  const micro = Number(((unixUs % 1_000_000n) + 1_000_000n) % 1_000_000n);
  const iso = new Date(Number(ms)).toISOString(); // ...ss.mmmZ
  return `${iso.slice(0, 19)}.${String(micro).padStart(6, '0')}Z`;
}

export function pgTimestampToMs(us: bigint): number {
  return Number((us + PG_EPOCH_OFFSET_US) / 1000n);
}
