import type { ChangeEvent } from '../core/change.js';
import type { PipelineEvents } from '../core/events.js';
import type { Lsn } from '../core/lsn.js';
import type { Logger } from '../log/logger.js';
import type { BatchPublisher } from './batch-publisher.js';
import type { ChangeBuilder } from './change-builder.js';
import { KeylessSnapshots } from './keyless-snapshots.js';
import type { ChunkResult, ChunkSink, KeylessCut, KeylessSnapshot, SnapshotChunk, WatermarkMessage } from '../core/snapshot.js';
import { SnapshotChunks } from './snapshot-windows.js';
import type { UnchangedValues } from './unchanged-values.js';

/** What capture lends its snapshot side. */
export interface SnapshotHost {
  readonly builder: ChangeBuilder;
  readonly publisher: BatchPublisher;
  readonly unchanged: UnchangedValues;
  readonly events: PipelineEvents;
  readonly log: Logger;
  /** Publishes what is pending once no asynchronous step runs; resolves once it is durable. */
  flushDurable(): Promise<void>;
  /** A keyless table's hold began, moved or ended (see `mayHold`). */
  holdsChanged(): void;
}

/**
 * Capture's snapshot side: what a SnapshotRunner hands over (keyed chunks and their
 * watermark windows, keyless tables at their cut) turned into events in the stream, in the
 * right place among the changes capture reads from the slot.
 */
export class CaptureSnapshots implements ChunkSink {
  private readonly chunks = new SnapshotChunks();
  private readonly keyless: KeylessSnapshots;
  /** A position reached while some changes are held (keyless snapshot): released with them. */
  private deferredPosition: Lsn | undefined;

  constructor(private readonly host: SnapshotHost) {
    this.keyless = new KeylessSnapshots(host.builder);
  }

  /** The tables with an unfinished snapshot job (SnapshotRunner keeps this current). */
  setSnapshotting(tables: ReadonlySet<string>): void {
    this.host.unchanged.setSnapshotting(tables);
    const released = this.keyless.jobsEnded(tables);
    if (released.length > 0) this.release(released);
    this.host.holdsChanged();
  }

  /**
   * The keyless table `table` had a snapshot running when capture last stopped: its changes
   * are held until the job's next cut (see KeylessSnapshots). Before the first change is read.
   */
  keylessInterrupted(table: string): void {
    this.keyless.interrupted(table);
    this.host.holdsChanged();
  }

  /** The table has a primary key now: an interrupted keyless snapshot of it holds no longer (see KeylessSnapshots.keyed). */
  keyed(table: string): void {
    const released = this.keyless.keyed(table);
    if (released.length > 0) this.release(released);
    this.host.holdsChanged();
  }

  /**
   * A source transaction committed at `commitLsn` that changed `tables` (absent: whichever) may
   * have changes held behind a keyless snapshot (see WholeTransactions).
   */
  mayHold(commitLsn: Lsn, tables?: ReadonlySet<string>): boolean {
    return this.keyless.mayHold(commitLsn, tables);
  }

  /** The keyless tables whose changes are held now. */
  get heldTables(): string[] {
    return this.keyless.heldTables;
  }

  /**
   * Snapshot chunks that a SnapshotRunner has read wait here for their high watermark.
   * `chunkPublished` resolves once the chunk's rows are durably in the stream, or with
   * 'retry' when they must be read again.
   */
  registerChunk(token: string, chunk: SnapshotChunk): void {
    this.chunks.register(token, chunk);
  }

  chunkPublished(token: string): Promise<ChunkResult> {
    return this.chunks.published(token);
  }

  chunkStarting(token: string): void {
    this.chunks.starting(token);
  }

  chunkAbandoned(token: string): void {
    this.chunks.abandon(token);
  }

  /**
   * A keyless table is read whole in one snapshot, cut at `at` (see SnapshotRunner): its
   * reset goes out now, then the rows handed to `keylessRows`; the table's changes committed
   * after the cut are held until `keylessDone`, so that they follow the rows in the stream.
   */
  keylessCut(spec: KeylessSnapshot, at: KeylessCut): void {
    const { reset, released } = this.keyless.cut(spec, at);
    this.host.publisher.add(reset);
    // Counted like the rows and a TRUNCATE: apply counts it applied, and captured_total
    // read one less than applied_total for the table (0 vs 1 for an empty one).
    this.host.events.emit('capture:change', reset);
    // An interrupted snapshot's held changes: committed before the cut, so stale behind it.
    this.release(released);
    this.host.holdsChanged();
  }

  /** Rows of a keyless snapshot; resolves when there is room for more. */
  keylessRows(token: string, rows: readonly (string | null)[][]): Promise<void> {
    const { publisher, events } = this.host;
    const built: ChangeEvent[] = [];
    this.keyless.rows(token, rows, built);
    for (const e of built) {
      publisher.add(e);
      events.emit('capture:change', e);
    }
    publisher.schedule();
    return publisher.windowOpen();
  }

  /**
   * A keyless snapshot's rows are all handed over: resolves once they are durable; the held
   * changes are released behind them. With `published` false (the read failed, capture is
   * stopping) the table's changes stay held until the job's next cut: the job reads the
   * table again, and its reset makes them stale.
   */
  keylessDone(token: string, published = true): Promise<void> {
    const released = this.keyless.finish(token, published);
    const durable = published ? this.host.flushDurable() : Promise.resolve();
    if (released) this.release(released);
    this.host.holdsChanged();
    return durable;
  }

  /** Held changes go out (behind what is pending); the position follows once nothing is held. */
  private release(changes: readonly ChangeEvent[]): void {
    const { publisher } = this.host;
    for (const e of changes) publisher.add(e);
    if (!this.keyless.holding && this.deferredPosition !== undefined) {
      publisher.reach(this.deferredPosition);
      this.deferredPosition = undefined;
    }
    publisher.schedule();
  }

  /** A change read from the slot: seen by the open windows of its table. */
  observe(e: ChangeEvent): void {
    if (this.chunks.windows.open) this.chunks.windows.observe(e);
  }

  /** A change ready to go: pending, or held behind a keyless snapshot of its table. */
  route(e: ChangeEvent): void {
    if (!this.keyless.hold(e)) this.host.publisher.add(e);
  }

  /** Everything up to `lsn` has been seen: the next batch may confirm it, unless changes are held. */
  reach(lsn: Lsn): void {
    if (this.keyless.holding) this.deferredPosition = lsn;
    else this.host.publisher.reach(lsn);
  }

  /**
   * Transaction `xid`, which changed `tables`, committed, ending at `endLsn` (its changes are
   * with the publisher): the position may pass it, and its chunks are out once it is confirmed.
   */
  committed(xid: number | undefined, endLsn: Lsn, tables: ReadonlySet<string>): void {
    if (xid !== undefined && tables.size > 0) this.chunks.windows.committed(xid, endLsn, tables);
    this.reach(endLsn);
    this.chunks.committed(endLsn);
  }

  /** The position confirmed to the source advanced to `lsn`. */
  confirmed(lsn: Lsn): void {
    this.chunks.confirmed(lsn);
  }

  /** A snapshot watermark message at `lsn`. */
  watermark(content: Buffer, lsn: Lsn): void {
    const { builder, publisher, events } = this.host;
    let w: WatermarkMessage;
    try {
      w = JSON.parse(content.toString('utf8')) as WatermarkMessage;
    } catch {
      return;
    }
    if (w.mark === 'low') {
      this.chunks.windows.openWindow(w.token, w.table, lsn);
      return;
    }
    // A keyless table's cut: its reset went out when the runner wrote it (keylessCut).
    if (w.mark === 'cut') return;
    const closed = this.chunks.close(w.token);
    // A watermark of an earlier process (restarted since) has no rows here: the runner re-reads.
    if (closed === undefined) return;
    if (closed === 'retry') {
      this.host.log.info({ table: w.table }, 'snapshot chunk read again: a transaction committed before it was not yet visible to its read');
      return;
    }
    const ctx = builder.openTransaction;
    if (!ctx) return;
    const { chunk, rows } = closed;
    for (const row of rows) {
      const values = chunk.columns.map((c) => row[c] ?? null);
      const e = builder.snapshotRow(ctx, chunk.schema, chunk.table, chunk.columns, values, chunk.keyColumns, lsn, chunk.columnTypes);
      publisher.add(e);
      events.emit('capture:change', e);
    }
    this.chunks.emitted(w.token);
  }
}
