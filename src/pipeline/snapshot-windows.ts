import { rowKeyOf, tableLabelOf, type ChangeEvent, type Row } from '../core/change.js';
import type { Lsn } from '../core/lsn.js';
import { visibleIn, type ChunkResult, type SnapshotChunk, type WindowChunk } from '../core/snapshot.js';


interface Window {
  table: string;
  /** Where the low watermark was seen. */
  lowLsn: Lsn;
  /** Every change to the table seen since, in stream order. */
  changes: ChangeEvent[];
}

/** How many committed transactions per table `closeWindow` can look back on. */
const RECENT_COMMITS = 4096;

/**
 * DBLog-style snapshot windows made exact with the chunk's MVCC snapshot.
 *
 * A chunk is read between a low watermark L and a high watermark H, in a snapshot S taken
 * after L committed. At H, for every row the chunk read, its final state is the row as S saw
 * it with every change of the window that S did not see applied on top (in stream order: for
 * one row, the changes S saw come first, row locks order them). That row is emitted as a
 * READ versioned at H, so it is complete (no unchanged TOAST gap, F5) and newer than every
 * change before H; a TRUNCATE in the window that S did not see empties the chunk (F4).
 *
 * Everything committed before L must be visible to S. It is not when a transaction's commit
 * record is in the WAL but the transaction has not yet left the procarray (the commit is
 * being flushed, or waits for a synchronous standby): such a transaction is in S's `xip`.
 * A chunk whose `xip` holds a transaction capture saw commit to the table before L is
 * rejected and read again (F6).
 */
export class SnapshotWindows {
  private readonly windows = new Map<string, Window>();
  /** Per table: commit position of recently committed transactions that changed it, by xid. */
  private readonly recent = new Map<string, Map<number, Lsn>>();
  /** Chunks this capture's runner is reading whose low watermark was not seen yet (see `expect`). */
  private readonly expected = new Set<string>();

  get open(): boolean {
    return this.windows.size > 0;
  }

  /** This capture's runner is about to write the low watermark of chunk `token`. */
  expect(token: string): void {
    this.expected.add(token);
  }

  /**
   * A low watermark. Only a chunk this capture's runner announced (`expect`) opens a window:
   * one of an earlier process (read again from the slot after a restart), of another slot's
   * capture (watermarks are messages, which every slot of the database decodes) or of a read
   * that failed may have no high watermark ever, and its window, open for as long as capture
   * ran, kept every later change to the table in memory.
   */
  openWindow(token: string, table: string, lowLsn: Lsn): void {
    if (!this.expected.delete(token)) return;
    this.windows.set(token, { table, lowLsn, changes: [] });
  }

  /** The chunk's read failed: its high watermark never comes. Its window is closed, or never opened. */
  abandon(token: string): void {
    this.expected.delete(token);
    this.windows.delete(token);
  }

  /** A change seen in the stream (not a snapshot row). */
  observe(e: ChangeEvent): void {
    if (this.windows.size === 0) return;
    const table = tableLabelOf(e);
    for (const w of this.windows.values()) if (w.table === table) w.changes.push(e);
  }

  /** A transaction that changed `tables` committed at `lsn`. */
  committed(xid: number, lsn: Lsn, tables: Iterable<string>): void {
    for (const table of tables) {
      let m = this.recent.get(table);
      if (!m) this.recent.set(table, (m = new Map()));
      m.set(xid, lsn);
      if (m.size > RECENT_COMMITS) m.delete(m.keys().next().value as number);
    }
  }

  /**
   * The high watermark of `token`: the rows to emit, in chunk order, or 'retry' when the
   * chunk must be read again; undefined when the window is unknown (opened by an earlier
   * process).
   */
  closeWindow(token: string, chunk: WindowChunk | undefined): Row[] | 'retry' | undefined {
    const w = this.windows.get(token);
    this.windows.delete(token);
    if (!w || !chunk) return undefined;
    const recent = this.recent.get(w.table);
    if (recent) {
      for (const xid of chunk.snapshot.xip) {
        const at = recent.get(xid);
        if (at !== undefined && at < w.lowLsn) return 'retry';
      }
    }
    const finals = new Map<string, Row | null>();
    const order: string[] = [];
    for (const values of chunk.rows) {
      const row: Row = {};
      const key: Row = {};
      for (let i = 0; i < chunk.columns.length; i++) {
        const name = chunk.columns[i] as string;
        row[name] = values[i] ?? null;
        if (chunk.keyColumns.includes(name)) key[name] = row[name] ?? null;
      }
      const k = rowKeyOf({ key });
      finals.set(k, row);
      order.push(k);
    }
    for (const c of w.changes) {
      if (visibleIn(chunk.snapshot, c.xid)) continue;
      if (c.op === 'TRUNCATE') {
        for (const k of order) finals.set(k, null);
        continue;
      }
      const k = rowKeyOf(c);
      if (!finals.has(k)) continue; // not a row of this chunk: the stream carries it
      if (c.op === 'DELETE') finals.set(k, null);
      else finals.set(k, mergeOver(finals.get(k) ?? null, c));
    }
    const out: Row[] = [];
    for (const k of order) {
      const row = finals.get(k);
      if (row) out.push(row);
    }
    return out;
  }
}

/** `c`'s new row over `base`: the columns it did not send keep their values in `base`. */
function mergeOver(base: Row | null, c: ChangeEvent): Row | null {
  if (!c.payload) return base;
  if (!c.unchanged) return { ...c.payload };
  // Without a base, the unchanged values are unknown: leave the row to the stream's change.
  if (!base) return null;
  return { ...base, ...c.payload };
}

/**
 * Capture's side of the snapshot chunks: a chunk is registered by the SnapshotRunner, its
 * window opens at the low watermark and closes at the high one (SnapshotWindows says which
 * rows to emit), and the runner learns the chunk is `published` once the commit of its high
 * watermark's transaction is confirmed, i.e. its rows are durably in the stream.
 */
export class SnapshotChunks {
  readonly windows = new SnapshotWindows();
  private readonly chunks = new Map<string, SnapshotChunk>();
  /** High watermarks seen in the open transaction; published once its commit is confirmed. */
  private watermarksInTxn: string[] = [];
  private readonly waiters: { lsn: Lsn; token: string }[] = [];
  private readonly resolvers = new Map<string, (result: ChunkResult) => void>();

  /** The runner is about to write the chunk's low watermark (see SnapshotWindows.expect). */
  starting(token: string): void {
    this.windows.expect(token);
  }

  register(token: string, chunk: SnapshotChunk): void {
    this.chunks.set(token, chunk);
  }

  /** Resolves once the chunk's rows are durably in the stream, or with 'retry' when they must be read again. */
  published(token: string): Promise<ChunkResult> {
    return new Promise((resolve) => this.resolvers.set(token, resolve));
  }

  /**
   * The chunk's high watermark: its rows to emit now, 'retry' (the runner was told to read it
   * again), or undefined for a watermark of an earlier process (restarted since: the runner
   * re-reads). Call `emitted` once the rows are in the open transaction.
   */
  close(token: string): { chunk: SnapshotChunk; rows: Row[] } | 'retry' | undefined {
    const chunk = this.chunks.get(token);
    this.chunks.delete(token);
    const rows = this.windows.closeWindow(token, chunk);
    if (rows === undefined || !chunk) return undefined;
    if (rows === 'retry') {
      this.resolve(token, 'retry');
      return 'retry';
    }
    return { chunk, rows };
  }

  /** The chunk's read failed before its high watermark (see SnapshotWindows.abandon). */
  abandon(token: string): void {
    this.chunks.delete(token);
    this.resolvers.delete(token);
    this.windows.abandon(token);
  }

  /** The rows of `token` were added to the open transaction. */
  emitted(token: string): void {
    this.watermarksInTxn.push(token);
  }

  /** The open transaction committed, ending at `endLsn`: its chunks are out once that is confirmed. */
  committed(endLsn: Lsn): void {
    for (const token of this.watermarksInTxn) this.waiters.push({ lsn: endLsn, token });
    this.watermarksInTxn = [];
  }

  /** The position confirmed to the source advanced to `lsn`. */
  confirmed(lsn: Lsn): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i] as { lsn: Lsn; token: string };
      if (w.lsn <= lsn) {
        this.waiters.splice(i, 1);
        this.resolve(w.token, 'published');
      }
    }
  }

  private resolve(token: string, result: ChunkResult): void {
    this.resolvers.get(token)?.(result);
    this.resolvers.delete(token);
  }
}
