import { ProtocolError } from '../core/errors.js';
import { BufferReader } from './reader.js';
import type { PgoutputMessage, ReplicaIdentity, TupleValue } from './messages.js';

/*
 * pgoutput decoder, written by hand: the npm libraries for it allocate closures and copies
 * per message and spend ~2x the CPU budget per change (see DESIGN.md, performance habits).
 *
 * Grammar (all integers big-endian; String = NUL-terminated UTF-8; [xid] = Int32 present only
 * between Stream Start and Stream Stop, protocol >= 2):
 *   Begin        'B' Int64 finalLsn Int64 commitTime Int32 xid
 *   Commit       'C' Int8 flags Int64 commitLsn Int64 endLsn Int64 commitTime
 *   Origin       'O' Int64 lsn String name
 *   Relation     'R' [xid] Int32 relid String schema String name Int8 replident Int16 ncols
 *                    { Int8 flags(1=key) String name Int32 typeOid Int32 typmod }*
 *   Type         'Y' [xid] Int32 oid String schema String name
 *   Insert       'I' [xid] Int32 relid 'N' TupleData
 *   Update       'U' [xid] Int32 relid [('K'|'O') TupleData] 'N' TupleData
 *   Delete       'D' [xid] Int32 relid ('K'|'O') TupleData
 *   Truncate     'T' [xid] Int32 nrels Int8 options(1=cascade,2=restart identity) Int32 relid*
 *   Message      'M' [xid] Int8 flags(1=transactional) Int64 lsn String prefix Int32 len Byte*len
 *   StreamStart  'S' Int32 xid Int8 firstSegment
 *   StreamStop   'E'
 *   StreamCommit 'c' Int32 xid Int8 flags Int64 commitLsn Int64 endLsn Int64 commitTime
 *   StreamAbort  'A' Int32 xid Int32 subXid
 *   two-phase    'b' 'P' 'K' 'r' 'p' (protocol >= 3, only with two_phase enabled)
 *   TupleData    Int16 ncols { 'n' | 'u' | 't' Int32 len Byte*len | 'b' Int32 len Byte*len }*
 *
 * The decoder keeps one piece of state: whether it is inside a streamed chunk, which
 * decides whether data messages carry the [xid] prefix.
 */
export class PgoutputDecoder {
  private readonly reader = new BufferReader();
  private inStream = false;

  /** Decodes one pgoutput message occupying `buf[start, end)`. */
  decode(buf: Buffer, start = 0, end = buf.length): PgoutputMessage {
    const r = this.reader.reset(buf, start, end);
    const tag = r.uint8();
    switch (tag) {
      case 0x42 /* B */:
        return { tag: 'begin', finalLsn: r.uint64(), commitTime: r.int64(), xid: r.uint32() };
      case 0x43 /* C */:
        return { tag: 'commit', flags: r.uint8(), commitLsn: r.uint64(), endLsn: r.uint64(), commitTime: r.int64() };
      case 0x4f /* O */:
        return { tag: 'origin', originLsn: r.uint64(), name: r.cstring() };
      case 0x52 /* R */: {
        const xid = this.streamXid();
        const relationId = r.uint32();
        const schema = r.cstring();
        const name = r.cstring();
        const replicaIdentity = replicaIdentityOf(r.uint8());
        const n = r.int16();
        if (n < 0) throw new ProtocolError(`relation ${schema}.${name}: negative column count ${n}`);
        const columns = new Array<{ isKey: boolean; name: string; typeOid: number; typeMod: number }>(n);
        for (let i = 0; i < n; i++) {
          columns[i] = { isKey: (r.uint8() & 1) === 1, name: r.cstring(), typeOid: r.uint32(), typeMod: r.int32() };
        }
        return { tag: 'relation', xid, relationId, schema, name, replicaIdentity, columns };
      }
      case 0x59 /* Y */:
        return { tag: 'type', xid: this.streamXid(), typeOid: r.uint32(), schema: r.cstring(), name: r.cstring() };
      case 0x49 /* I */: {
        const xid = this.streamXid();
        const relationId = r.uint32();
        expectByte(r.uint8(), 0x4e, 'insert tuple marker N');
        return { tag: 'insert', xid, relationId, newTuple: this.tuple() };
      }
      case 0x55 /* U */: {
        const xid = this.streamXid();
        const relationId = r.uint32();
        let kind = r.uint8();
        let oldKind: 'K' | 'O' | undefined;
        let oldTuple: TupleValue[] | undefined;
        if (kind === 0x4b /* K */ || kind === 0x4f /* O */) {
          oldKind = kind === 0x4b ? 'K' : 'O';
          oldTuple = this.tuple();
          kind = r.uint8();
        }
        expectByte(kind, 0x4e, 'update new tuple marker N');
        return { tag: 'update', xid, relationId, oldKind, oldTuple, newTuple: this.tuple() };
      }
      case 0x44 /* D */: {
        const xid = this.streamXid();
        const relationId = r.uint32();
        const kind = r.uint8();
        if (kind !== 0x4b && kind !== 0x4f) throw new ProtocolError(`delete: expected K or O, got 0x${kind.toString(16)}`);
        return { tag: 'delete', xid, relationId, oldKind: kind === 0x4b ? 'K' : 'O', oldTuple: this.tuple() };
      }
      case 0x54 /* T */: {
        const xid = this.streamXid();
        const n = r.int32();
        if (n < 0) throw new ProtocolError(`truncate: negative relation count ${n}`);
        const options = r.uint8();
        if (n > r.remaining() / 4) throw new ProtocolError(`truncate: ${n} relations do not fit in the message`);
        const relationIds = new Array<number>(n);
        for (let i = 0; i < n; i++) relationIds[i] = r.uint32();
        return { tag: 'truncate', xid, cascade: (options & 1) !== 0, restartIdentity: (options & 2) !== 0, relationIds };
      }
      case 0x4d /* M */: {
        const xid = this.streamXid();
        const transactional = (r.uint8() & 1) === 1;
        const lsn = r.uint64();
        const prefix = r.cstring();
        const len = r.int32();
        if (len < 0) throw new ProtocolError(`message: negative content length ${len}`);
        return { tag: 'message', xid, transactional, lsn, prefix, content: Buffer.from(r.bytes(len)) };
      }
      case 0x53 /* S */: {
        const xid = r.uint32();
        const firstSegment = r.uint8() === 1;
        this.inStream = true;
        return { tag: 'stream_start', xid, firstSegment };
      }
      case 0x45 /* E */:
        this.inStream = false;
        return { tag: 'stream_stop' };
      case 0x63 /* c */:
        return { tag: 'stream_commit', xid: r.uint32(), flags: r.uint8(), commitLsn: r.uint64(), endLsn: r.uint64(), commitTime: r.int64() };
      case 0x41 /* A */:
        return { tag: 'stream_abort', xid: r.uint32(), subXid: r.uint32() };
      case 0x62 /* b */:
      case 0x50 /* P */:
      case 0x4b /* K */:
      case 0x72 /* r */:
      case 0x70 /* p */:
        return { tag: 'two_phase', kind: String.fromCharCode(tag), body: Buffer.from(r.rest()) };
      default:
        throw new ProtocolError(`unknown pgoutput message type 0x${tag.toString(16)}`);
    }
  }

  /** Decodes a data message recorded inside a streamed chunk: it carries the [xid] prefix. */
  decodeInStream(buf: Buffer): PgoutputMessage {
    const previous = this.inStream;
    this.inStream = true;
    try {
      return this.decode(buf);
    } finally {
      this.inStream = previous;
    }
  }

  private streamXid(): number | undefined {
    return this.inStream ? this.reader.uint32() : undefined;
  }

  private tuple(): TupleValue[] {
    const r = this.reader;
    const n = r.int16();
    if (n < 0) throw new ProtocolError(`tuple: negative column count ${n}`);
    // Each column takes at least one byte: refuse counts the message cannot hold before allocating.
    if (n > r.remaining()) throw new ProtocolError(`tuple: ${n} columns do not fit in the message`);
    const values = new Array<TupleValue>(n);
    for (let i = 0; i < n; i++) {
      const kind = r.uint8();
      switch (kind) {
        case 0x6e /* n */:
          values[i] = null;
          break;
        case 0x75 /* u */:
          values[i] = undefined;
          break;
        case 0x74 /* t */: {
          const len = r.int32();
          if (len < 0) throw new ProtocolError(`tuple: negative value length ${len}`);
          values[i] = r.utf8(len);
          break;
        }
        case 0x62 /* b */: {
          const len = r.int32();
          if (len < 0) throw new ProtocolError(`tuple: negative value length ${len}`);
          values[i] = Buffer.from(r.bytes(len));
          break;
        }
        default:
          throw new ProtocolError(`tuple: unknown column kind 0x${kind.toString(16)}`);
      }
    }
    return values;
  }
}

function replicaIdentityOf(byte: number): ReplicaIdentity {
  switch (byte) {
    case 0x64: return 'd';
    case 0x6e: return 'n';
    case 0x66: return 'f';
    case 0x69: return 'i';
    default: throw new ProtocolError(`relation: unknown replica identity 0x${byte.toString(16)}`);
  }
}

function expectByte(actual: number, expected: number, what: string): void {
  if (actual !== expected) {
    throw new ProtocolError(`${what}: expected 0x${expected.toString(16)}, got 0x${actual.toString(16)}`);
  }
}
