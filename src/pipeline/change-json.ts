import type { ChangeEvent, Row } from '../core/change.js';

/** The members every change event starts with, in the order ChangeBuilder creates them. */
const BASE_KEYS = ['source', 'schema', 'table', 'op', 'lsn', 'commit_lsn', 'xid', 'seq', 'commit_ts', 'key', 'payload', '_version', '_schema_version'] as const;

const PAYLOAD = Buffer.from(',"payload":');
const VERSION = Buffer.from(',"_version":');
const SCHEMA_VERSION = Buffer.from(',"_schema_version":');
const NULL = Buffer.from('null');
const EMPTY_ROW = Buffer.from('{}');
const CLOSE = Buffer.from('}');

/** A row image's members in one order, and the bytes before each value: `{"id":`, `,"name":`, ... */
interface RowLayout {
  names: readonly string[];
  prefixes: readonly Buffer[];
}

/** Row layouts remembered at most (a capture meets a few per table: key, payload, TOAST gaps). */
const MAX_LAYOUTS = 4096;

/** Which remembered layout a row is tried against first. */
const KEY = 0;
const PAYLOAD_ROW = 1;

/**
 * Writes change events as JSON, one after the other, into one buffer (a batch's record
 * values): the bytes of `Buffer.from(JSON.stringify(e))`, exactly, without building the
 * string first. Capture serializes every change and, in Node 20, `JSON.stringify` plus the
 * UTF-8 copy was its largest single cost (about a quarter of its CPU time).
 *
 * The usual event (the members ChangeBuilder creates, in that order, with their usual
 * types) is written member by member, printable ASCII directly; a value with a character JSON
 * escapes or a non-ASCII one, any member after the usual ones, and any event of another shape
 * go through `JSON.stringify` itself, so the bytes never differ.
 *
 * What repeats from one change to the next is written from bytes kept since it was last
 * made: the members before `lsn` (same source, table and operation), those around `seq`
 * (same transaction), and the member names of a row image (same table); so a change costs
 * the copy of its values, not the escaping of its names.
 */
export class ChangeJsonWriter {
  private buf: Buffer;
  private pos = 0;
  /** `{"source":…,"schema":…,"table":…,"op":…,"lsn":` for these four. */
  private head: Buffer = EMPTY_ROW;
  private headSource: string | undefined;
  private headSchema: string | undefined;
  private headTable: string | undefined;
  private headOp: string | undefined;
  /** `,"commit_lsn":…,"xid":…,"seq":` for this transaction. */
  private txn: Buffer = EMPTY_ROW;
  private txnCommitLsn: string | undefined;
  private txnXid = Number.NaN;
  /** `,"commit_ts":…,"key":` for this commit time. */
  private commitTs: Buffer = EMPTY_ROW;
  private commitTsText: string | undefined;
  /** The layout the last key (KEY) and payload (PAYLOAD_ROW) had. */
  private readonly lastLayout: (RowLayout | undefined)[] = [undefined, undefined];
  /** Every layout met, by the JSON of its member names. */
  private readonly layouts = new Map<string, RowLayout>();

  constructor(expectedBytes: number) {
    this.buf = Buffer.allocUnsafe(Math.max(1024, expectedBytes));
  }

  /** Appends the JSON of `e`; returns where it ends (it starts where the previous one ended). */
  write(e: ChangeEvent): number {
    const extra = usualShape(e);
    if (extra < 0) {
      this.utf8(JSON.stringify(e));
      return this.pos;
    }
    if (e.source !== this.headSource || e.schema !== this.headSchema || e.table !== this.headTable || e.op !== this.headOp) this.newHead(e);
    this.fragment(this.head);
    this.string(e.lsn);
    if (e.commit_lsn !== this.txnCommitLsn || e.xid !== this.txnXid) this.newTransaction(e);
    this.fragment(this.txn);
    this.integer(e.seq);
    if (e.commit_ts !== this.commitTsText) this.newCommitTs(e);
    this.fragment(this.commitTs);
    this.row(e.key, KEY);
    this.fragment(PAYLOAD);
    if (e.payload === null) this.fragment(NULL);
    else this.row(e.payload, PAYLOAD_ROW);
    this.fragment(VERSION);
    this.string(e._version);
    this.fragment(SCHEMA_VERSION);
    this.integer(e._schema_version);
    // The optional members (before, unchanged, tx_last, ...), in the order they were set.
    if (extra > 0) {
      const keys = Object.keys(e);
      for (let i = BASE_KEYS.length; i < keys.length; i++) {
        const k = keys[i] as string;
        const text = JSON.stringify((e as unknown as Record<string, unknown>)[k]);
        // JSON.stringify leaves out a member whose value it cannot represent (undefined).
        if (text === undefined) continue;
        this.ascii(',');
        this.string(k);
        this.ascii(':');
        this.utf8(text);
      }
    }
    this.fragment(CLOSE);
    return this.pos;
  }

  /** Everything written; valid until the next write. */
  get bytes(): Buffer {
    return this.buf;
  }

  private newHead(e: ChangeEvent): void {
    this.head = Buffer.from(`{"source":${JSON.stringify(e.source)},"schema":${JSON.stringify(e.schema)},"table":${JSON.stringify(e.table)},"op":${JSON.stringify(e.op)},"lsn":`);
    this.headSource = e.source;
    this.headSchema = e.schema;
    this.headTable = e.table;
    this.headOp = e.op;
  }

  private newTransaction(e: ChangeEvent): void {
    this.txn = Buffer.from(`,"commit_lsn":${JSON.stringify(e.commit_lsn)},"xid":${String(e.xid)},"seq":`);
    this.txnCommitLsn = e.commit_lsn;
    this.txnXid = e.xid;
  }

  private newCommitTs(e: ChangeEvent): void {
    this.commitTs = Buffer.from(`,"commit_ts":${JSON.stringify(e.commit_ts)},"key":`);
    this.commitTsText = e.commit_ts;
  }

  /** A row image (column → text or null), in its key order. */
  private row(o: Readonly<Row>, which: number): void {
    const last = this.lastLayout[which];
    if (last !== undefined && this.rowAs(o, last)) return;
    const keys = Object.keys(o);
    if (textValues(o, keys)) {
      const layout = this.layoutOf(keys);
      this.lastLayout[which] = layout;
      if (this.rowAs(o, layout)) return;
    }
    this.anyRow(o, keys);
  }

  /**
   * Writes `o` with `layout`'s member names when it has those (or the first of them), in that
   * order, and only text and null values; else writes nothing and returns false.
   */
  private rowAs(o: Readonly<Row>, layout: RowLayout): boolean {
    const start = this.pos;
    const names = layout.names;
    const prefixes = layout.prefixes;
    let i = 0;
    // for-in, not Object.keys: no array per row. `o` is a plain object (usualShape), whose
    // own members for-in lists in Object.keys' order; anything else ends in a mismatch.
    for (const k in o) {
      const v = o[k];
      if (k !== names[i] || (typeof v !== 'string' && v !== null)) {
        this.pos = start;
        return false;
      }
      this.fragment(prefixes[i] as Buffer);
      if (v === null) this.fragment(NULL);
      else this.string(v);
      i++;
    }
    // Fewer members than the layout (a leading part of it) is the same JSON: no mismatch.
    this.fragment(i === 0 ? EMPTY_ROW : CLOSE);
    return true;
  }

  private layoutOf(keys: string[]): RowLayout {
    const id = JSON.stringify(keys);
    let layout = this.layouts.get(id);
    if (layout === undefined) {
      if (this.layouts.size >= MAX_LAYOUTS) this.layouts.clear();
      layout = { names: keys, prefixes: keys.map((k, i) => Buffer.from(`${i === 0 ? '{' : ','}${JSON.stringify(k)}:`)) };
      this.layouts.set(id, layout);
    }
    return layout;
  }

  /** A row image with other values too (never made by capture): each value as JSON.stringify writes it. */
  private anyRow(o: Readonly<Record<string, unknown>>, keys: readonly string[]): void {
    let first = true;
    this.ascii('{');
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i] as string;
      const v = o[k];
      if (typeof v !== 'string' && v !== null) {
        const text = JSON.stringify(v);
        if (text === undefined) continue;
        if (!first) this.ascii(',');
        this.string(k);
        this.ascii(':');
        this.utf8(text);
      } else {
        if (!first) this.ascii(',');
        this.string(k);
        this.ascii(':');
        if (v === null) this.ascii('null');
        else this.string(v);
      }
      first = false;
    }
    this.ascii('}');
  }

  /** `s` as a JSON string: printable ASCII without `"` or `\` as is, anything else by JSON.stringify. */
  private string(s: string): void {
    const n = s.length;
    this.ensure(n + 2);
    const b = this.buf;
    const start = this.pos;
    let p = start;
    b[p++] = 0x22;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) {
        this.pos = start;
        this.utf8(JSON.stringify(s));
        return;
      }
      b[p++] = c;
    }
    b[p++] = 0x22;
    this.pos = p;
  }

  /** A safe integer as JSON writes it (-0 as 0). */
  private integer(n: number): void {
    if (!(n >= 0 && n <= 0x7fffffff)) {
      this.ascii(String(n));
      return;
    }
    let digits = 1;
    for (let v = n; v >= 10; v = Math.floor(v / 10)) digits++;
    this.ensure(digits);
    const b = this.buf;
    let v = n | 0;
    for (let p = this.pos + digits - 1; p >= this.pos; p--) {
      b[p] = 0x30 + (v % 10);
      v = (v / 10) | 0;
    }
    this.pos += digits;
  }

  /**
   * Bytes kept from an earlier write: short ones copied here, longer ones by
   * TypedArray.prototype.set (a builtin; Buffer.copy adds two JavaScript layers).
   */
  private fragment(f: Buffer): void {
    const n = f.length;
    this.ensure(n);
    if (n > 24) {
      this.buf.set(f, this.pos);
      this.pos += n;
      return;
    }
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) b[p++] = f[i] as number;
    this.pos = p;
  }

  /** Text known to be ASCII. */
  private ascii(s: string): void {
    const n = s.length;
    this.ensure(n);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) b[p++] = s.charCodeAt(i);
    this.pos = p;
  }

  private utf8(s: string): void {
    // A UTF-16 code unit takes at most 3 UTF-8 bytes.
    this.ensure(s.length * 3);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }
}

/**
 * -1 unless `e` has the members ChangeBuilder creates, in its order, with the types written
 * directly above; else how many members follow them.
 */
function usualShape(e: ChangeEvent): number {
  // for-in, not Object.keys: no array per event (see rowAs).
  let n = 0;
  for (const k in e) {
    if (n < BASE_KEYS.length && k !== BASE_KEYS[n]) return -1;
    n++;
  }
  if (n < BASE_KEYS.length) return -1;
  const usual =
    typeof e.source === 'string' && typeof e.schema === 'string' && typeof e.table === 'string' && typeof e.op === 'string' &&
    typeof e.lsn === 'string' && typeof e.commit_lsn === 'string' && typeof e.commit_ts === 'string' && typeof e._version === 'string' &&
    Number.isSafeInteger(e.xid) && Number.isSafeInteger(e.seq) && Number.isSafeInteger(e._schema_version) &&
    isPlainRow(e.key) && (e.payload === null || isPlainRow(e.payload));
  return usual ? n - BASE_KEYS.length : -1;
}

function isPlainRow(v: unknown): boolean {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype && !('toJSON' in v);
}

/** Every value text or null. */
function textValues(o: Readonly<Row>, keys: readonly string[]): boolean {
  for (const k of keys) {
    const v = o[k];
    if (typeof v !== 'string' && v !== null) return false;
  }
  return true;
}
