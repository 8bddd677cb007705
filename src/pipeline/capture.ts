import { partitionKeyOf, type ChangeEvent } from '../core/change.js';
import { errorMessage } from '../core/errors.js';
import { formatLsn, type Lsn } from '../core/lsn.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { PgoutputDecoder } from '../pgoutput/decoder.js';
import { parseReplicationFrame } from '../pgoutput/replication-frames.js';
import type { PgoutputMessage } from '../pgoutput/messages.js';
import type { OutgoingRecord, StreamProducer } from '../stream/stream.js';
import { ChangeBuilder } from './change-builder.js';
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
  private failure: Error | undefined;
  private failed!: (err: Error) => void;
  private drained: (() => void) | undefined;

  constructor(
    private readonly replication: ReplicationSource,
    private readonly producer: StreamProducer,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly options: CaptureOptions,
  ) {
    this.builder = new ChangeBuilder(options.source);
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
      if (msg.tag === 'commit') {
        this.pendingPosition = msg.endLsn;
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
      this.metrics.captured.inc({ table: (this.pending[i] as ChangeEvent).table });
    }
  }

  private scheduleFlush(): void {
    if (this.pending.length >= this.options.batchSize) this.flush();
    else if (this.flushTimer === undefined && (this.pending.length > 0 || this.pendingPosition !== undefined)) {
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
      for (const record of this.spill.replay(xid)) {
        if (this.stopping || this.failure) return; // not confirmed: the server resends it
        this.addChanges(decoder.decodeInStream(record.subarray(8)), record.readBigUInt64BE(0));
        if (this.pending.length >= this.options.batchSize) {
          this.flush();
          await this.windowOpen();
        }
      }
      this.addChanges({ tag: 'commit', flags: 0, commitLsn, endLsn, commitTime }, endLsn);
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
      records[i] = { key: partitionKeyOf(e), value: Buffer.from(JSON.stringify(e)) };
    }
    if (this.inFlight.length >= this.options.maxInFlight) this.setPaused('window', true);
    this.producer.publish(records).then(
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
    if (advanced) this.metrics.captureLsn.set(Number(this.confirmed));
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
