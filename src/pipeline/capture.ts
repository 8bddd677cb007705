import { partitionKeyOf, type ChangeEvent } from '../core/change.js';
import { errorMessage } from '../core/errors.js';
import { formatLsn, type Lsn } from '../core/lsn.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { PgoutputDecoder } from '../pgoutput/decoder.js';
import { parseReplicationFrame } from '../pgoutput/replication-frames.js';
import type { OutgoingRecord, StreamProducer } from '../stream/stream.js';
import { ChangeBuilder } from './change-builder.js';

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
  private paused = false;
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
    }
  }

  private async drain(failedPromise: Promise<never>): Promise<void> {
    this.replication.pause();
    this.flush();
    if (!this.inFlight.every((b) => b.done)) {
      await Promise.race([new Promise<void>((resolve) => (this.drained = resolve)), failedPromise]);
    }
    this.sendStatus(false);
    this.log.info({ confirmed: formatLsn(this.confirmed) }, 'capture drained');
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    try {
      const frame = parseReplicationFrame(chunk);
      if (frame.tag === 'keepalive') {
        if (frame.replyRequested) this.sendStatus(false);
        return;
      }
      const msg = this.decoder.decode(chunk, frame.dataOffset);
      const before = this.pending.length;
      this.builder.handle(msg, frame.dataStart, this.pending);
      for (let i = before; i < this.pending.length; i++) {
        this.metrics.captured.inc({ table: (this.pending[i] as ChangeEvent).table });
      }
      if (msg.tag === 'commit') {
        this.pendingPosition = msg.endLsn;
      } else if (msg.tag === 'message' && !msg.transactional && !this.builder.inTransaction) {
        // A heartbeat outside any transaction: everything before it has been seen.
        this.pendingPosition = msg.lsn;
      }
      if (this.pending.length >= this.options.batchSize) this.flush();
      else if (this.flushTimer === undefined && (this.pending.length > 0 || this.pendingPosition !== undefined)) {
        this.flushTimer = setTimeout(() => this.flush(), this.options.batchWaitMs);
      }
    } catch (err) {
      this.failed(err instanceof Error ? err : new Error(String(err)));
    }
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
    if (this.inFlight.length >= this.options.maxInFlight && !this.paused) {
      this.paused = true;
      this.replication.pause();
    }
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
    if (this.paused && this.inFlight.length < this.options.maxInFlight) {
      this.paused = false;
      this.replication.resume();
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
