/**
 * A member of a NATS consumer group. NATS has no membership protocol, so the members of a
 * group share the partitions through leases in the positions bucket (group-membership.ts):
 * start two consumers of a group and each reads half the partitions; when one stops or dies
 * (no heartbeat for the session timeout) the other takes its partitions over, starting them
 * from `startPositions` (the sink's positions), else the committed ones. Each held partition
 * has a reader (partition-reader.ts) feeding one shared buffer that poll() drains.
 *
 * Committed positions live in the KV bucket, not in the consumers' ack floors, because:
 * - startPositions and seek must move a reader without touching the group's committed
 *   position (as on Kafka and the embedded log), and JetStream (2.9) can reposition a
 *   consumer only by deleting and recreating it, which resets its ack floor;
 * - after a crash the next reader must get the uncommitted records at once, not after
 *   `ack_wait` when the server would redeliver them;
 * - a reader that polls without committing must not stall at `max_ack_pending`.
 */
import { Events, type JetStreamManager, type KV, type NatsConnection, type Status } from 'nats';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import type { BrokerClients } from '../common/broker-stream.js';
import { ConsumerGuard } from '../common/consumer-guard.js';
import { DEFAULT_BUFFER_RECORDS, RecordBuffer } from '../record-buffer.js';
import type { ConsumerOptions, PollOptions, StreamConsumer, StreamRecord } from '../stream.js';
import { DeliveryTracker } from './delivery-tracker.js';
import { GroupMembership, type MembershipChange } from './group-membership.js';
import { JS_STREAM_NOT_FOUND, apiErrorCode, natsError } from './nats-errors.js';
import { natsName, partitionStreamName, positionsBucketName } from './nats-names.js';
import type { NatsStreamOptions } from './nats-stream.js';
import { PartitionReader, type ReaderHost } from './partition-reader.js';
import type { ObjectBucket } from './claim-check.js';

const DEFAULT_FETCH_BATCH = 1000;
const DEFAULT_MAX_DELIVER = 5;

/** What a consumer uses of its stream. */
export interface NatsConsumerContext {
  jsm: JetStreamManager;
  nc: NatsConnection;
  kv: KV;
  opts: NatsStreamOptions;
  clients: BrokerClients;
  /** The topic's object store: the values of records over max_payload (claim-check.ts). */
  objects: ObjectBucket;
}

export class NatsConsumer implements StreamConsumer, ReaderHost {
  /**
   * max_deliver (see delivery-tracker.ts) blames the records of a partition's first poll
   * after a start for a death of apply, so nothing else may be read and decoded while they
   * are applied, and they are never handed out by a poll that reads ahead: a next batch
   * dying in its decoding while they are applied would be blamed on them.
   */
  private handedFirst = false;
  /** The last poll read ahead and left out a partition's first records, buffered and waiting for a poll that does not. */
  private leftFirst = false;
  readonly buffer = new RecordBuffer();
  readonly jsm: JetStreamManager;
  readonly nc: NatsConnection;
  readonly objects: ObjectBucket;
  readonly durable: string;
  readonly perPartition: number;
  readonly fetchBatch: number;
  private readonly readers: PartitionReader[];
  private assigned: readonly number[] = Object.freeze([]);
  private readonly kv: KV;
  private readonly membership: GroupMembership;
  private readonly deliveries: DeliveryTracker;
  private readonly guard: ConsumerGuard;
  private membershipTimer: NodeJS.Timeout | undefined;
  /** The running membership round; rounds never overlap. */
  private round: Promise<void> = Promise.resolve();
  private options: ConsumerOptions = {};
  private spaceWaiters: (() => void)[] = [];
  /** Connections lost so far (see ReaderHost.disconnects). */
  disconnects = 0;
  private readonly statuses: AsyncIterable<Status> & { stop(): void };

  constructor(
    private readonly context: NatsConsumerContext,
    readonly groupId: string,
  ) {
    const { opts } = context;
    this.jsm = context.jsm;
    this.nc = context.nc;
    this.objects = context.objects;
    this.kv = context.kv;
    this.durable = natsName(groupId);
    this.membership = new GroupMembership(this.kv, this.durable, opts.partitions, opts.membership);
    this.deliveries = new DeliveryTracker(this.kv, this.durable, opts.maxDeliver ?? DEFAULT_MAX_DELIVER);
    this.guard = new ConsumerGuard('NATS', opts.partitions, () => this.assigned);
    this.readers = Array.from({ length: opts.partitions }, (_, p) => new PartitionReader(this, p, partitionStreamName(opts.topic, p)));
    this.fetchBatch = opts.fetchBatch ?? DEFAULT_FETCH_BATCH;
    this.perPartition = Math.max(this.fetchBatch, Math.ceil((opts.bufferRecords ?? DEFAULT_BUFFER_RECORDS) / opts.partitions));
    this.statuses = this.nc.status() as AsyncIterable<Status> & { stop(): void };
    void this.countDisconnects();
  }

  private async countDisconnects(): Promise<void> {
    for await (const s of this.statuses) if (s.type === Events.Disconnect) this.disconnects++;
  }

  /** Joins the group and starts reading the partitions of this member's share that are free. */
  async start(options: ConsumerOptions): Promise<void> {
    this.options = options;
    // The first round's errors (JetStream, startPositions) fail consumer().
    await this.membershipRound(true);
    this.membershipTimer = setInterval(() => {
      this.round = this.round.then(() => this.watched(this.membershipRound(false)));
    }, this.membership.interval);
  }

  assignment(): readonly number[] {
    return this.assigned;
  }

  /**
   * Apply may read ahead unless the last poll handed out a partition's first records after a
   * start, or left them out (it read ahead): the poll after the batch is applied takes them.
   */
  get readAhead(): boolean {
    return !this.handedFirst && !this.leftFirst;
  }

  poll(maxRecords: number, maxWaitMs: number, options: PollOptions = {}): Promise<StreamRecord[]> {
    const ahead = options.ahead === true;
    let expired = false;
    return this.guard.poll(
      maxWaitMs,
      async () => {
        // Near the session timeout without a heartbeat, the others may already read our
        // partitions: hand out nothing until a heartbeat gets through (or the leases are gone).
        expired = this.membership.expired();
        if (expired) return [];
        const out = await this.take(maxRecords, ahead);
        if (out.length > 0) this.handedOut(out);
        return out;
      },
      (remaining) => (expired ? new Promise((r) => setTimeout(r, Math.min(200, remaining))) : this.buffer.wait(remaining)),
    );
  }

  seek(partition: number, offset: bigint): void {
    this.guard.checkSeek(partition, offset);
    this.rewind(partition, offset);
  }

  async commit(positions: ReadonlyMap<number, bigint>): Promise<void> {
    // A partition handed to another member since it was polled is that member's to commit.
    // An expired member may have lost some of its leases without knowing yet (see poll()):
    // a position it stored would move the new reader's, which started below it, past
    // records that reader has not applied.
    const checked = this.guard.owned(positions);
    const owned = this.membership.expired() ? [] : checked;
    try {
      await Promise.all(owned.map(([p, offset]) => this.kv.put(`${this.durable}.${p}`, offset.toString())));
    } catch (err) {
      throw natsError(err, `committing positions of group ${this.groupId}`);
    }
  }

  async committed(): Promise<Map<number, bigint>> {
    try {
      const entries = await Promise.all(this.readers.map((r) => this.kv.get(`${this.durable}.${r.partition}`)));
      const result = new Map<number, bigint>();
      entries.forEach((e, p) => {
        if (e !== null && e.operation === 'PUT') result.set(p, BigInt(e.string()));
      });
      return result;
    } catch (err) {
      throw natsError(err, `reading committed positions of group ${this.groupId}`);
    }
  }

  async close(): Promise<void> {
    if (!this.guard.close()) return;
    clearInterval(this.membershipTimer);
    this.statuses.stop();
    for (const r of this.readers) r.halt();
    this.wakeLoops();
    this.buffer.wake();
    await Promise.allSettled(this.readers.map((r) => r.stopped()));
    await this.round.catch(() => undefined);
    this.buffer.clear();
    await this.deliveries.closedCleanly();
    // Hand the partitions over now rather than after the session timeout.
    await this.membership.leave().catch(() => undefined);
    this.context.clients.delete(this);
  }

  isClosed(): boolean {
    return this.guard.isClosed;
  }

  fail(err: SynclineError): void {
    this.guard.fail(err);
    this.buffer.wake();
  }

  wakeLoops(): void {
    const waiters = this.spaceWaiters;
    this.spaceWaiters = [];
    for (const w of waiters) w();
  }

  waitForSpace(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.spaceWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * A round that has not ended after ten session timeouts is given up on: a nats.js call that
   * never settles (one was seen after connection cuts) would otherwise hold it, every later
   * round queued behind it and close() for good, the member expired and handing out nothing
   * without an error. The consumer fails (retriable: apply opens another one).
   */
  private watched(round: Promise<void>): Promise<void> {
    const limit = 10 * this.membership.sessionTimeout;
    let timer: NodeJS.Timeout | undefined;
    const stalled = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.fail(new SynclineError('NATS_MEMBERSHIP_STALLED', `NATS: a membership round of group ${this.groupId} has not ended within ${limit} ms`, { retriable: true }));
        resolve();
      }, limit);
    });
    return Promise.race([round, stalled]).finally(() => clearTimeout(timer));
  }

  /**
   * One membership round: heartbeat, then stop reading what this member lost or must hand
   * over (releasing a lease only after its reader stopped), then start reading what it took.
   */
  private async membershipRound(first: boolean): Promise<void> {
    if (this.guard.isClosed) return;
    let change: MembershipChange;
    try {
      change = await this.membership.tick();
    } catch (err) {
      if (first) throw err;
      // A bucket that is gone (deleted by hand) does not come back: the member would lose
      // its leases below and poll nothing, forever, without a word.
      if (await this.bucketGone()) {
        const bucket = positionsBucketName(this.context.opts.topic);
        this.fail(
          new PrerequisiteError(
            `NATS: the KV bucket ${bucket} of group ${this.groupId} (committed positions, partition leases) was deleted`,
            'restart the readers of the topic: opening the stream creates the bucket again, and partitions start at the sink\'s positions',
          ),
        );
        return;
      }
      // Without heartbeats for a session timeout the others consider this member gone.
      if (this.membership.expired()) for (const p of this.membership.forgetAll()) await this.deactivate(p);
      return;
    }
    // Every lost partition leaves the assignment before the first one is stopped: poll() and
    // commit() run while they are, and must not hand out or store the later ones.
    this.assigned = Object.freeze(this.assigned.filter((p) => !change.lost.includes(p)));
    for (const p of change.lost) await this.deactivate(p);
    for (const p of change.revoke) {
      await this.deactivate(p);
      await this.membership.release(p).catch(() => undefined);
    }
    if (change.acquired.length === 0 || this.guard.isClosed) return;
    try {
      await this.activate(change.acquired);
    } catch (err) {
      const e = err instanceof SynclineError ? err : natsError(err, `starting to read partitions ${change.acquired.join(',')} as group ${this.groupId}`);
      for (const p of change.acquired) await this.membership.release(p).catch(() => undefined);
      if (first) throw e;
      this.fail(e);
    }
  }

  /** True when the positions bucket's stream is missing; false when it exists or that cannot be told. */
  private async bucketGone(): Promise<boolean> {
    try {
      await this.jsm.streams.info(`KV_${positionsBucketName(this.context.opts.topic)}`);
      return false;
    } catch (err) {
      return apiErrorCode(err) === JS_STREAM_NOT_FOUND;
    }
  }

  /** Positions the readers of newly leased partitions (startPositions, else committed) and starts them. */
  private async activate(partitions: readonly number[]): Promise<void> {
    const committed = await this.committed();
    const start = this.options.startPositions ? await this.options.startPositions(partitions) : new Map<number, bigint>();
    const readers = partitions.map((p) => this.readers[p] as PartitionReader);
    await Promise.all(
      readers.map(async (r) => {
        const asked = start.get(r.partition) ?? committed.get(r.partition);
        const offset = asked ?? 0n;
        await this.deliveries.started(r.partition, offset);
        await r.positionAt(offset, asked !== undefined);
      }),
    );
    for (const r of readers) {
      if (this.guard.isClosed) return;
      r.start();
    }
    this.assigned = Object.freeze([...new Set([...this.assigned, ...partitions])].sort((a, b) => a - b));
  }

  /** Stops reading a partition; nothing of it comes out of poll() afterwards. */
  private async deactivate(partition: number): Promise<void> {
    this.assigned = Object.freeze(this.assigned.filter((p) => p !== partition));
    // Handed over, not died on: its deliveries do not count.
    await this.deliveries.handedOver(partition);
    await (this.readers[partition] as PartitionReader).stop();
  }

  /** Moves a partition's reader to `offset`: nothing of the old position comes out of poll() from now on. */
  private rewind(partition: number, offset: bigint): void {
    this.deliveries.stopped(partition);
    (this.readers[partition] as PartitionReader).seek(offset);
    this.wakeLoops();
  }

  /**
   * Takes buffered records for poll(). A partition's first poll after its reader started is
   * limited by its delivery history (delivery-tracker.ts), recorded before it is handed out,
   * and left for a poll that does not read ahead.
   */
  private async take(maxRecords: number, ahead: boolean): Promise<StreamRecord[]> {
    const out: StreamRecord[] = [];
    const normal: number[] = [];
    this.handedFirst = false;
    this.leftFirst = false;
    for (const p of this.assigned) {
      const first = this.deliveries.first(p);
      if (!first) {
        normal.push(p);
        continue;
      }
      if (ahead) {
        this.leftFirst ||= this.buffer.count(p) > 0;
        continue;
      }
      if (this.buffer.count(p) === 0 || out.length >= maxRecords) continue;
      const records = this.buffer.take([p], Math.min(first.cap, maxRecords - out.length));
      if (first.exhausted && records[0] !== undefined) records[0].deliveries = first.count;
      try {
        await this.deliveries.handed(p, records.length);
      } catch (err) {
        // Not recorded: nothing is handed out, the records are read again from the stream
        // (unless the partition was handed away meanwhile: its next lease positions it).
        if (this.assigned.includes(p)) this.rewind(p, first.offset);
        throw natsError(err, `recording deliveries of ${this.readers[p]?.stream ?? p}`);
      }
      // Handed to another member while the delivery was being recorded: not ours any more.
      if (this.assigned.includes(p)) {
        out.push(...records);
        this.handedFirst ||= records.length > 0;
      }
    }
    // Partitions revoked while a delivery was being recorded are left out.
    if (out.length < maxRecords) out.push(...this.buffer.take(normal.filter((p) => this.assigned.includes(p)), maxRecords - out.length));
    return out;
  }

  /** Acknowledges, per partition, the last message handed out (AckPolicy.All covers the earlier ones). */
  private handedOut(records: readonly StreamRecord[]): void {
    const last = new Map<number, bigint>();
    for (const r of records) last.set(r.partition, r.offset);
    for (const [p, offset] of last) (this.readers[p] as PartitionReader).handedOut(offset);
    this.wakeLoops();
  }
}
