import { closeSync, ftruncateSync, mkdirSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

interface Spill {
  file: string;
  fd: number;
  /** Bytes on disk. */
  size: number;
  /** Appended but not yet written: small messages are written in ~1 MiB blocks. */
  pending: Buffer[];
  pendingBytes: number;
  /** Subtransactions in order of their first change, with the offset where it starts. */
  subxacts: { xid: number; offset: number }[];
  /**
   * Relation messages sent inside the transaction, `[u64 lsn][message]`, with the file offset
   * they precede. Kept apart from the file: pgoutput sends a definition once per streamed
   * transaction, so one first sent inside a subtransaction that later aborted still
   * describes the changes after it.
   */
  relations: { offset: number; record: Buffer }[];
}

const FLUSH_BYTES = 1 << 20;

/**
 * Disk buffer for transactions the server streams before they commit (pgoutput protocol
 * >= 2 with `streaming`). Each top-level transaction gets one append-only file of
 * length-prefixed pgoutput messages; a subtransaction abort truncates the file back to
 * where that subtransaction began (as PostgreSQL's own apply worker does), a top-level abort
 * deletes it, and a commit replays it. Memory stays bounded by the write block size.
 *
 * Nothing here must survive a crash: the slot was not confirmed past an uncommitted
 * transaction, so the server streams it again after a restart.
 */
export class SpillStore {
  private readonly spills = new Map<number, Spill>();

  constructor(private readonly dir: string) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
  }

  /** Buffers one message of a streamed chunk with the LSN of its WAL record. */
  append(topXid: number, subXid: number, lsn: bigint, message: Buffer): void {
    const s = this.spill(topXid);
    if (subXid !== topXid && !s.subxacts.some((x) => x.xid === subXid)) {
      s.subxacts.push({ xid: subXid, offset: s.size + s.pendingBytes });
    }
    const header = Buffer.allocUnsafe(12);
    header.writeUInt32BE(message.length + 8);
    header.writeBigUInt64BE(lsn, 4);
    // Copied: the message is a view into the connection's reusable read buffer.
    s.pending.push(header, Buffer.from(message));
    s.pendingBytes += 12 + message.length;
    if (s.pendingBytes >= FLUSH_BYTES) this.flush(s);
  }

  /**
   * Buffers a Relation message of a streamed chunk: replayed before the changes that follow
   * it, so each change is decoded with the definition it was written with (F2).
   */
  appendRelation(topXid: number, lsn: bigint, message: Buffer): void {
    const s = this.spill(topXid);
    const record = Buffer.allocUnsafe(8 + message.length);
    record.writeBigUInt64BE(lsn, 0);
    message.copy(record, 8);
    s.relations.push({ offset: s.size + s.pendingBytes, record });
  }

  private spill(topXid: number): Spill {
    let s = this.spills.get(topXid);
    if (!s) {
      const file = path.join(this.dir, `${topXid}.spill`);
      s = { file, fd: openSync(file, 'w+'), size: 0, pending: [], pendingBytes: 0, subxacts: [], relations: [] };
      this.spills.set(topXid, s);
    }
    return s;
  }

  /** Stream Abort: the whole transaction (sub == top) or one subtransaction and those after it. */
  abort(topXid: number, subXid: number): void {
    const s = this.spills.get(topXid);
    if (!s) return;
    if (subXid === topXid) {
      this.discard(topXid);
      return;
    }
    const i = s.subxacts.findIndex((x) => x.xid === subXid);
    if (i < 0) return; // the subtransaction made no change we kept
    this.flush(s);
    const offset = (s.subxacts[i] as { offset: number }).offset;
    ftruncateSync(s.fd, offset);
    s.size = offset;
    s.subxacts.length = i;
    // Definitions sent in the aborted part still apply to what follows (see `relations`).
    for (const r of s.relations) if (r.offset > offset) r.offset = offset;
  }

  /**
   * Stream Commit: yields each message as `[u64 lsn][pgoutput message]`, in order, Relation
   * messages before the changes they preceded, then forgets the transaction. A yielded
   * buffer is valid until the next one is requested.
   */
  *replay(topXid: number): Generator<Buffer> {
    const s = this.spills.get(topXid);
    if (!s) return;
    this.flush(s);
    try {
      let pos = 0;
      let buf = Buffer.allocUnsafe(FLUSH_BYTES);
      let have = 0;
      let start = 0;
      /** File offset of buf[0]. */
      let base = 0;
      let nextRelation = 0;
      for (;;) {
        if (have - start < 4 || have - start < 4 + buf.readUInt32BE(start)) {
          // Need more bytes: keep the unread tail and read the next block after it.
          const tail = have - start;
          const need = tail >= 4 ? 4 + buf.readUInt32BE(start) : 4;
          const next = need > buf.length ? Buffer.allocUnsafe(need * 2) : buf;
          buf.copy(next, 0, start, have);
          buf = next;
          base += start;
          start = 0;
          have = tail;
          const n = readSync(s.fd, buf, have, buf.length - have, pos);
          if (n === 0) break;
          pos += n;
          have += n;
          continue;
        }
        while (nextRelation < s.relations.length && (s.relations[nextRelation] as { offset: number }).offset <= base + start) {
          yield (s.relations[nextRelation++] as { record: Buffer }).record;
        }
        const len = buf.readUInt32BE(start);
        yield buf.subarray(start + 4, start + 4 + len);
        start += 4 + len;
      }
      while (nextRelation < s.relations.length) yield (s.relations[nextRelation++] as { record: Buffer }).record;
    } finally {
      this.discard(topXid);
    }
  }

  /** Transactions currently buffered (for tests and status). */
  get openTransactions(): number {
    return this.spills.size;
  }

  close(): void {
    for (const xid of [...this.spills.keys()]) this.discard(xid);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private flush(s: Spill): void {
    if (s.pendingBytes === 0) return;
    const block = Buffer.concat(s.pending, s.pendingBytes);
    let off = 0;
    while (off < block.length) off += writeSync(s.fd, block, off, block.length - off, s.size + off);
    s.size += block.length;
    s.pending = [];
    s.pendingBytes = 0;
  }

  private discard(topXid: number): void {
    const s = this.spills.get(topXid);
    if (!s) return;
    this.spills.delete(topXid);
    closeSync(s.fd);
    rmSync(s.file, { force: true });
  }
}
