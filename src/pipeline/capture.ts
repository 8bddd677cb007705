import { partitionKeyOf, type ChangeEvent } from '../core/change.js';
import { errorMessage } from '../core/errors.js';
import { formatLsn, type Lsn } from '../core/lsn.js';
import type { ColumnType, SchemaVersionRegistry } from '../core/schema-version.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { PgoutputDecoder } from '../pgoutput/decoder.js';
import { parseReplicationFrame } from '../pgoutput/replication-frames.js';
import type { PgoutputMessage } from '../pgoutput/messages.js';
import type { OutgoingRecord, StreamProducer } from '../stream/stream.js';
import { ChangeBuilder, SNAPSHOT_PREFIX } from './change-builder.js';
import { SpillStore } from './spill-store.js';

/** The replication connection as capture sees it. */
export interface ReplicationSource {
  start(onData: (chunk: Buffer) => void): Promise<void>;
  acknowledge(lsn: Lsn, replyRequested?: boolean): void;
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

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
  /** Primary keys of the published tables (`schema.table` → columns), from the catalog. */
  primaryKeys?: ReadonlyMap<string, readonly string[]>;
  /** `_schema_version` per table definition; a batch is acknowledged only once its versions are stored. */
  schemaVersions?: SchemaVersionRegistry;
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
}

/** Content of a snapshot watermark message. */
export interface WatermarkMessage {
  token: string;
  mark: 'low' | 'high';
  /** `schema.table` of the chunk. */
  table: string;
}

interface InFlightBatch {
  /** Highest source position fully contained in this batch and all before it. */
  position: Lsn | undefined;
  done: boolean;
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
  private readonly inFlight: InFlightBatch[] = [];
  private confirmed: Lsn = 0n;
  private flushTimer: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  /** Why reading the replication socket is paused; it resumes when none is left. */
  private readonly pauseReasons = new Set<'window' | 'replay' | 'drain'>();
  private readonly spill: SpillStore;
  /** Top-level xid of the streamed chunk being received, if any. */
  private streamXid: number | undefined;
  /** Replaying a committed streamed transaction: chunks that still arrive wait here, copied. */
  private replaying = false;
  private backlog: Buffer[] = [];
  private windowWaiter: (() => void) | undefined;
  private stopping = false;
  /** Snapshot windows between a low and a high watermark: keys changed inside them, per token. */
  private readonly windows = new Map<string, { tableKey: string; keys: Set<string> }>();
  private readonly chunks = new Map<string, SnapshotChunk>();
  /** High watermarks seen in the open transaction; published once its commit is confirmed. */
  private watermarksInTxn: string[] = [];
  private readonly chunkWaiters: { lsn: Lsn; token: string }[] = [];
  private readonly chunkResolvers = new Map<string, () => void>();
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
    this.builder = new ChangeBuilder(options.source, new Set(options.ignoredSchemas), options.primaryKeys, options.schemaVersions);
    this.confirmed = options.startLsn;
    this.spill = new SpillStore(options.spillDir);
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

  private async drain(failedPromise: Promise<never>): Promise<void> {
    this.stopping = true;
    this.setPaused('drain', true);
    this.flush();
    if (!this.inFlight.every((b) => b.done)) {
      await Promise.race([new Promise<void>((resolve) => (this.drained = resolve)), failedPromise]);
    }
    this.sendStatus(false);
    this.log.info({ confirmed: formatLsn(this.confirmed) }, 'capture drained');
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    if (this.replaying) {
      this.backlog.push(Buffer.from(chunk));
      return;
    }
    try {
      const frame = parseReplicationFrame(chunk);
      if (frame.tag === 'keepalive') {
        if (frame.replyRequested) this.sendStatus(false);
        return;
      }
      const msg = this.decoder.decode(chunk, frame.dataOffset);
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
          return;
        case 'stream_commit':
          this.replayCommitted(msg.xid, msg.commitLsn, msg.endLsn, msg.commitTime);
          return;
        case 'insert':
        case 'update':
        case 'delete':
        case 'truncate':
          if (this.streamXid !== undefined) {
            this.spill.append(this.streamXid, msg.xid ?? this.streamXid, frame.dataStart, chunk.subarray(frame.dataOffset));
            return;
          }
          break;
        default:
          break;
      }
      this.addChanges(msg, frame.dataStart);
      if (msg.tag === 'message' && msg.prefix === SNAPSHOT_PREFIX) this.onWatermark(msg.content, frame.dataStart);
      if (msg.tag === 'commit') {
        this.markTransactionEnd();
        this.pendingPosition = msg.endLsn;
        for (const token of this.watermarksInTxn) this.chunkWaiters.push({ lsn: msg.endLsn, token });
        this.watermarksInTxn = [];
      } else if (msg.tag === 'message' && !msg.transactional && !this.builder.inTransaction && this.streamXid === undefined) {
        // A heartbeat outside any transaction: everything before it has been seen.
        this.pendingPosition = msg.lsn;
      }
      this.scheduleFlush();
    } catch (err) {
      this.failed(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private addChanges(msg: PgoutputMessage, lsn: Lsn): void {
    const before = this.pending.length;
    this.builder.handle(msg, lsn, this.pending);
    for (let i = before; i < this.pending.length; i++) {
      const e = this.pending[i] as ChangeEvent;
      this.metrics.captured.inc({ table: e.table });
      if (this.windows.size > 0) this.noteInWindows(e);
    }
  }

  /**
   * Snapshot chunks that a SnapshotRunner has read wait here for their high watermark.
   * `chunkPublished` resolves once the chunk's rows are durably in the stream.
   */
  registerChunk(token: string, chunk: SnapshotChunk): void {
    this.chunks.set(token, chunk);
  }

  chunkPublished(token: string): Promise<void> {
    return new Promise((resolve) => this.chunkResolvers.set(token, resolve));
  }

  /**
   * DBLog-style watermarks: between a chunk's low and high watermark, every streamed change
   * to a row of the chunk's table marks that key; at the high watermark the chunk's rows
   * whose key was not marked are emitted as READ events. A marked row's streamed change
   * already carries the newer state, so the snapshot never overwrites a newer change.
   */
  private onWatermark(content: Buffer, lsn: Lsn): void {
    let w: WatermarkMessage;
    try {
      w = JSON.parse(content.toString('utf8')) as WatermarkMessage;
    } catch {
      return;
    }
    if (w.mark === 'low') {
      this.windows.set(w.token, { tableKey: w.table, keys: new Set() });
      return;
    }
    const window = this.windows.get(w.token);
    const chunk = this.chunks.get(w.token);
    this.windows.delete(w.token);
    this.chunks.delete(w.token);
    // A watermark of an earlier process (restarted since) has no rows here: the runner re-reads.
    if (!window || !chunk) return;
    const keyIdx = chunk.keyColumns.map((k) => chunk.columns.indexOf(k));
    for (const row of chunk.rows) {
      const key = JSON.stringify(keyIdx.map((i) => row[i] ?? null));
      if (window.keys.has(key)) continue;
      const e = this.builder.snapshotRow(chunk.schema, chunk.table, chunk.columns, row, chunk.keyColumns, lsn, chunk.columnTypes);
      this.pending.push(e);
      this.metrics.captured.inc({ table: e.table });
    }
    this.watermarksInTxn.push(w.token);
  }

  private noteInWindows(e: ChangeEvent): void {
    const tableKey = `${e.schema}.${e.table}`;
    for (const w of this.windows.values()) {
      if (w.tableKey === tableKey) w.keys.add(JSON.stringify(Object.values(e.key)));
    }
  }

  /**
   * A transaction committed: its last change (still pending, see flush) gets `tx_last` and
   * `tx_prev`, which let a transactional apply know the transaction is whole and in order.
   */
  private markTransactionEnd(): void {
    const last = this.pending[this.pending.length - 1];
    // A transaction without changes, or with snapshot rows only (a watermark's: READ events
    // are version-gated rows, not part of any source transaction, and apply takes them as
    // they come).
    if (!last || last.tx_last || last.op === 'READ') return;
    last.tx_last = true;
    if (this.lastTxnCommit !== undefined) last.tx_prev = this.lastTxnCommit;
    this.lastTxnCommit = last.commit_lsn;
  }

  /**
   * The newest change of the open transaction waits (see flush) — only that: a change of a
   * transaction that already committed must go out with the position that covers it.
   */
  private holdsBack(e: ChangeEvent | undefined): boolean {
    return e !== undefined && e.op !== 'READ' && e.tx_last === undefined && e.commit_lsn === this.builder.openCommitLsn;
  }

  private scheduleFlush(): void {
    if (this.pending.length >= this.options.batchSize) this.flush();
    else if (this.flushTimer === undefined && (this.pending.length > (this.holdsBack(this.pending[this.pending.length - 1]) ? 1 : 0) || this.pendingPosition !== undefined)) {
      this.flushTimer = setTimeout(() => this.flush(), this.options.batchWaitMs);
    }
  }

  /**
   * A streamed transaction committed: its changes come back from disk in order, are built
   * into events with the now-known commit LSN and published in batches under the same
   * in-flight window; the socket stays paused until the whole transaction is handed over.
   */
  private replayCommitted(xid: number, commitLsn: Lsn, endLsn: Lsn, commitTime: bigint): void {
    this.replaying = true;
    this.setPaused('replay', true);
    const run = async (): Promise<void> => {
      const decoder = new PgoutputDecoder();
      this.addChanges({ tag: 'begin', finalLsn: commitLsn, commitTime, xid }, commitLsn);
      let replayed = 0;
      for (const record of this.spill.replay(xid)) {
        if (this.stopping || this.failure) return; // not confirmed: the server resends it
        this.addChanges(decoder.decodeInStream(record.subarray(8)), record.readBigUInt64BE(0));
        if (this.pending.length >= this.options.batchSize) {
          this.flush();
          await this.windowOpen();
        }
        // The replay is synchronous disk reads and decoding: let apply (same event loop in
        // `syncline run`) take its turns, or it barely writes until the replay is over.
        if (++replayed % 256 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      }
      this.addChanges({ tag: 'commit', flags: 0, commitLsn, endLsn, commitTime }, endLsn);
      this.markTransactionEnd();
      this.pendingPosition = endLsn;
      this.flush();
    };
    run().then(
      () => this.afterReplay(),
      (err: unknown) => this.failed(err instanceof Error ? err : new Error(String(err))),
    );
  }

  private afterReplay(): void {
    this.replaying = false;
    this.setPaused('replay', false);
    while (this.backlog.length > 0 && !this.replaying && !this.failure) this.onData(this.backlog.shift() as Buffer);
  }

  /** Resolves when fewer than `maxInFlight` publishes are outstanding. */
  private windowOpen(): Promise<void> {
    if (this.inFlight.length < this.options.maxInFlight) return Promise.resolve();
    return new Promise((resolve) => (this.windowWaiter = resolve));
  }

  private setPaused(reason: 'window' | 'replay' | 'drain', on: boolean): void {
    const was = this.pauseReasons.size > 0;
    if (on) this.pauseReasons.add(reason);
    else this.pauseReasons.delete(reason);
    const now = this.pauseReasons.size > 0;
    if (now && !was) this.replication.pause();
    else if (!now && was) this.replication.resume();
  }

  private flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    if (this.pending.length === 0 && this.pendingPosition === undefined) return;
    const events = this.pending;
    // The open transaction's newest change waits for the next change or the commit, so that
    // the commit can still mark it as the transaction's last (markTransactionEnd).
    const heldBack = this.holdsBack(events[events.length - 1]) ? events.pop() : undefined;
    const batch: InFlightBatch = { position: this.pendingPosition, done: false };
    this.pending = heldBack ? [heldBack] : [];
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
    }
    if (advanced) {
      this.metrics.captureLsn.set(Number(this.confirmed));
      for (let i = this.chunkWaiters.length - 1; i >= 0; i--) {
        const w = this.chunkWaiters[i] as { lsn: Lsn; token: string };
        if (w.lsn <= this.confirmed) {
          this.chunkWaiters.splice(i, 1);
          this.chunkResolvers.get(w.token)?.();
          this.chunkResolvers.delete(w.token);
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
