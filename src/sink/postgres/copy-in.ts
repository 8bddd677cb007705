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

/** CopyData messages are cut at about this many characters. */
const CHUNK_CHARS = 1 << 16;
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

/** COPY text format built row by row, cut into CopyData-sized buffers on row boundaries. */
export class CopyText {
  private readonly done: Buffer[] = [];
  private text = '';

  /** Appends a row: its fields in COPY text format, joined by tabs. */
  row(line: string): void {
    this.text += `${line}\n`;
    if (this.text.length >= CHUNK_CHARS) {
      this.done.push(Buffer.from(this.text, 'utf8'));
      this.text = '';
    }
  }

  chunks(): Buffer[] {
    if (this.text.length > 0) this.done.push(Buffer.from(this.text, 'utf8'));
    this.text = '';
    return this.done;
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
