import type { ColumnType } from './schema-version.js';
import type { Lsn } from './lsn.js';

/**
 * What the snapshot reader (source/snapshot-runner.ts) and capture (pipeline/) exchange about
 * snapshot chunks: watermark messages in the WAL, the MVCC snapshot rows were read in, the
 * chunks and keyless tables read, and what capture made of them. Pure types and parsing.
 */

/** Prefix of the snapshot watermark messages (see source/snapshot-runner.ts). */
export const SNAPSHOT_PREFIX = 'syncline.snapshot';

/**
 * The MVCC snapshot a chunk was read in (`pg_current_snapshot()`), xids cut to the 32 bits
 * pgoutput sends: a transaction is visible to it when it is older than `xmin`, or older than
 * `xmax` and not in `xip` (still running when the snapshot was taken).
 */
export interface ReadSnapshot {
  xmin: number;
  xmax: number;
  xip: readonly number[];
}

/** Parses `pg_current_snapshot()::text` (`xmin:xmax:xip,...`, 64-bit xids). */
export function parseReadSnapshot(text: string): ReadSnapshot {
  const [xmin, xmax, xip] = text.split(':');
  if (xmin === undefined || xmax === undefined || xip === undefined) throw new Error(`not a pg_snapshot: ${text}`);
  const low32 = (v: string): number => Number(BigInt(v) & 0xffffffffn);
  return { xmin: low32(xmin), xmax: low32(xmax), xip: xip === '' ? [] : xip.split(',').map(low32) };
}

/** TransactionIdPrecedes for normal xids: modulo-2^32 comparison. */
function precedes(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function visibleIn(s: ReadSnapshot, xid: number): boolean {
  if (precedes(xid, s.xmin)) return true;
  return precedes(xid, s.xmax) && !s.xip.includes(xid);
}

/** Rows of one snapshot chunk, waiting for their high watermark. */
export interface WindowChunk {
  columns: readonly string[];
  keyColumns: readonly string[];
  rows: readonly (string | null)[][];
  /** The snapshot the rows were read in. */
  snapshot: ReadSnapshot;
}

/** A keyed chunk as a SnapshotRunner hands it to capture: its rows wait for their high watermark. */
export interface SnapshotChunk extends WindowChunk {
  schema: string;
  table: string;
  /** The table's definition when the chunk was read (its `_schema_version`). */
  columnTypes?: readonly ColumnType[];
}

/** A keyless table read whole in one snapshot (see SnapshotRunner). */
export interface KeylessSnapshot {
  schema: string;
  table: string;
  columns: readonly string[];
  columnTypes?: readonly ColumnType[];
}

/**
 * Where a keyless table's snapshot was cut: its cut message's token and LSN, and the xid of
 * the transaction that wrote it (see SnapshotRunner).
 */
export interface KeylessCut {
  token: string;
  lsn: Lsn;
  xid: number;
}

/** Content of a snapshot watermark message. */
export interface WatermarkMessage {
  token: string;
  /** low/high: a keyed chunk's window; cut: where a keyless table's snapshot stands. */
  mark: 'low' | 'high' | 'cut';
  /** `schema.table` of the chunk. */
  table: string;
}

/** What became of a chunk: durably in the stream, or to be read again (see SnapshotWindows). */
export type ChunkResult = 'published' | 'retry';

/** The part of Capture the runner needs. */
export interface ChunkSink {
  /** The tables with an unfinished snapshot job, as the runner last read them. */
  setSnapshotting(tables: ReadonlySet<string>): void;
  /** The chunk's low watermark is about to be written: capture opens a window for it (and none for a token it was not told of). */
  chunkStarting(token: string): void;
  registerChunk(token: string, chunk: SnapshotChunk): void;
  chunkPublished(token: string): Promise<ChunkResult>;
  /**
   * The chunk's attempt failed after its low watermark may have been written (its reader's
   * connection ended, a query failed): no high watermark will close its window.
   */
  chunkAbandoned(token: string): void;
  /** A keyless table's snapshot was cut at `at` (its cut message written, not yet committed). */
  keylessCut(spec: KeylessSnapshot, at: KeylessCut): void;
  keylessRows(token: string, rows: readonly (string | null)[][]): Promise<void>;
  keylessDone(token: string, published?: boolean): Promise<void>;
  /** A keyless table whose snapshot was running when capture last stopped (see CaptureSnapshots). */
  keylessInterrupted(table: string): void;
  /**
   * The table (`schema.table`) has a primary key: its job reads it by key, and never cuts,
   * so a keyless snapshot of it that was interrupted holds its changes no longer.
   */
  keyed(table: string): void;
}
