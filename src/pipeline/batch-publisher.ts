import { partitionKeyOf, type ChangeEvent } from '../core/change.js';
import { errorMessage } from '../core/errors.js';
import type { PipelineEvents } from '../core/events.js';
import type { Lsn } from '../core/lsn.js';
import type { SchemaVersionRegistry } from '../core/schema-version.js';
import type { Logger } from '../log/logger.js';
import type { OutgoingRecord, StreamProducer } from '../stream/stream.js';
import { ChangeJsonWriter } from './change-json.js';
import { Checkpoint, type InFlightBatch } from './checkpoint.js';
import { recordIdOf, type RecordEncoder } from './typed-records.js';

export interface BatchPublisherOptions {
  batchSize: number;
  batchWaitMs: number;
  maxInFlight: number;
  /** The slot's confirmed position at start. */
  startLsn: Lsn;
  /** A batch is acknowledged only once the `_schema_version`s of its changes are stored. */
  schemaVersions?: SchemaVersionRegistry;
  /** A typed `stream.format` (see typedRecords); absent: the change events as JSON. */
  encode?: RecordEncoder;
}

/** What the publisher tells capture. */
export interface PublisherHooks {
  /** The in-flight window is full (true: stop reading the source) or has room again (false). */
  windowFull(full: boolean): void;
  /** The position that may be confirmed to the source advanced to `lsn`. */
  confirmed(lsn: Lsn): void;
  /** A publish failed: capture must stop (nothing unpublished was confirmed). */
  failed(err: Error): void;
  /** Some changes still wait for values from the source: nothing is published until they have them. */
  filling(): boolean;
  /** `e` may still be rewritten before it is published (see UnchangedValues.mayChange). */
  mayChange(e: ChangeEvent): boolean;
}

/**
 * Capture's way into the stream: changes are published in batches (count or deadline,
 * whichever first), with up to `maxInFlight` publishes outstanding, and the positions the
 * batches reach are confirmed over the durable prefix only (see Checkpoint).
 */
export class BatchPublisher {
  /**
   * The pending batch's changes still held as events. With the JSON format the batch's
   * first changes are written as they come (`written`); from the first that may still change
   * (see add) on, they wait here, in order, and are written at the flush.
   */
  private pending: ChangeEvent[] = [];
  /** The JSON format: the pending batch's changes written so far. */
  private written: JsonBatch | undefined;
  /** How many changes the last batch published held. */
  private lastBatchChanges = 16;
  private pendingPosition: Lsn | undefined;
  private readonly checkpoint: Checkpoint;
  private flushTimer: NodeJS.Timeout | undefined;
  /**
   * Everyone waiting for room: capture replaying a streamed transaction and the snapshot
   * runner handing over a keyless table's rows may wait at once (one slot lost the first:
   * it never resolved, and capture or the snapshot hung).
   */
  private windowWaiters: (() => void)[] = [];
  private drained: (() => void) | undefined;
  /** Typed formats: resolves once the last batch was encoded and handed to the producer. */
  private encoding: Promise<void> = Promise.resolve();

  constructor(
    private readonly producer: StreamProducer,
    private readonly events: PipelineEvents,
    private readonly log: Logger,
    private readonly options: BatchPublisherOptions,
    private readonly hooks: PublisherHooks,
  ) {
    this.checkpoint = new Checkpoint(options.startLsn);
  }

  /** The position that may be confirmed to the source. */
  get confirmed(): Lsn {
    return this.checkpoint.confirmed;
  }

  /** A full batch is waiting. */
  get full(): boolean {
    return this.pendingCount >= this.options.batchSize;
  }

  /**
   * Adds a change to the pending batch. With the JSON format it is written at once unless it
   * may still change before the flush (UnchangedValues may fill its unchanged columns or
   * resolve its DELETE), and every change after such a one (the batch keeps their order). Why: an event
   * written at once is garbage right away, where one held until the flush survives a
   * young-generation GC or two, which copies it each time (a batch's events were most of
   * what those GCs copied).
   */
  add(e: ChangeEvent): void {
    if (this.options.encode === undefined && this.pending.length === 0 && !this.hooks.mayChange(e)) {
      // Sized like the last batch (the buffer grows if needed): a batch cut by its deadline
      // may hold a handful of changes, and a buffer sized for batch_size would be thrown away.
      (this.written ??= new JsonBatch(this.lastBatchChanges)).add(e);
    } else this.pending.push(e);
  }

  private get pendingCount(): number {
    return this.pending.length + (this.written?.count ?? 0);
  }

  /** Everything up to `lsn` has been seen: the next batch confirms it once durable. */
  reach(lsn: Lsn): void {
    // Never backwards: a keepalive may carry the end of a skipped transaction (pgoutput's
    // progress updates) after a commit already reached further.
    if (this.pendingPosition === undefined || lsn > this.pendingPosition) this.pendingPosition = lsn;
  }

  /** Publishes a full batch now, else sets the deadline of what is pending. */
  schedule(): void {
    const count = this.pendingCount;
    if (count >= this.options.batchSize) this.flush();
    else if (this.flushTimer === undefined && (count > 0 || this.pendingPosition !== undefined)) {
      this.flushTimer = setTimeout(() => this.flush(), this.options.batchWaitMs);
    }
  }

  /** Publishes what is pending (unless changes wait for values from the source). */
  flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    // Changes waiting for values from the source go out once they have them.
    if (this.hooks.filling()) return;
    const changes = this.pendingCount;
    if (changes === 0 && this.pendingPosition === undefined) return;
    const events = this.pending;
    const written = this.written;
    const batch = this.checkpoint.begin(this.pendingPosition);
    this.pending = [];
    this.written = undefined;
    this.pendingPosition = undefined;
    if (changes === 0) {
      this.complete(batch);
      return;
    }
    if (this.checkpoint.outstanding >= this.options.maxInFlight) this.hooks.windowFull(true);
    let published: Promise<void>;
    if (this.options.encode) published = this.publishEncoded(events, this.options.encode);
    else {
      const json = written ?? new JsonBatch(events.length);
      for (const e of events) json.add(e);
      published = this.producer.publish(json.records());
    }
    this.lastBatchChanges = changes;
    const versionsStored = this.options.schemaVersions?.stored();
    // Only the count is kept: the events themselves are garbage once serialized, not kept
    // alive (and copied by every young-generation GC) until the stream has synced them.
    (versionsStored ? Promise.all([published, versionsStored]) : published).then(
      () => {
        this.events.emit('capture:batch:published', { changes });
        this.complete(batch);
      },
      (err: unknown) => {
        this.log.error({ err: errorMessage(err) }, 'publish failed; the slot stays at the last acknowledged position');
        this.hooks.failed(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  /**
   * Encodes a batch (a schema is registered the first time its definition is used) and
   * publishes it. Batches are handed to the producer in order: the next one is encoded only
   * after this one was handed over, and none is once an encoding failed (a registry refusing
   * a schema stops capture; nothing after it is published or confirmed).
   */
  private publishEncoded(events: ChangeEvent[], encode: RecordEncoder): Promise<void> {
    const handed = this.encoding.then(() => encode(events)).then((records) => ({ stored: this.producer.publish(records) }));
    this.encoding = handed.then(() => undefined);
    // Reported through the batch's own promise; not an unhandled rejection meanwhile.
    this.encoding.catch(() => undefined);
    return handed.then((h) => h.stored);
  }

  /** Resolves once every batch published so far is durable. */
  whenDurable(): Promise<void> {
    return this.checkpoint.whenDurable();
  }

  /** Resolves when fewer than `maxInFlight` publishes are outstanding. */
  windowOpen(): Promise<void> {
    if (this.checkpoint.outstanding < this.options.maxInFlight) return Promise.resolve();
    return new Promise((resolve) => this.windowWaiters.push(resolve));
  }

  /** Resolves once nothing is outstanding (after a last flush). */
  drain(): Promise<void> {
    if (this.checkpoint.outstanding === 0) return Promise.resolve();
    return new Promise<void>((resolve) => (this.drained = resolve));
  }

  /** Stops the deadline timer. */
  close(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
  }

  /** A batch is stored: the confirmed position may advance (see Checkpoint), the window opens. */
  private complete(batch: InFlightBatch): void {
    if (this.checkpoint.complete(batch)) {
      const confirmed = this.checkpoint.confirmed;
      this.events.emit('capture:confirmed', { lsn: confirmed });
      this.hooks.confirmed(confirmed);
    }
    if (this.checkpoint.outstanding < this.options.maxInFlight) {
      this.hooks.windowFull(false);
      for (const waiter of this.windowWaiters.splice(0)) waiter();
    }
    if (this.checkpoint.outstanding === 0 && this.drained) this.drained();
  }
}

/**
 * `stream.format: json`: change events as JSON, each keyed by its partition key. The values
 * are written into one buffer for the batch (see ChangeJsonWriter) and each record's value
 * is its slice: the same bytes as `Buffer.from(JSON.stringify(e))`. Of an event only what
 * its record needs is kept (key, source, commit LSN, seq), not the event.
 */
class JsonBatch {
  private readonly writer: ChangeJsonWriter;
  private readonly ends: number[] = [];
  private readonly keys: string[] = [];
  private readonly sources: string[] = [];
  private readonly commitLsns: string[] = [];
  private readonly seqs: number[] = [];

  constructor(expectedChanges: number) {
    this.writer = new ChangeJsonWriter(expectedChanges * EXPECTED_EVENT_BYTES);
  }

  get count(): number {
    return this.ends.length;
  }

  add(e: ChangeEvent): void {
    this.ends.push(this.writer.write(e));
    this.keys.push(partitionKeyOf(e));
    this.sources.push(e.source);
    this.commitLsns.push(e.commit_lsn);
    this.seqs.push(e.seq);
  }

  /** The records, sliced once all is written: the buffer may have grown (moved) meanwhile. */
  records(): OutgoingRecord[] {
    const bytes = this.writer.bytes;
    const n = this.ends.length;
    const records = new Array<OutgoingRecord>(n);
    let start = 0;
    for (let i = 0; i < n; i++) {
      const end = this.ends[i] as number;
      records[i] = new ChangeRecord(this.keys[i] as string, bytes.subarray(start, end), this.sources[i] as string, this.commitLsns[i] as string, this.seqs[i] as number);
      start = end;
    }
    return records;
  }
}

/**
 * A change's stream record. Its id (recordIdOf) is made only when read: only brokers that
 * deduplicate by it (NATS) do, and it would otherwise be one more string per change kept
 * until the batch is stored.
 */
class ChangeRecord implements OutgoingRecord {
  constructor(
    readonly key: string,
    readonly value: Buffer,
    private readonly source: string,
    private readonly commitLsn: string,
    private readonly seq: number,
  ) {}

  get id(): string {
    return recordIdOf({ source: this.source, commit_lsn: this.commitLsn, seq: this.seq });
  }
}

/** A first guess of a change's JSON size, so that a batch's buffer rarely grows. */
const EXPECTED_EVENT_BYTES = 512;
