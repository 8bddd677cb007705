import type pg from 'pg';

/*
 * COPY ... FROM STDIN on a node-postgres client, without pg-copy-streams: a Submittable
 * (the same hook pg-cursor uses) that answers the server's CopyInResponse with the rows.
 *
 *   F: Query("COPY t (...) FROM STDIN")
 *   B: CopyInResponse
 *   F: CopyData* CopyDone            (text format: fields split by \t, rows end with \n, NULL is \N)
 *   B: CommandComplete("COPY n") | ErrorResponse
 *   B: ReadyForQuery
 */

/** The node-postgres connection methods COPY needs (present since pg 8; not in its typings). */
interface CopyConnection {
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
}

/** CopyData messages are cut at about this many bytes. */
const CHUNK_BYTES = 1 << 16;
const NEEDS_ESCAPE = /[\\\t\n\r]/;
const ESCAPES = /[\\\t\n\r]/g;
const ESCAPED: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** One field in COPY text format. */
export function copyField(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return '\\N';
  if (typeof value === 'number') return String(value);
  return NEEDS_ESCAPE.test(value) ? value.replace(ESCAPES, (ch) => ESCAPED[ch] as string) : value;
}

/**
 * COPY text format of `rowCount` rows given column-major (`columns[j][i]` is row i's field
 * j), as CopyData-sized buffers.
 */
export function copyTextChunks(columns: readonly (readonly (string | number | null | undefined)[])[], rowCount: number): Buffer[] {
  const out = new CopyText();
  const last = columns.length - 1;
  for (let i = 0; i < rowCount; i++) {
    let line = '';
    for (let j = 0; j <= last; j++) line += copyField((columns[j] as readonly (string | number | null | undefined)[])[i]) + (j === last ? '' : '\t');
    out.row(line);
  }
  return out.chunks();
}

/**
 * COPY text format written row by row straight into CopyData-sized buffers, cut on row
 * boundaries (building it as one string first allocated each byte three times over: a
 * batch's rows as parts, the joined text, its UTF-8 copy).
 */
export class CopyText {
  private readonly done: Buffer[] = [];
  private buf = Buffer.allocUnsafe(CHUNK_BYTES);
  private pos = 0;
  private rowStart = 0;

  /** Appends a row: its fields in COPY text format, joined by tabs. */
  row(line: string): void {
    this.text(line);
    this.text('\n');
    this.endRow();
  }

  /** Appends text that is COPY text format already (fields, tabs) to the current row. */
  text(s: string): void {
    // A UTF-16 code unit takes at most 3 UTF-8 bytes.
    this.ensure(s.length * 3);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  /**
   * Appends the values of `json`, a JSON object of string or null values without whitespace
   * or escapes (a lazy row's text, see core/lazy-row.ts), as COPY fields joined by tabs:
   * written as it is, then compacted in place (names, quotes and separators out, null as \N),
   * so the values are never JS strings. Without escapes no value needs escaping in COPY.
   */
  jsonValues(json: string): void {
    this.ensure(json.length * 3);
    const b = this.buf;
    const start = this.pos;
    const end = start + b.write(json, start, 'utf8');
    // `r` reads, `w` writes (never ahead of `r`): at each member's opening quote.
    let w = start;
    let first = true;
    for (let r = start + 1; r < end - 1; r++) {
      for (r++; b[r] !== 0x22; r++); // the name
      r += 2; // its closing quote and the colon
      if (first) first = false;
      else b[w++] = 0x09;
      if (b[r] === 0x22) {
        for (r++; b[r] !== 0x22; r++) b[w++] = b[r] as number;
        r++;
      } else {
        b[w++] = 0x5c; // null: \N
        b[w++] = 0x4e;
        r += 4;
      }
    }
    this.pos = w;
  }

  /** Ends the current row (its text, newline included, was appended). */
  endRow(): void {
    if (this.pos >= CHUNK_BYTES) {
      this.done.push(this.buf.subarray(0, this.pos));
      this.buf = Buffer.allocUnsafe(CHUNK_BYTES);
      this.pos = this.rowStart = 0;
    } else this.rowStart = this.pos;
  }

  chunks(): Buffer[] {
    if (this.pos > 0) this.done.push(this.buf.subarray(0, this.pos));
    this.pos = this.rowStart = 0;
    this.buf = Buffer.allocUnsafe(CHUNK_BYTES);
    return this.done;
  }

  /** Room for `n` more bytes; a row that outgrows the buffer moves to a larger one. */
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const row = this.buf.subarray(this.rowStart, this.pos);
    if (this.rowStart > 0) this.done.push(this.buf.subarray(0, this.rowStart));
    const next = Buffer.allocUnsafe(Math.max(CHUNK_BYTES, row.length + n));
    row.copy(next, 0);
    this.buf = next;
    this.pos = row.length;
    this.rowStart = 0;
  }
}

/**
 * Runs `sql`, a simple query ending in `COPY ... FROM STDIN` (statements before it share the
 * round trip), with `chunks` as the COPY's data; resolves to the rows copied.
 */
export function copyFrom(client: pg.ClientBase, sql: string, chunks: readonly Buffer[]): Promise<number> {
  return new Promise((resolve, reject) => {
    let rows = 0;
    let failure: Error | undefined;
    let settled = false;
    const settle = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve(rows);
    };
    const submittable = {
      submit(connection: pg.Connection): void {
        (connection as unknown as CopyConnection).query(sql);
      },
      handleCopyInResponse(connection: pg.Connection): void {
        const c = connection as unknown as CopyConnection;
        for (const chunk of chunks) c.sendCopyFromChunk(chunk);
        c.endCopyFrom();
      },
      handleCommandComplete(msg: { text?: string }): void {
        // `sql` may run other statements before the COPY (one simple-query round trip).
        const m = /^COPY (\d+)/.exec(msg.text ?? '');
        if (m) rows = Number(m[1]);
      },
      handleError(err: Error): void {
        // The client has already dropped this query; ReadyForQuery follows for the next one.
        failure = err;
        settle(err);
      },
      handleReadyForQuery(): void {
        settle(failure);
      },
      // A COPY FROM never returns rows; these are the other messages the client may route here.
      handleRowDescription(): void {},
      handleDataRow(): void {},
      handleEmptyQuery(): void {},
      handlePortalSuspended(): void {},
      handleCopyData(): void {},
    };
    client.query(submittable);
  });
}
