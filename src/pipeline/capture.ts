import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import { errorMessage } from '../core/errors.js';
import type { PipelineEvents } from '../core/events.js';
import { formatLsn, type Lsn } from '../core/lsn.js';
import type { SchemaVersionRegistry } from '../core/schema-version.js';
import type { ChangeCodec } from '../schema/change-codec.js';
import type { Logger } from '../log/logger.js';
import { PgoutputDecoder } from '../pgoutput/decoder.js';
import { parseReplicationFrame } from '../pgoutput/replication-frames.js';
import type { PgoutputMessage } from '../pgoutput/messages.js';
import type { StreamProducer } from '../stream/stream.js';
import { BatchPublisher } from './batch-publisher.js';
import { CaptureSnapshots } from './capture-snapshots.js';
import { SNAPSHOT_PREFIX } from '../core/snapshot.js';
import { ChangeBuilder } from './change-builder.js';
import { TableDefinitions } from './table-definitions.js';
import { typedRecords } from './typed-records.js';
import { StreamedTransactions } from './streamed-transactions.js';
import { UnchangedValues, type SourceRowReader } from './unchanged-values.js';
import { WholeTransactions } from './whole-transactions.js';

type PauseReason = 'window' | 'busy' | 'drain' | 'keyless';

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
  /** Primary keys of the source's tables (`schema.table` → columns), from the catalog. */
  primaryKeys?: ReadonlyMap<string, readonly string[]>;
  /** Tables whose primary key is DEFERRABLE (`schema.table`), from the catalog (see UnchangedValues). */
  deferrableKeys?: ReadonlySet<string>;
  /** `_schema_version` per table definition; a batch is acknowledged only once its versions are stored. */
  schemaVersions?: SchemaVersionRegistry;
  /**
   * Fills the values a key-changing UPDATE did not send (unchanged TOAST columns under the
   * new key, which the target cannot have). Without it such a change keeps `unchanged` and
   * the sink dead-letters it rather than guess.
   */
  readSourceRow?: SourceRowReader;
  /**
   * The source's WAL position when this capture took the slot (after any earlier capture of
   * it stopped): UPDATEs committed before it that leave values unchanged are read at the
   * source too (see UnchangedValues). Absent: nothing is read for that reason.
   */
  walAtStart?: Lsn;
  /** `stream.format` other than json: how changes are encoded (see typedRecords); absent: JSON. */
  codec?: ChangeCodec;
  /** `sink.consistency: transactional`: a source transaction never reaches the stream in parts (see WholeTransactions). */
  wholeTransactions?: boolean;
  /** `source.skip_origins`: drop the changes of transactions that carry a replication origin. */
  skipOrigins?: boolean;
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
  private readonly publisher: BatchPublisher;
  private statusTimer: NodeJS.Timeout | undefined;
  /** Why reading the replication socket is paused; it resumes when none is left. */
  private readonly pauseReasons = new Set<PauseReason>();
  private readonly streamed: StreamedTransactions;
  /**
   * An asynchronous step is running (a streamed transaction's replay, or reading values
   * from the source): chunks that still arrive wait in `backlog`, copied, in order.
   */
  private busy: Promise<void> | undefined;
  private backlog: Buffer[] = [];
  /** Transactional: transactions kept whole around keyless snapshots; while one waits, chunks wait in `backlog`. */
  private readonly whole: WholeTransactions | undefined;
  private stopping = false;
  /** The snapshot side (SnapshotRunner hands its chunks and keyless tables to it). */
  readonly snapshots: CaptureSnapshots;
  /** Tables the open transaction changed (for SnapshotWindows.committed). */
  private readonly txnTables = new Set<string>();
  /** The change last added to txnTables: a run of one table's changes adds its label once. */
  private txnTableOf: ChangeEvent | undefined;
  /** The open transaction's newest change: it waits here to get `tx_last` at the commit. */
  private lastOfTxn: ChangeEvent | undefined;
  /** Scratch array for the events one message produces. */
  private readonly built: ChangeEvent[] = [];
  private readonly unchanged: UnchangedValues;
  private failure: Error | undefined;
  /** Commit LSN of the last transaction with changes, for the next one's `tx_prev`. */
  private lastTxnCommit: string | undefined;
  private failed!: (err: Error) => void;

  constructor(
    private readonly replication: ReplicationSource,
    producer: StreamProducer,
    private readonly events: PipelineEvents,
    private readonly log: Logger,
    private readonly options: CaptureOptions,
  ) {
    const definitions = options.codec && options.codec.format !== 'json' ? new TableDefinitions() : undefined;
    this.builder = new ChangeBuilder(options.source, new Set(options.ignoredSchemas), options.primaryKeys, options.schemaVersions, definitions, options.skipOrigins);
    const encode = options.codec && definitions ? typedRecords(options.codec, definitions) : undefined;
    this.publisher = new BatchPublisher(producer, events, log, { ...options, ...(encode ? { encode } : {}) }, {
      windowFull: (full) => this.setPaused('window', full),
      confirmed: (lsn) => this.snapshots.confirmed(lsn),
      failed: (err) => this.failed(err),
      filling: () => this.unchanged.waiting,
      mayChange: (e) => this.unchanged.mayChange(e),
    });
    options.schemaVersions?.listen?.((e) => events.emit('capture:schema:changed', { table: `${e.schema}.${e.table}`, version: e.version, lsn: e.lsn }));
    this.streamed = new StreamedTransactions(options.spillDir);
    this.unchanged = new UnchangedValues(options.readSourceRow, options.walAtStart, options.deferrableKeys);
    this.snapshots = new CaptureSnapshots({
      builder: this.builder, publisher: this.publisher, unchanged: this.unchanged, events, log,
      flushDurable: () => this.flushDurable(),
      holdsChanged: () => this.keylessHoldsChanged(),
    });
    if (options.wholeTransactions) this.whole = new WholeTransactions(this.snapshots, Math.max(1, options.batchSize * options.maxInFlight));
    this.failed = (err) => {
      this.failure ??= err;
    };
  }

  /** The position confirmed to the source so far. */
  get confirmedLsn(): Lsn {
    return this.publisher.confirmed;
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
      this.publisher.close();
      await this.replication.close();
      this.streamed.close();
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
    this.publisher.flush();
    await Promise.race([this.publisher.drain(), failedPromise]);
    this.sendStatus(false);
    this.log.info({ confirmed: formatLsn(this.publisher.confirmed) }, 'capture drained');
  }

  private onData(chunk: Buffer): void {
    if (this.failure || this.stopping) return;
    if (this.busy || this.whole?.isWaiting) {
      this.backlog.push(Buffer.from(chunk));
      return;
    }
    this.processChunk(chunk);
  }

  private processChunk(chunk: Buffer): void {
    try {
      const frame = parseReplicationFrame(chunk);
      if (frame.tag === 'keepalive') {
        // A keepalive's walEnd is what the walsender has sent (its sentPtr). When it finds
        // capture idle — every frame before it processed (a keepalive met while busy waits in
        // the backlog behind them), outside any transaction or streamed block — everything up
        // to it has been seen, as with a heartbeat: the next batch confirms it once durable.
        // Why: at a fast shutdown the walsender sends the WAL up to the stop and exits only
        // when the client reports it flushed; capture cannot write a heartbeat then, so a
        // source whose last WAL was not this slot's (another database, autovacuum, the
        // bgwriter's standby snapshots) stayed "shutting down", refusing every connection, for
        // as long as capture ran.
        if (!this.builder.inTransaction && !this.streamed.receiving && frame.walEnd > this.publisher.confirmed) {
          this.snapshots.reach(frame.walEnd);
          this.publisher.schedule();
        }
        if (frame.replyRequested) this.sendStatus(false);
        return;
      }
      const msg = this.decoder.decode(chunk, frame.dataOffset);
      if (msg.tag === 'stream_commit' && this.whole && !this.whole.streamedCommit(msg.commitLsn)) {
        this.backlog.unshift(Buffer.from(chunk));
        this.waitForKeylessSnapshot();
        return;
      }
      // The message's bytes are sliced only inside a streamed chunk (a view per message costs).
      if (this.streamed.receiving && this.streamed.buffer(msg, frame.dataStart, chunk.subarray(frame.dataOffset))) return;
      this.handleMessage(msg, frame.dataStart);
    } catch (err) {
      this.failed(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** One decoded message outside a streamed chunk's data (exposed for tests). */
  handleMessage(msg: PgoutputMessage, lsn: Lsn): void {
    if (this.streamed.control(msg)) return;
    if (msg.tag === 'stream_commit') {
      this.runBusy(() => this.replayCommitted(msg.xid, msg.commitLsn, msg.endLsn, msg.commitTime));
      return;
    }
    if (msg.tag === 'begin') this.whole?.begin(msg.finalLsn);
    const xid = this.builder.openTransaction?.xid;
    this.addChanges(msg, lsn);
    if (msg.tag === 'message' && msg.prefix === SNAPSHOT_PREFIX) this.snapshots.watermark(msg.content, lsn);
    if (msg.tag === 'commit') {
      this.onCommit(xid, msg.endLsn);
    } else if (msg.tag === 'message' && !msg.transactional && !this.builder.inTransaction && !this.streamed.receiving) {
      // A heartbeat outside any transaction: everything before it has been seen.
      this.snapshots.reach(msg.lsn);
    }
    if (this.unchanged.waiting) {
      this.runBusy(async () => {
        await this.unchanged.fill();
        this.publisher.schedule();
      });
    } else this.publisher.schedule();
  }

  private onCommit(xid: number | undefined, endLsn: Lsn): void {
    this.markTransactionEnd();
    const committed = (tables: ReadonlySet<string>): void => this.snapshots.committed(xid, endLsn, tables);
    if (!this.whole) committed(this.txnTables);
    else if (!this.whole.commit(this.txnTables, committed)) this.waitForKeylessSnapshot();
    // (It may have waited as too large an open transaction until its last change.)
    else this.setPaused('keyless', false);
    this.txnTables.clear();
    this.txnTableOf = undefined;
  }

  /** A change ready to go (the open transaction's newest waits apart, see addChanges). */
  private route(e: ChangeEvent): void {
    if (!this.whole) this.snapshots.route(e);
    else if (this.whole.route(e)) this.waitForKeylessSnapshot('a transaction committed after its cut is too large to keep in memory until its commit shows its tables');
  }

  private addChanges(msg: PgoutputMessage, lsn: Lsn): void {
    const built = this.built;
    this.builder.handle(msg, lsn, built);
    if (built.length === 0) return;
    for (const e of built) {
      this.events.emit('capture:change', e);
      const last = this.txnTableOf;
      if (last === undefined || last.table !== e.table || last.schema !== e.schema) {
        this.txnTables.add(tableLabelOf(e));
        this.txnTableOf = e;
      }
      this.snapshots.observe(e);
      this.unchanged.observe(e);
      // The open transaction's newest change waits apart, so that the commit can still mark
      // it as the transaction's last (markTransactionEnd).
      const previous = this.lastOfTxn;
      this.lastOfTxn = e;
      if (previous) this.route(previous);
    }
    built.length = 0;
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
        this.processBacklog();
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
    this.builder.beginStreamedReplay();
    this.addChanges({ tag: 'begin', finalLsn: commitLsn, commitTime, xid }, commitLsn);
    const origin = this.streamed.takeOrigin(xid);
    if (origin) this.addChanges(origin, commitLsn);
    let replayed = 0;
    for (const { msg, lsn } of this.streamed.replay(xid)) {
      // Abandoned (stop or failure): not confirmed, the server sends the transaction again.
      if (this.stopping || this.failure) return;
      this.addChanges(msg, lsn);
      if (this.unchanged.waiting) await this.unchanged.fill();
      if (this.publisher.full) {
        this.publisher.flush();
        await this.publisher.windowOpen();
      }
      // The replay is synchronous disk reads and decoding: let apply (same event loop in
      // `syncline run`) take its turns, or it barely writes until the replay is over.
      if (++replayed % 256 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (this.stopping || this.failure) return;
    this.builder.endStreamedReplay();
    this.addChanges({ tag: 'commit', flags: 0, commitLsn, endLsn, commitTime }, endLsn);
    this.onCommit(xid, endLsn);
    this.publisher.flush();
  }

  /** Chunks that waited (busy step, keyless snapshot), in order, until something makes them wait again. */
  private processBacklog(): void {
    while (this.backlog.length > 0 && !this.busy && !this.whole?.isWaiting && !this.failure && !this.stopping) this.processChunk(this.backlog.shift() as Buffer);
  }

  /** A transaction waits whole for a keyless snapshot (see WholeTransactions): reading stops behind it. */
  private waitForKeylessSnapshot(why = 'a transaction committed after its cut changed the table'): void {
    this.setPaused('keyless', true);
    this.log.info({ tables: this.snapshots.heldTables }, `capture waits for a keyless snapshot: ${why} (sink.consistency: transactional)`);
  }

  /** A keyless hold changed: what waits may go on (in a later turn: the caller is mid-step). */
  private keylessHoldsChanged(): void {
    if (!this.whole?.isWaiting) return;
    setImmediate(() => {
      if (!this.whole?.isWaiting || !this.whole.release()) return;
      this.setPaused('keyless', false);
      this.publisher.schedule();
      this.processBacklog();
    });
  }

  private setPaused(reason: PauseReason, on: boolean): void {
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
    this.publisher.flush();
    return this.publisher.whenDurable();
  }

  private sendStatus(replyRequested: boolean): void {
    if (this.failure) return;
    try {
      this.replication.acknowledge(this.publisher.confirmed, replyRequested);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not send standby status');
    }
  }
}
