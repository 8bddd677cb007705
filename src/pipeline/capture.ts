import { partitionKeyOf, tableLabelOf, type ChangeEvent, type Row } from '../core/change.js';
import { errorMessage } from '../core/errors.js';
import { formatLsn, type Lsn } from '../core/lsn.js';
import type { ColumnType, SchemaVersionRegistry } from '../core/schema-version.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { PgoutputDecoder } from '../pgoutput/decoder.js';
import { parseReplicationFrame } from '../pgoutput/replication-frames.js';
import type { OriginMessage, PgoutputMessage } from '../pgoutput/messages.js';
import type { OutgoingRecord, StreamProducer } from '../stream/stream.js';
import { ChangeBuilder, SNAPSHOT_PREFIX, type VersionContext } from './change-builder.js';
import { SnapshotWindows, type ReadSnapshot } from './snapshot-windows.js';
import { SpillStore } from './spill-store.js';

/** How many recent key changes capture remembers (see Capture.keyChanged). */
const KEY_CHANGES_REMEMBERED = 100_000;

/** The replication connection as capture sees it. */
export interface ReplicationSource {
  start(onData: (chunk: Buffer) => void): Promise<void>;
  acknowledge(lsn: Lsn, replyRequested?: boolean): void;
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

/**
 * Reads the current values of `columns` of one row at the source (by its key, text values
 * as pgoutput would send them); undefined when the row is gone.
 */
/** Reads a row's `columns` by key at the source, once transaction `xid` is visible there. */
export type SourceRowReader = (schema: string, table: string, key: Row, columns: readonly string[], xid?: number) => Promise<Row | undefined>;

export interface CaptureOptions {
  source: string;
  /** Where transactions streamed before their commit are buffered (protocol >= 2). */
  spillDir: string;
  batchSize: number;
  batchWaitMs: number;
  maxInFlight: number;
  statusIntervalMs: number;
  /** The slot's confirmed position at start. */
  startLsn: Lsn;
  /** Schemas whose changes are syncline's own bookkeeping, never events. */
  ignoredSchemas: readonly string[];
  /** Primary keys of the source's tables (`schema.table` → columns), from the catalog. */
  primaryKeys?: ReadonlyMap<string, readonly string[]>;
  /** `_schema_version` per table definition; a batch is acknowledged only once its versions are stored. */
  schemaVersions?: SchemaVersionRegistry;
  /**
   * Fills the values a key-changing UPDATE did not send (unchanged TOAST columns under the
   * new key, which the target cannot have). Without it such a change keeps `unchanged` and
   * the sink dead-letters it rather than guess.
   */
  readSourceRow?: SourceRowReader;
  /** `source.skip_origins`: drop the changes of transactions that carry a replication origin. */
  skipOrigins?: boolean;
}

/** Rows of one snapshot chunk, waiting for their high watermark. */
export interface SnapshotChunk {
  schema: string;
  table: string;
  columns: readonly string[];
  keyColumns: readonly string[];
  /** The table's definition when the chunk was read (its `_schema_version`). */
  columnTypes?: readonly ColumnType[];
  rows: readonly (string | null)[][];
  /** The MVCC snapshot the rows were read in. */
  snapshot: ReadSnapshot;
}

/** A keyless table read whole in one snapshot (see SnapshotRunner). */
export interface KeylessSnapshot {
  schema: string;
  table: string;
  columns: readonly string[];
  columnTypes?: readonly ColumnType[];
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

interface InFlightBatch {
  /** Highest source position fully contained in this batch and all before it. */
  position: Lsn | undefined;
  done: boolean;
  /** Called once this batch and every one before it are durable. */
  onDurable?: (() => void)[];
}

/** A keyless table's snapshot as capture sees it: its cut, its rows, the table's later changes. */
interface KeylessCut {
  spec: KeylessSnapshot;
  table: string;
  /** The cut's transaction: the reset and every row are versioned in it. Set once the cut is seen. */
  ctx: VersionContext | undefined;
  cutLsn: Lsn;
  /** Changes to the table after the cut, waiting for the snapshot's rows to go first. */
  held: ChangeEvent[];
  seen: Promise<void>;
  markSeen: () => void;
}

/**
 * Capture: replication slot → change events → stream.
 *
 * Changes are published in batches (count or deadline, whichever first), with up to
 * `maxInFlight` publishes outstanding. The slot is acknowledged only up to the end of the
 * last transaction whose every change the stream stored durably — a crash at any moment
 * makes the server resend from there, and the version gate absorbs the repeats.
 */
export class Capture {
  private readonly decoder = new PgoutputDecoder();
  private readonly builder: ChangeBuilder;
  private pending: ChangeEvent[] = [];
  private pendingPosition: Lsn | undefined;
  /** A position reached while some changes are held (keyless snapshot): released with them. */
  private deferredPosition: Lsn | undefined;
  private readonly inFlight: InFlightBatch[] = [];
  private confirmed: Lsn = 0n;
  private flushTimer: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  /** Why reading the replication socket is paused; it resumes when none is left. */
  private readonly pauseReasons = new Set<'window' | 'busy' | 'drain'>();
  private readonly spill: SpillStore;
  /** Top-level xid of the streamed chunk being received, if any. */
  private streamXid: number | undefined;
  /** Streamed transactions' Origin messages, by top-level xid, until their commit. */
  private readonly originStreamed = new Map<number, OriginMessage>();
  /**
   * An asynchronous step is running (a streamed transaction's replay, or reading values
   * from the source): chunks that still arrive wait in `backlog`, copied, in order.
   */
  private busy: Promise<void> | undefined;
  private backlog: Buffer[] = [];
  private windowWaiter: (() => void) | undefined;
  private stopping = false;
  private readonly windows = new SnapshotWindows();
  private readonly chunks = new Map<string, SnapshotChunk>();
  /** High watermarks seen in the open transaction; published once its commit is confirmed. */
  private watermarksInTxn: string[] = [];
  private readonly chunkWaiters: { lsn: Lsn; token: string }[] = [];
  private readonly chunkResolvers = new Map<string, (result: ChunkResult) => void>();
  private readonly keyless = new Map<string, KeylessCut>();
  /** Keyless tables whose changes are held, by `schema.table`. */
  private readonly holds = new Map<string, KeylessCut>();
  /** Tables the open transaction changed (for SnapshotWindows.committed). */
  private readonly txnTables = new Set<string>();
  /** The open transaction's newest change: it waits here to get `tx_last` at the commit. */
  private lastOfTxn: ChangeEvent | undefined;
  /** Scratch array for the events one message produces. */
  private readonly built: ChangeEvent[] = [];
  /**
   * Tables with an unfinished snapshot: the target may not have a row yet that an UPDATE
   * leaving TOASTed values unchanged needs to keep them from (see fillUnchanged).
   */
  private snapshotting: ReadonlySet<string> = new Set();
  /**
   * Rows (partitionKeyOf) that recently got a key change leaving values unchanged: the target may
   * lack that row (its insert skipped as superseded_at_source), so their later UPDATEs that
   * leave values unchanged are filled too. Bounded: the oldest are forgotten (an UPDATE of a
   * forgotten key is then refused and dead-lettered, never written without its values).
   */
  private readonly keyChanged = new Set<string>();
  /** Key-changing inserts whose unchanged values must be read from the source before publishing. */
  private toFill: ChangeEvent[] = [];
  private failure: Error | undefined;
  /** Commit LSN of the last transaction with changes, for the next one's `tx_prev`. */
  private lastTxnCommit: string | undefined;
  private failed!: (err: Error) => void;
  private drained: (() => void) | undefined;

  constructor(
    private readonly replication: ReplicationSource,
    private readonly producer: StreamProducer,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly options: CaptureOptions,
  ) {
    this.builder = new ChangeBuilder(options.source, new Set(options.ignoredSchemas), options.primaryKeys, options.schemaVersions, options.skipOrigins);
    this.confirmed = options.startLsn;
    this.spill = new SpillStore(options.spillDir);
    this.failed = (err) => {
      this.failure ??= err;
    };
  }

  /** The position confirmed to the source so far. */
  get confirmedLsn(): Lsn {
    return this.confirmed;
  }

  /**
   * Streams until `signal` aborts (then drains: publishes what it holds, acknowledges, and
   * resolves) or until something fails (rejects; nothing unpublished was acknowledged).
   */
  async run(signal: AbortSignal): Promise<void> {
    const failedPromise = new Promise<never>((_, reject) => {
      this.failed = (err) => {
        if (!this.failure) {
          this.failure = err;
          reject(err);
        }
      };
    });
    failedPromise.catch(() => undefined);
    const stopped = new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
    this.statusTimer = setInterval(() => this.sendStatus(false), this.options.statusIntervalMs);
    try {
      const streaming = this.replication.start((chunk) => this.onData(chunk));
      await Promise.race([streaming.then(() => { throw new Error('replication stream ended unexpectedly'); }), failedPromise, stopped]);
      await this.drain(failedPromise);
    } finally {
      clearInterval(this.statusTimer);
      if (this.flushTimer) clearTimeout(this.flushTimer);
      await this.replication.close();
      this.spill.close();
    }
  }

  /**
   * Stops reading, publishes what is pending and acknowledges what is durable. A streamed
   * transaction being replayed is abandoned where it is, and nothing the server sent after
   * it is processed: the position stays before its commit, so the server sends it again (F1).
   */
  private async drain(failedPromise: Promise<never>): Promise<void> {
    this.stopping = true;
    this.setPaused('drain', true);
    if (this.busy) await Promise.race([this.busy, failedPromise]);
    this.flush();
    if (!this.inFlight.every((b) => b.done)) {
      await Promise.race([new Promise<void>((resolve) => (this.drained = resolve)), failedPromise]);
    }
    this.sendStatus(false);
    this.log.info({ confirmed: formatLsn(this.confirmed) }, 'capture drained');
  }

  private onData(chunk: Buffer): void {
    if (this.failure || this.stopping) return;
    if (this.busy) {
      this.backlog.push(Buffer.from(chunk));
      return;
    }
    this.processChunk(chunk);
  }

  private processChunk(chunk: Buffer): void {
    try {
      const frame = parseReplicationFrame(chunk);
      if (frame.tag === 'keepalive') {
        if (frame.replyRequested) this.sendStatus(false);
        return;
      }
      const msg = this.decoder.decode(chunk, frame.dataOffset);
      if (this.streamXid !== undefined && this.spillStreamed(msg, frame.dataStart, chunk.subarray(frame.dataOffset))) return;
      this.handleMessage(msg, frame.dataStart);
    } catch (err) {
      this.failed(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Inside a streamed chunk: buffers what belongs to the transaction. True when consumed. */
  private spillStreamed(msg: PgoutputMessage, lsn: Lsn, raw: Buffer): boolean {
    const xid = this.streamXid as number;
    switch (msg.tag) {
      case 'insert':
      case 'update':
      case 'delete':
      case 'truncate':
        this.spill.append(xid, msg.xid ?? xid, lsn, raw);
        return true;
      case 'relation':
        this.spill.appendRelation(xid, lsn, raw);
        return true;
      case 'type':
        return true; // values are text: type definitions change nothing here
      default:
        return false;
    }
  }

  /** One decoded message outside a streamed chunk's data (exposed for tests). */
  handleMessage(msg: PgoutputMessage, lsn: Lsn): void {
    switch (msg.tag) {
      case 'stream_start':
        this.streamXid = msg.xid;
        return;
      case 'stream_stop':
        this.streamXid = undefined;
        return;
      case 'stream_abort':
        // Aborted before commit: its buffered changes vanish and never reach the stream.
        this.spill.abort(msg.xid, msg.subXid);
        if (msg.xid === msg.subXid) this.originStreamed.delete(msg.xid);
        return;
      case 'origin':
        // A streamed transaction's origin comes with its first chunk: replayed at its commit.
        if (this.streamXid !== undefined) {
          this.originStreamed.set(this.streamXid, msg);
          return;
        }
        break;
      case 'stream_commit':
        this.runBusy(() => this.replayCommitted(msg.xid, msg.commitLsn, msg.endLsn, msg.commitTime));
        return;
      default:
        break;
    }
    const xid = this.builder.openTransaction?.xid;
    this.addChanges(msg, lsn);
    if (msg.tag === 'message' && msg.prefix === SNAPSHOT_PREFIX) this.onWatermark(msg.content, lsn);
    if (msg.tag === 'commit') {
      this.onCommit(xid, msg.endLsn);
    } else if (msg.tag === 'message' && !msg.transactional && !this.builder.inTransaction && this.streamXid === undefined) {
      // A heartbeat outside any transaction: everything before it has been seen.
      this.reachPosition(msg.lsn);
    }
    if (this.toFill.length > 0) {
      this.runBusy(async () => {
        await this.fillUnchanged();
        this.scheduleFlush();
      });
    } else this.scheduleFlush();
  }

  private onCommit(xid: number | undefined, endLsn: Lsn): void {
    this.markTransactionEnd();
    if (xid !== undefined && this.txnTables.size > 0) this.windows.committed(xid, endLsn, this.txnTables);
    this.txnTables.clear();
    this.reachPosition(endLsn);
    for (const token of this.watermarksInTxn) this.chunkWaiters.push({ lsn: endLsn, token });
    this.watermarksInTxn = [];
  }

  /** Everything up to `lsn` has been seen: the next batch may confirm it, unless changes are held. */
  private reachPosition(lsn: Lsn): void {
    if (this.holdingChanges()) this.deferredPosition = lsn;
    else this.pendingPosition = lsn;
  }

  private holdingChanges(): boolean {
    for (const cut of this.holds.values()) if (cut.held.length > 0) return true;
    return false;
  }

  private addChanges(msg: PgoutputMessage, lsn: Lsn): void {
    const built = this.built;
    this.builder.handle(msg, lsn, built);
    if (built.length === 0) return;
    for (const e of built) {
      this.metrics.captured.inc({ table: e.table });
      this.txnTables.add(tableLabelOf(e));
      if (this.windows.open) this.windows.observe(e);
      if (e.unchanged && this.options.readSourceRow && this.mayLackRow(e)) this.toFill.push(e);
      // The open transaction's newest change waits apart, so that the commit can still mark
      // it as the transaction's last (markTransactionEnd).
      const previous = this.lastOfTxn;
      this.lastOfTxn = e;
      if (previous) this.route(previous);
    }
    built.length = 0;
  }

  /** A change ready to go: pending, or held behind a keyless snapshot of its table. */
  private route(e: ChangeEvent): void {
    const cut = this.holds.size > 0 ? this.holds.get(tableLabelOf(e)) : undefined;
    if (cut) cut.held.push(e);
    else this.pending.push(e);
  }

  /**
   * Snapshot chunks that a SnapshotRunner has read wait here for their high watermark.
   * `chunkPublished` resolves once the chunk's rows are durably in the stream, or with
   * 'retry' when they must be read again.
   */
  registerChunk(token: string, chunk: SnapshotChunk): void {
    this.chunks.set(token, chunk);
  }

  chunkPublished(token: string): Promise<ChunkResult> {
    return new Promise((resolve) => this.chunkResolvers.set(token, resolve));
  }

  /**
   * A keyless table is about to be read whole in one snapshot, at the cut `token` (see
   * SnapshotRunner). Once capture sees the cut it emits a reset of the table versioned there,
   * then the rows handed to `keylessRows`, and holds the table's later changes until
   * `keylessDone`, so that they follow the rows in the stream.
   */
  registerKeyless(token: string, spec: KeylessSnapshot): { seen: Promise<void> } {
    let markSeen!: () => void;
    const seen = new Promise<void>((resolve) => (markSeen = resolve));
    this.keyless.set(token, { spec, table: `${spec.schema}.${spec.table}`, ctx: undefined, cutLsn: 0n, held: [], seen, markSeen });
    return { seen };
  }

  /** Whether the target may have no row to keep `e`'s unchanged values from (see fillUnchanged). */
  private mayLackRow(e: ChangeEvent): boolean {
    const id = partitionKeyOf(e);
    if (e.op === 'INSERT') {
      this.keyChanged.delete(id);
      this.keyChanged.add(id);
      if (this.keyChanged.size > KEY_CHANGES_REMEMBERED) this.keyChanged.delete(this.keyChanged.values().next().value as string);
      return true;
    }
    return e.op === 'UPDATE' && (this.snapshotting.has(tableLabelOf(e)) || this.keyChanged.has(id));
  }

  /** The tables with an unfinished snapshot job (SnapshotRunner keeps this current). */
  setSnapshotting(tables: ReadonlySet<string>): void {
    this.snapshotting = tables;
  }

  /** Rows of a keyless snapshot whose cut was seen; resolves when there is room for more. */
  keylessRows(token: string, rows: readonly (string | null)[][]): Promise<void> {
    const cut = this.keyless.get(token);
    if (!cut?.ctx) throw new Error(`keyless snapshot ${token}: rows before its cut was seen`);
    for (const values of rows) {
      const e = this.builder.snapshotRow(cut.ctx, cut.spec.schema, cut.spec.table, cut.spec.columns, values, [], cut.cutLsn, cut.spec.columnTypes);
      this.pending.push(e);
      this.metrics.captured.inc({ table: e.table });
    }
    this.scheduleFlush();
    return this.windowOpen();
  }

  /**
   * A keyless snapshot's rows are all handed over: resolves once they are durable; the held
   * changes are released behind them. With `published` false (the read failed) the held
   * changes are released at once; the job reads the table again.
   */
  keylessDone(token: string, published = true): Promise<void> {
    const cut = this.keyless.get(token);
    this.keyless.delete(token);
    if (!cut) return Promise.resolve();
    const durable = published && cut.ctx ? this.flushDurable() : Promise.resolve();
    if (this.holds.get(cut.table) === cut) {
      this.holds.delete(cut.table);
      this.pending.push(...cut.held);
      if (!this.holdingChanges() && this.deferredPosition !== undefined) {
        this.pendingPosition = this.deferredPosition;
        this.deferredPosition = undefined;
      }
      this.scheduleFlush();
    }
    return durable;
  }

  private onWatermark(content: Buffer, lsn: Lsn): void {
    let w: WatermarkMessage;
    try {
      w = JSON.parse(content.toString('utf8')) as WatermarkMessage;
    } catch {
      return;
    }
    if (w.mark === 'low') {
      this.windows.openWindow(w.token, w.table, lsn);
      return;
    }
    if (w.mark === 'cut') {
      this.onCut(w.token, lsn);
      return;
    }
    const chunk = this.chunks.get(w.token);
    this.chunks.delete(w.token);
    const rows = this.windows.closeWindow(w.token, chunk);
    // A watermark of an earlier process (restarted since) has no rows here: the runner re-reads.
    if (rows === undefined || !chunk) return;
    if (rows === 'retry') {
      this.log.info({ table: w.table }, 'snapshot chunk read again: a transaction committed before it was not yet visible to its read');
      this.resolveChunk(w.token, 'retry');
      return;
    }
    const ctx = this.builder.openTransaction;
    if (!ctx) return;
    for (const row of rows) {
      const values = chunk.columns.map((c) => row[c] ?? null);
      const e = this.builder.snapshotRow(ctx, chunk.schema, chunk.table, chunk.columns, values, chunk.keyColumns, lsn, chunk.columnTypes);
      this.pending.push(e);
      this.metrics.captured.inc({ table: e.table });
    }
    this.watermarksInTxn.push(w.token);
  }

  private onCut(token: string, lsn: Lsn): void {
    const cut = this.keyless.get(token);
    const ctx = this.builder.openTransaction;
    if (!cut || !ctx) return;
    cut.ctx = ctx;
    cut.cutLsn = lsn;
    this.pending.push(this.builder.snapshotReset(ctx, cut.spec.schema, cut.spec.table, lsn, cut.spec.columnTypes));
    // The cut's transaction held the table locked: every later change to it commits after.
    this.holds.set(cut.table, cut);
    cut.markSeen();
  }

  private resolveChunk(token: string, result: ChunkResult): void {
    this.chunkResolvers.get(token)?.(result);
    this.chunkResolvers.delete(token);
  }

  /**
   * A transaction committed: its last change (still unpublished, see flush) gets `tx_last`
   * and `tx_prev`, which let a transactional apply know the transaction is whole and in order.
   */
  private markTransactionEnd(): void {
    const last = this.lastOfTxn;
    this.lastOfTxn = undefined;
    if (!last) return;
    last.tx_last = true;
    if (this.lastTxnCommit !== undefined) last.tx_prev = this.lastTxnCommit;
    this.lastTxnCommit = last.commit_lsn;
    this.route(last);
  }

  private scheduleFlush(): void {
    if (this.pending.length >= this.options.batchSize) this.flush();
    else if (this.flushTimer === undefined && (this.pending.length > 0 || this.pendingPosition !== undefined)) {
      this.flushTimer = setTimeout(() => this.flush(), this.options.batchWaitMs);
    }
  }

  /**
   * Runs an asynchronous step with the socket paused; data that still arrives waits in the
   * backlog and is processed in order afterwards (unless capture is stopping: then nothing
   * after the step is processed, see drain).
   */
  private runBusy(step: () => Promise<void>): void {
    this.setPaused('busy', true);
    const run = step().then(
      () => {
        this.busy = undefined;
        this.setPaused('busy', false);
        while (this.backlog.length > 0 && !this.busy && !this.failure && !this.stopping) this.processChunk(this.backlog.shift() as Buffer);
      },
      (err: unknown) => {
        this.busy = undefined;
        this.failed(err instanceof Error ? err : new Error(String(err)));
      },
    );
    this.busy = run;
  }

  /**
   * A streamed transaction committed: its changes come back from disk in order (with the
   * definitions sent inside it), are built into events with the now-known commit LSN and
   * published in batches under the same in-flight window.
   */
  private async replayCommitted(xid: number, commitLsn: Lsn, endLsn: Lsn, commitTime: bigint): Promise<void> {
    const decoder = new PgoutputDecoder();
    this.builder.beginStreamedReplay();
    this.addChanges({ tag: 'begin', finalLsn: commitLsn, commitTime, xid }, commitLsn);
    const origin = this.originStreamed.get(xid);
    this.originStreamed.delete(xid);
    if (origin) this.addChanges(origin, commitLsn);
    let replayed = 0;
    for (const record of this.spill.replay(xid)) {
      // Abandoned (stop or failure): not confirmed, the server sends the transaction again.
      if (this.stopping || this.failure) return;
      this.addChanges(decoder.decodeInStream(record.subarray(8)), record.readBigUInt64BE(0));
      if (this.toFill.length > 0) await this.fillUnchanged();
      if (this.pending.length >= this.options.batchSize) {
        this.flush();
        await this.windowOpen();
      }
      // The replay is synchronous disk reads and decoding: let apply (same event loop in
      // `syncline run`) take its turns, or it barely writes until the replay is over.
      if (++replayed % 256 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (this.stopping || this.failure) return;
    this.builder.endStreamedReplay();
    this.addChanges({ tag: 'commit', flags: 0, commitLsn, endLsn, commitTime }, endLsn);
    this.onCommit(xid, endLsn);
    this.flush();
  }

  /**
   * Changes that left TOASTed columns unchanged where the target may have no row to keep
   * them from: a key change (the new key's row exists nowhere at the target), an UPDATE of a
   * table whose snapshot has not finished (the row may come with a later chunk), and an UPDATE
   * of a key that recently got such a key change (its insert may have been skipped). The
   * values are read from the source now (a later change of those columns, or of the row,
   * follows in the stream, so the row converges). A row that is gone keeps `unchanged` and is
   * marked `superseded_at_source`: the key's later change decides it.
   */
  private async fillUnchanged(): Promise<void> {
    const read = this.options.readSourceRow;
    const todo = this.toFill;
    this.toFill = [];
    if (!read) return;
    for (const e of todo) {
      const missing = e.unchanged ?? [];
      const row = await read(e.schema, e.table, e.key, missing, e.xid);
      if (!row || !e.payload) {
        // Visible, yet not there: the row left this key after the change (a later DELETE of
        // the key follows in the stream, or a TRUNCATE), so the sink may skip the change.
        e.superseded_at_source = true;
        continue;
      }
      const still = missing.filter((col) => {
        if (!(col in row)) return true;
        (e.payload as Row)[col] = row[col] ?? null;
        return false;
      });
      if (still.length > 0) e.unchanged = still;
      else delete e.unchanged;
    }
  }

  /** Resolves when fewer than `maxInFlight` publishes are outstanding. */
  private windowOpen(): Promise<void> {
    if (this.inFlight.length < this.options.maxInFlight) return Promise.resolve();
    return new Promise((resolve) => (this.windowWaiter = resolve));
  }

  private setPaused(reason: 'window' | 'busy' | 'drain', on: boolean): void {
    const was = this.pauseReasons.size > 0;
    if (on) this.pauseReasons.add(reason);
    else this.pauseReasons.delete(reason);
    const now = this.pauseReasons.size > 0;
    if (now && !was) this.replication.pause();
    else if (!now && was) this.replication.resume();
  }

  /** Publishes what is pending; resolves once it (and everything before it) is durable. */
  private async flushDurable(): Promise<void> {
    while (this.busy) await this.busy;
    this.flush();
    const last = this.inFlight[this.inFlight.length - 1];
    if (!last) return Promise.resolve();
    return new Promise((resolve) => (last.onDurable ??= []).push(resolve));
  }

  private flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    // Changes waiting for values from the source go out once they have them.
    if (this.toFill.length > 0) return;
    if (this.pending.length === 0 && this.pendingPosition === undefined) return;
    const events = this.pending;
    const batch: InFlightBatch = { position: this.pendingPosition, done: false };
    this.pending = [];
    this.pendingPosition = undefined;
    this.inFlight.push(batch);
    if (events.length === 0) {
      this.complete(batch);
      return;
    }
    const records = new Array<OutgoingRecord>(events.length);
    for (let i = 0; i < events.length; i++) {
      const e = events[i] as ChangeEvent;
      // The id lets brokers with publish dedupe (NATS Nats-Msg-Id) drop a resend after a crash.
      records[i] = { key: partitionKeyOf(e), value: Buffer.from(JSON.stringify(e)), id: `${e.source}:${e.commit_lsn}:${e.seq}` };
    }
    if (this.inFlight.length >= this.options.maxInFlight) this.setPaused('window', true);
    const versionsStored = this.options.schemaVersions?.stored();
    (versionsStored ? Promise.all([this.producer.publish(records), versionsStored]) : this.producer.publish(records)).then(
      () => {
        this.metrics.published.inc(records.length);
        this.complete(batch);
      },
      (err: unknown) => {
        this.log.error({ err: errorMessage(err) }, 'publish failed; the slot stays at the last acknowledged position');
        this.failed(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  /** Marks a batch stored and advances the confirmed position over the done prefix. */
  private complete(batch: InFlightBatch): void {
    batch.done = true;
    let advanced = false;
    while (this.inFlight.length > 0 && (this.inFlight[0] as InFlightBatch).done) {
      const b = this.inFlight.shift() as InFlightBatch;
      if (b.position !== undefined && b.position > this.confirmed) {
        this.confirmed = b.position;
        advanced = true;
      }
      for (const resolve of b.onDurable ?? []) resolve();
    }
    if (advanced) {
      this.metrics.captureLsn.set(Number(this.confirmed));
      for (let i = this.chunkWaiters.length - 1; i >= 0; i--) {
        const w = this.chunkWaiters[i] as { lsn: Lsn; token: string };
        if (w.lsn <= this.confirmed) {
          this.chunkWaiters.splice(i, 1);
          this.resolveChunk(w.token, 'published');
        }
      }
    }
    if (this.inFlight.length < this.options.maxInFlight) {
      this.setPaused('window', false);
      const waiter = this.windowWaiter;
      this.windowWaiter = undefined;
      waiter?.();
    }
    if (this.inFlight.length === 0 && this.drained) this.drained();
  }

  private sendStatus(replyRequested: boolean): void {
    if (this.failure) return;
    try {
      this.replication.acknowledge(this.confirmed, replyRequested);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not send standby status');
    }
  }
}
