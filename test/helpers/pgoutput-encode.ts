/**
 * pgoutput messages and XLogData frames built by hand, for driving capture without a server
 * (the grammar is in src/pgoutput/decoder.ts). Tuples are text values, null, or undefined
 * for an unchanged TOASTed value.
 */
export type Tuple = (string | null | undefined)[];

export interface RelationSpec {
  id: number;
  schema: string;
  name: string;
  identity?: 'd' | 'f' | 'i' | 'n';
  columns: { name: string; key?: boolean; typeOid?: number }[];
}

class Writer {
  private readonly parts: Buffer[] = [];
  u8(v: number): this {
    this.parts.push(Buffer.from([v]));
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v);
    this.parts.push(b);
    return this;
  }
  i16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeInt16BE(v);
    this.parts.push(b);
    return this;
  }
  u64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(v);
    this.parts.push(b);
    return this;
  }
  cstring(s: string): this {
    this.parts.push(Buffer.from(`${s}\u0000`, 'utf8'));
    return this;
  }
  bytes(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
  tuple(t: Tuple): this {
    this.i16(t.length);
    for (const v of t) {
      if (v === null) this.u8(0x6e);
      else if (v === undefined) this.u8(0x75);
      else {
        const b = Buffer.from(v, 'utf8');
        this.u8(0x74).u32(b.length).bytes(b);
      }
    }
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** `xid` is the streamed transaction's (sub)xid inside a stream block, undefined outside. */
const withXid = (w: Writer, xid: number | undefined): Writer => (xid === undefined ? w : w.u32(xid));

export const pgo = {
  begin: (finalLsn: bigint, xid: number): Buffer => new Writer().u8(0x42).u64(finalLsn).u64(0n).u32(xid).done(),
  commit: (commitLsn: bigint, endLsn: bigint): Buffer => new Writer().u8(0x43).u8(0).u64(commitLsn).u64(endLsn).u64(0n).done(),
  relation: (r: RelationSpec, xid?: number): Buffer => {
    const w = withXid(new Writer().u8(0x52), xid).u32(r.id).cstring(r.schema).cstring(r.name).u8((r.identity ?? 'd').charCodeAt(0)).i16(r.columns.length);
    for (const c of r.columns) w.u8(c.key ? 1 : 0).cstring(c.name).u32(c.typeOid ?? 25).u32(0xffffffff);
    return w.done();
  },
  insert: (rel: number, t: Tuple, xid?: number): Buffer => withXid(new Writer().u8(0x49), xid).u32(rel).u8(0x4e).tuple(t).done(),
  update: (rel: number, t: Tuple, old?: { kind: 'K' | 'O'; tuple: Tuple }, xid?: number): Buffer => {
    const w = withXid(new Writer().u8(0x55), xid).u32(rel);
    if (old) w.u8(old.kind.charCodeAt(0)).tuple(old.tuple);
    return w.u8(0x4e).tuple(t).done();
  },
  delete: (rel: number, kind: 'K' | 'O', t: Tuple, xid?: number): Buffer => withXid(new Writer().u8(0x44), xid).u32(rel).u8(kind.charCodeAt(0)).tuple(t).done(),
  message: (prefix: string, content: string, transactional: boolean, lsn: bigint, xid?: number): Buffer => {
    const b = Buffer.from(content, 'utf8');
    return withXid(new Writer().u8(0x4d), xid).u8(transactional ? 1 : 0).u64(lsn).cstring(prefix).u32(b.length).bytes(b).done();
  },
  origin: (name: string, lsn = 0n): Buffer => new Writer().u8(0x4f).u64(lsn).cstring(name).done(),
  streamStart: (xid: number, first: boolean): Buffer => new Writer().u8(0x53).u32(xid).u8(first ? 1 : 0).done(),
  streamStop: (): Buffer => new Writer().u8(0x45).done(),
  streamCommit: (xid: number, commitLsn: bigint, endLsn: bigint): Buffer => new Writer().u8(0x63).u32(xid).u8(0).u64(commitLsn).u64(endLsn).u64(0n).done(),
  streamAbort: (xid: number, subXid: number): Buffer => new Writer().u8(0x41).u32(xid).u32(subXid).done(),
};

/** An XLogData frame carrying `message`, as the replication connection delivers it. */
export function xlog(dataStart: bigint, message: Buffer): Buffer {
  return Buffer.concat([new Writer().u8(0x77).u64(dataStart).u64(dataStart).u64(0n).done(), message]);
}
