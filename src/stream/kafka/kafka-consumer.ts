/**
 * One member of a Kafka consumer group, over kafkajs's consumer:
 * - poll() over kafkajs's push-based `eachBatch`: fetched batches go into a bounded buffer;
 *   past `bufferRecords` the batch handler waits for poll() to drain half of it; if that takes
 *   longer than FULL_WAIT_MS the assigned partitions are paused (kafkajs keeps heartbeating),
 *   and resumed when poll() has drained half of it.
 * - No auto-commit: commit() writes the given positions to the group; kafkajs's own
 *   "resolved offsets" only move its fetch position.
 * - Every assignment (first join and each rebalance) pauses the new partitions, asks
 *   `startPositions`, seeks, and only then resumes them; everything buffered is dropped at
 *   each rebalance, so records of revoked partitions never come out of poll() afterwards.
 * - An `exclusive` consumer first removes the members its group still lists (dead earlier
 *   instances), so that its join does not wait for their sessions to expire: group-cleanup.ts.
 */
import type { Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import { SynclineError } from '../../core/errors.js';
import type { BrokerClients } from '../common/broker-stream.js';
import { ConsumerGuard } from '../common/consumer-guard.js';
import { streamClosedError } from '../common/errors.js';
import { DEFAULT_BUFFER_RECORDS, RecordBuffer } from '../record-buffer.js';
import { RetentionGapError, type ConsumerOptions, type StreamConsumer, type StreamRecord } from '../stream.js';
import type { KafkaAdmin } from './kafka-admin.js';
import { removeGroupMembers } from './group-cleanup.js';
import { kafkaError } from './kafka-errors.js';
import type { KafkaStreamOptions } from './kafka-stream.js';

/**
 * How long a full buffer holds kafkajs's fetch loop before the partitions are paused: well
 * under any session timeout, since kafkajs sends no heartbeat while a batch is handled.
 */
const FULL_WAIT_MS = 1000;

/** How long each request of the group clean-up may take (see removeEarlierMembers). */
const CLEANUP_REQUEST_TIMEOUT_MS = 10_000;

/** What a consumer uses of its stream. */
export interface KafkaConsumerContext {
  kafka: Kafka;
  admin: KafkaAdmin;
  opts: KafkaStreamOptions;
  clients: BrokerClients;
}

/**
 * Partition states: assigned (by the group), ready (its start position is set), seek-pending
 * (a seek() waits for the next poll). A partition is fetched only when ready, not
 * seek-pending and the buffer is not full.
 */
export class KafkaConsumer implements StreamConsumer {
  private readonly consumer: Consumer;
  private readonly buffer = new RecordBuffer();
  private readonly highWater: number;
  private assigned: readonly number[] = Object.freeze([]);
  private readonly ready = new Set<number>();
  private readonly seeks = new Map<number, bigint>();
  /** Partitions we asked kafkajs to pause. */
  private readonly pausedByUs = new Set<number>();
  /** Offset the next buffered record of a partition must have, once known. */
  private readonly next = new Map<number, bigint>();
  private full = false;
  private generation = 0;
  private readonly guard: ConsumerGuard;
  private firstReady: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void };
  private readonly topic: string;
  private readonly opts: KafkaStreamOptions;
  private readonly admin: KafkaAdmin;

  constructor(
    private readonly context: KafkaConsumerContext,
    private readonly groupId: string,
    private readonly options: ConsumerOptions,
  ) {
    this.opts = context.opts;
    this.admin = context.admin;
    this.topic = this.opts.topic;
    this.highWater = this.opts.bufferRecords ?? DEFAULT_BUFFER_RECORDS;
    this.guard = new ConsumerGuard('Kafka', this.opts.partitions, () => this.assigned);
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined); // observed by start(); a later failure must not be unhandled
    this.firstReady = { promise, resolve, reject };
    this.consumer = context.kafka.consumer({
      groupId,
      allowAutoTopicCreation: false,
      sessionTimeout: this.opts.sessionTimeoutMs ?? 10_000,
      heartbeatInterval: 1000,
      maxWaitTimeInMs: 500,
      maxBytesPerPartition: this.opts.maxBytesPerPartition ?? 1024 * 1024,
      retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 10_000 },
    });
  }

  async start(): Promise<void> {
    const c = this.consumer;
    c.on(c.events.GROUP_JOIN, (e) => this.onJoin(e.payload.memberAssignment[this.topic] ?? []));
    c.on(c.events.REBALANCING, () => this.revokeAll());
    c.on(c.events.CRASH, (e) => {
      this.revokeAll();
      if (!e.payload.restart) this.fail(kafkaError(e.payload.error, `consuming ${this.topic} as group ${this.groupId}`));
    });
    if (this.options.exclusive) await this.removeEarlierMembers();
    try {
      await c.connect();
      await c.subscribe({ topics: [this.topic], fromBeginning: true });
      await c.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: 1,
        eachBatch: (payload) => this.onBatch(payload),
      });
    } catch (err) {
      throw kafkaError(err, `joining group ${this.groupId} on ${this.topic}`);
    }
    const timeoutMs = this.opts.joinTimeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new SynclineError('STREAM_JOIN_TIMEOUT', `Kafka: group ${this.groupId} got no assignment for ${this.topic} within ${timeoutMs} ms`, { retriable: true })),
        timeoutMs,
      );
    });
    try {
      await Promise.race([this.firstReady.promise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Removes the members the group lists before this one joins (see group-cleanup.ts). Best
   * effort: on failure the join goes on, and waits for their sessions as without it.
   */
  private async removeEarlierMembers(): Promise<void> {
    const report = this.options.onExclusive;
    try {
      const members = await this.admin.groupMembers(this.groupId);
      if (members.length === 0) return;
      const hosts = new Map(members.map((m) => [m.memberId, m.clientHost]));
      const removed = await removeGroupMembers(
        { brokers: this.opts.brokers, clientId: this.opts.clientId ?? 'syncline', connectTimeoutMs: 3000, requestTimeoutMs: CLEANUP_REQUEST_TIMEOUT_MS },
        this.groupId,
        [...hosts.keys()],
      );
      if (removed.length > 0) report?.({ removed: removed.map((m) => `${m}@${hosts.get(m) ?? '?'}`) });
    } catch (err) {
      report?.({ error: err instanceof Error ? err : new Error(String(err)) });
    }
  }

  assignment(): readonly number[] {
    return this.assigned;
  }

  poll(maxRecords: number, maxWaitMs: number): Promise<StreamRecord[]> {
    return this.guard.poll(
      maxWaitMs,
      async () => {
        if (this.seeks.size > 0) await this.applySeeks();
        const out = this.buffer.take(this.assigned, maxRecords);
        if (this.full && this.buffer.size <= this.highWater / 2) {
          this.full = false;
          this.syncPauses();
        }
        return out;
      },
      (remaining) => this.buffer.wait(remaining),
    );
  }

  seek(partition: number, offset: bigint): void {
    this.guard.checkSeek(partition, offset);
    // Applied (clamped to the retained range) by the next poll; until then nothing of the
    // partition is buffered or fetched.
    this.seeks.set(partition, offset);
    this.buffer.clear(partition);
    this.syncPauses();
  }

  async commit(positions: ReadonlyMap<number, bigint>): Promise<void> {
    const offsets = this.guard.owned(positions).map(([partition, offset]) => ({ topic: this.topic, partition, offset: offset.toString() }));
    if (offsets.length === 0) return;
    try {
      await this.consumer.commitOffsets(offsets);
    } catch (err) {
      throw kafkaError(err, `committing offsets of group ${this.groupId}`);
    }
  }

  committed(): Promise<Map<number, bigint>> {
    return this.admin.fetchCommitted(this.groupId);
  }

  async close(): Promise<void> {
    if (!this.guard.close()) return;
    this.revokeAll();
    this.firstReady.reject(streamClosedError('Kafka', 'consumer'));
    this.buffer.wake();
    this.context.clients.delete(this);
    try {
      // Leaves the group, so the partitions move to the other members at once.
      await this.consumer.disconnect();
    } catch (err) {
      throw kafkaError(err, 'disconnecting the consumer');
    }
  }

  private fail(err: SynclineError): void {
    this.guard.fail(err);
    this.firstReady.reject(err);
    this.buffer.wake();
  }

  /** Forgets the assignment and everything buffered (a rebalance started, or kafkajs restarts). */
  private revokeAll(): void {
    this.generation++;
    this.assigned = Object.freeze([]);
    this.ready.clear();
    this.seeks.clear();
    this.next.clear();
    this.buffer.clear();
    this.full = false;
  }

  /** GROUP_JOIN: runs synchronously inside kafkajs's join, before its first fetch. */
  private onJoin(partitions: readonly number[]): void {
    this.revokeAll();
    if (this.guard.isClosed) return;
    const generation = this.generation;
    const assigned = Object.freeze([...partitions].sort((a, b) => a - b));
    this.assigned = assigned;
    // kafkajs keeps pause state across rebalances, and loses it when it restarts after a
    // crash: start from "nothing paused" and pause every new partition until positioned.
    this.pausedByUs.clear();
    this.syncPauses();
    void this.position(generation, assigned).catch((err: unknown) => {
      if (generation === this.generation) this.fail(err instanceof SynclineError ? err : kafkaError(err, 'positioning assigned partitions'));
    });
  }

  private async position(generation: number, assigned: readonly number[]): Promise<void> {
    if (assigned.length > 0) {
      const wanted = this.options.startPositions ? await this.options.startPositions(assigned) : new Map<number, bigint>();
      if (generation !== this.generation || this.guard.isClosed) return;
      const fromSink = new Map<number, bigint>();
      for (const p of assigned) {
        const o = wanted.get(p);
        if (o !== undefined) fromSink.set(p, o);
      }
      if (fromSink.size < assigned.length) {
        // The others start at the group's committed offset. kafkajs would answer one below
        // the low watermark with the reset policy (the earliest record), skipping what
        // retention deleted without a word: check it here. A partition without one starts
        // at the earliest record (a new group), which loses nothing it ever had.
        const committed = await this.admin.fetchCommitted(this.groupId);
        if (generation !== this.generation || this.guard.isClosed) return;
        const fromGroup = new Map<number, bigint>();
        for (const p of assigned) {
          const o = committed.get(p);
          if (!fromSink.has(p) && o !== undefined) fromGroup.set(p, o);
        }
        if (fromGroup.size > 0) {
          await this.clamp(fromGroup); // throws RetentionGapError for an offset below the low watermark
          if (generation !== this.generation || this.guard.isClosed) return;
          for (const [p, o] of fromGroup) this.next.set(p, o);
        }
      }
      if (fromSink.size > 0) {
        const clamped = await this.clamp(fromSink);
        if (generation !== this.generation || this.guard.isClosed) return;
        for (const [p, o] of clamped) this.seekKafkajs(p, o);
      }
      for (const p of assigned) this.ready.add(p);
      this.syncPauses();
    }
    this.firstReady.resolve();
  }

  private async applySeeks(): Promise<void> {
    const generation = this.generation;
    const wanted = new Map(this.seeks);
    const clamped = await this.clamp(wanted);
    if (generation !== this.generation) return;
    for (const [p, o] of clamped) {
      // A newer seek() of the same partition during the lookup wins.
      if (this.seeks.get(p) !== wanted.get(p)) continue;
      this.seeks.delete(p);
      this.buffer.clear(p);
      this.seekKafkajs(p, o);
    }
    this.syncPauses();
  }

  /**
   * Keeps positions at most `high`: kafkajs answers an out-of-range fetch by committing the
   * group's default offset, which would overwrite the group's position. A position below
   * `low` is refused (RetentionGapError): retention deleted records from there on that this
   * group never consumed, and moving up to `low` would skip them silently.
   */
  private async clamp(positions: ReadonlyMap<number, bigint>): Promise<Map<number, bigint>> {
    const marks = await this.admin.watermarks();
    const out = new Map<number, bigint>();
    for (const [p, o] of positions) {
      const w = marks.get(p);
      if (w !== undefined && o < w.low) throw new RetentionGapError(`Kafka topic ${this.topic}`, p, o, w.low);
      out.set(p, w === undefined ? o : o > w.high ? w.high : o);
    }
    return out;
  }

  private seekKafkajs(partition: number, offset: bigint): void {
    this.next.set(partition, offset);
    this.consumer.seek({ topic: this.topic, partition, offset: offset.toString() });
  }

  /** Makes kafkajs's paused set match what the partitions' states want. */
  private syncPauses(): void {
    const pause: number[] = [];
    const resume: number[] = [];
    for (const p of this.assigned) {
      const want = this.guard.isClosed || this.full || !this.ready.has(p) || this.seeks.has(p);
      if (want && !this.pausedByUs.has(p)) pause.push(p);
      else if (!want && this.pausedByUs.has(p)) resume.push(p);
    }
    try {
      if (pause.length > 0) this.consumer.pause([{ topic: this.topic, partitions: pause }]);
      if (resume.length > 0) this.consumer.resume([{ topic: this.topic, partitions: resume }]);
    } catch {
      // kafkajs is between a crash and its restart; the next GROUP_JOIN resynchronizes.
      return;
    }
    for (const p of pause) this.pausedByUs.add(p);
    for (const p of resume) this.pausedByUs.delete(p);
  }

  private async onBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const p = batch.partition;
    // Not resolving the offset leaves kafkajs's fetch position where it was.
    if (this.guard.isClosed || payload.isStale() || !this.ready.has(p) || this.seeks.has(p)) return;
    const messages = batch.messages;
    const records: StreamRecord[] = [];
    const expected = this.next.get(p);
    const firstOffset = messages[0] === undefined ? undefined : BigInt(messages[0].offset);
    if (expected !== undefined && firstOffset !== undefined && firstOffset > expected && !this.opts.compacted) {
      // Offsets of a time-retained topic are contiguous: a jump means the fetch position fell
      // below the low watermark (retention deleted what this member had not read yet) and
      // kafkajs reset it to the earliest record. Refuse rather than skip.
      const low = (await this.admin.watermarks()).get(p)?.low;
      if (low !== undefined && low > expected) {
        this.fail(new RetentionGapError(`Kafka topic ${this.topic}`, p, expected, low));
        return;
      }
    }
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i];
      if (m === undefined) continue;
      const offset = BigInt(m.offset);
      if (expected !== undefined && offset < expected) continue; // already buffered or polled
      records.push({
        partition: p,
        offset,
        key: m.key === null ? '' : m.key.toString('utf8'),
        value: m.value ?? Buffer.alloc(0),
        timestamp: Number(m.timestamp),
      });
    }
    payload.resolveOffset(batch.lastOffset());
    const last = records[records.length - 1];
    if (last === undefined) return;
    this.next.set(p, last.offset + 1n);
    this.buffer.push(p, records);
    if (this.full || this.buffer.size < this.highWater) return;
    // Full: hold kafkajs's fetch loop here until poll() has taken half. Pausing instead costs
    // more than it saves while apply keeps up: kafkajs drops the rest of the fetched batches
    // of paused partitions (fetched again later) and, with every partition paused, sleeps
    // `maxWaitTimeInMs` before it looks again. Only when poll() does not drain within
    // FULL_WAIT_MS (apply is stuck or slow) are the partitions paused, so that kafkajs keeps
    // heartbeating while nothing is fetched.
    const generation = this.generation;
    const drained = await this.buffer.room(this.highWater / 2, FULL_WAIT_MS);
    if (drained || generation !== this.generation || this.guard.isClosed) return;
    this.full = true;
    this.syncPauses();
  }
}
