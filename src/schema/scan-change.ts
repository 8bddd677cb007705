import type { ChangeEvent, ChangeOp, Row } from '../core/change.js';
import { lazyRow, type RowShape } from '../core/lazy-row.js';

/*
 * The change event JSON exactly as capture writes it (ChangeJsonWriter), scanned without
 * JSON.parse, its payload kept as text (a lazy row, see core/lazy-row.ts):
 *
 *   event   = '{"source":' str ',"schema":' str ',"table":' str ',"op":' str ',"lsn":' str
 *             ',"commit_lsn":' str ',"xid":' int ',"seq":' int ',"commit_ts":' str
 *             ',"key":' row ',"payload":' ( row | 'null' ) ',"_version":' str
 *             ',"_schema_version":' int [ ',"tx_last":true' [ ',"tx_prev":' str ] ] '}'
 *   row     = '{' [ str ':' ( str | 'null' ) *( ',' str ':' ( str | 'null' ) ) ] '}'
 *   str     = '"' *( any character but '"', '\' and U+0000..U+001F ) '"'
 *   int     = '0' | [1-9] *14[0-9]                  ; a safe integer
 *
 * No whitespace, no escapes: whatever else (another producer's spelling, an escaped
 * character, a number or nested value in a row, a duplicate column, a column named
 * __proto__, other members) is left to JSON.parse. Every text this grammar accepts is JSON
 * whose JSON.parse result equals the scanned event, member order included. Without escapes
 * a value's characters are the value, and none needs escaping in COPY text format either.
 */

/** A backslash (an escape follows) or a control character (JSON allows them only as whitespace). */
// eslint-disable-next-line no-control-regex -- the control characters are what this looks for
const NOT_PLAIN = /[\\\u0000-\u001f]/;

const REGEX_SPECIAL = /[.*+?^${}()|[\]\\]/g;

const QUOTE = 0x22;
const COMMA = 0x2c;
const CLOSE = 0x7d;

/** Scans change events, reusing the row shape and envelope strings of the previous one. */
export class ChangeScanner {
  private text = '';
  private pos = 0;
  private shape: RowShape | undefined;
  /** Matches a payload of `shape` exactly (sticky); strings are plain here (NOT_PLAIN). */
  private shapePattern: RegExp | undefined;
  private keyShape: RowShape | undefined;
  private last: string[] = [];

  /** The event `text` holds, or undefined when it is not in the grammar above. */
  scan(text: string): ChangeEvent | undefined {
    if (NOT_PLAIN.test(text)) return undefined;
    this.text = text;
    this.pos = 0;
    if (!this.literal('{"source":')) return undefined;
    const source = this.str(0);
    if (source === undefined || !this.literal(',"schema":')) return undefined;
    const schema = this.str(1);
    if (schema === undefined || !this.literal(',"table":')) return undefined;
    const table = this.str(2);
    if (table === undefined || !this.literal(',"op":')) return undefined;
    const op = this.str(3);
    if (op === undefined || !this.literal(',"lsn":')) return undefined;
    const lsn = this.str(-1);
    if (lsn === undefined || !this.literal(',"commit_lsn":')) return undefined;
    const commitLsn = this.str(4);
    if (commitLsn === undefined || !this.literal(',"xid":')) return undefined;
    const xid = this.int();
    if (xid < 0 || !this.literal(',"seq":')) return undefined;
    const seq = this.int();
    if (seq < 0 || !this.literal(',"commit_ts":')) return undefined;
    const commitTs = this.str(5);
    if (commitTs === undefined || !this.literal(',"key":')) return undefined;
    const key = this.key();
    if (key === undefined || !this.literal(',"payload":')) return undefined;
    let payload: Row | null;
    if (this.literal('null')) payload = null;
    else {
      const p = this.payload();
      if (p === undefined) return undefined;
      payload = p;
    }
    if (!this.literal(',"_version":')) return undefined;
    const version = this.str(-1);
    if (version === undefined || !this.literal(',"_schema_version":')) return undefined;
    const schemaVersion = this.int();
    if (schemaVersion < 0) return undefined;
    const e: ChangeEvent = {
      source, schema, table, op: op as ChangeOp, lsn, commit_lsn: commitLsn, xid, seq, commit_ts: commitTs,
      key, payload, _version: version, _schema_version: schemaVersion,
    };
    if (this.literal(',"tx_last":true')) {
      e.tx_last = true;
      if (this.literal(',"tx_prev":')) {
        const prev = this.str(-1);
        if (prev === undefined) return undefined;
        e.tx_prev = prev;
      }
    }
    return this.literal('}') && this.pos === text.length ? e : undefined;
  }

  private literal(s: string): boolean {
    // A loop the compiler inlines: startsWith(s, pos) was a fifth of the scan's time.
    const t = this.text;
    const p = this.pos;
    const n = s.length;
    for (let i = 0; i < n; i++) if (t.charCodeAt(p + i) !== s.charCodeAt(i)) return false;
    this.pos = p + n;
    return true;
  }

  /** A string; `slot` >= 0: the same string object as last time when equal (fewer copies of source, table, ...). */
  private str(slot: number): string | undefined {
    const t = this.text;
    if (t.charCodeAt(this.pos) !== QUOTE) return undefined;
    const start = this.pos + 1;
    const end = t.indexOf('"', start);
    if (end < 0) return undefined;
    this.pos = end + 1;
    if (slot < 0) return t.slice(start, end);
    const prev = this.last[slot];
    if (prev !== undefined && prev.length === end - start && t.startsWith(prev, start)) return prev;
    return (this.last[slot] = t.slice(start, end));
  }

  private int(): number {
    const t = this.text;
    let p = this.pos;
    let n = 0;
    let c = t.charCodeAt(p);
    if (c === 0x30) {
      this.pos = p + 1;
      c = t.charCodeAt(this.pos);
      return c >= 0x30 && c <= 0x39 ? -1 : 0;
    }
    const start = p;
    while (c >= 0x30 && c <= 0x39) {
      n = n * 10 + (c - 0x30);
      c = t.charCodeAt(++p);
    }
    if (p === start || p - start > 15) return -1;
    this.pos = p;
    return n;
  }

  /** The key object: a row of few columns, built as JSON.parse builds it. */
  private key(): Row | undefined {
    const values: Row = {};
    const shape = this.row(this.keyShape, values);
    if (shape === undefined) return undefined;
    this.keyShape = shape;
    return values;
  }

  /**
   * The payload, as a lazy row over its text. A payload of the previous one's columns is
   * matched whole by that shape's regular expression (one native call; walking its members
   * one by one was the scan's largest part); any other is walked, and its shape kept.
   */
  private payload(): Row | undefined {
    const start = this.pos;
    const same = this.shapePattern;
    if (same && this.shape) {
      same.lastIndex = start;
      if (same.test(this.text)) {
        this.pos = same.lastIndex;
        return lazyRow(this.text.slice(start, this.pos), this.shape);
      }
    }
    const shape = this.row(this.shape, undefined);
    if (shape === undefined) return undefined;
    if (shape !== this.shape) {
      this.shape = shape;
      this.shapePattern = new RegExp(`\\{${shape.columns.map((c) => `"${c.replace(REGEX_SPECIAL, '\\$&')}":(?:"[^"]*"|null)`).join(',')}\\}`, 'y');
    }
    return lazyRow(this.text.slice(start, this.pos), shape);
  }

  /**
   * The row at `pos`: its shape (`previous` when the columns are the same); with `values`, its
   * members are set there (as JSON.parse sets them).
   */
  private row(previous: RowShape | undefined, values: Row | undefined): RowShape | undefined {
    const t = this.text;
    if (t.charCodeAt(this.pos) !== 0x7b) return undefined;
    this.pos++;
    let columns: string[] | undefined;
    const known = previous?.columns;
    let i = 0;
    if (t.charCodeAt(this.pos) === CLOSE) {
      this.pos++;
    } else {
      for (;;) {
        if (t.charCodeAt(this.pos) !== QUOTE) return undefined;
        const nameStart = this.pos + 1;
        const nameEnd = t.indexOf('"', nameStart);
        if (nameEnd < 0 || t.charCodeAt(nameEnd + 1) !== 0x3a) return undefined;
        let name: string;
        const same = known?.[i];
        if (columns === undefined && same !== undefined && same.length === nameEnd - nameStart && t.startsWith(same, nameStart)) name = same;
        else {
          columns ??= (known ?? []).slice(0, i);
          name = t.slice(nameStart, nameEnd);
        }
        columns?.push(name);
        this.pos = nameEnd + 2;
        if (t.charCodeAt(this.pos) === QUOTE) {
          const end = t.indexOf('"', this.pos + 1);
          if (end < 0) return undefined;
          if (values) values[name] = t.slice(this.pos + 1, end);
          this.pos = end + 1;
        } else if (t.startsWith('null', this.pos)) {
          if (values) values[name] = null;
          this.pos += 4;
        } else return undefined;
        i++;
        const c = t.charCodeAt(this.pos++);
        if (c === CLOSE) break;
        if (c !== COMMA) return undefined;
      }
    }
    if (columns === undefined && known !== undefined && known.length === i && previous) return previous;
    columns ??= (known ?? []).slice(0, i);
    // JSON.parse keeps one member per name (and makes __proto__ an own one): left to it.
    if (new Set(columns).size !== columns.length || columns.includes('__proto__')) return undefined;
    return { columns, key: columns.join('\u0000') };
  }
}
