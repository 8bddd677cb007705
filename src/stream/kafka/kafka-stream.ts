/**
 * The Kafka stream (`stream.broker: kafka`): one topic, `partitions` partitions, through
 * kafkajs.
 *
 * Why kafkajs 2.2.4 and not @platformatic/kafka (the other pure-JS client; 2.12 on the
 * registry today, 1.x when this was chosen): kafkajs is already a dependency, pure
 * JavaScript (no native build, unlike @confluentinc/kafka-javascript over librdkafka), runs
 * on Node 20, and has what this adapter needs — the idempotent producer (acks=all, producer
 * id + sequence numbers), consumer groups with explicit offset commits, seek/pause/resume
 * and admin calls for topic creation, watermarks and offsets by timestamp. It is by far the
 * most used Kafka client for Node (~9.6M downloads a month against ~55k) and its broker
 * error table carries the `retriable` flag we map from. Its cost: no release since 2022,
 * so it speaks the protocol versions of Kafka 2.x; scripts/kafka.sh runs a 3.9 broker,
 * which still accepts them (Kafka 4.0 dropped some, KIP-896).
 *
 * Mapping onto the Stream contract:
 * - Partition choice is ours (`partitionFor`, FNV-1a), passed explicitly with every
 *   message, so a key lands in the same partition number as on the embedded stream.
 * - Topics are created with `message.timestamp.type=LogAppendTime`: record timestamps are
 *   the broker's append time, as `StreamRecord.timestamp` and `offsetsForTime` promise.
 * - publish(): group commit. While one produce request is in flight, later publishes queue
 *   and go out together in the next one, so records are stored in call order and many small
 *   publishes share a round trip. kafkajs's idempotent producer serializes requests per
 *   broker but takes its lock after asynchronous metadata steps, so concurrent `send` calls
 *   are not guaranteed to reach the broker in call order: the queue here is what keeps order.
 * - poll() over kafkajs's push-based `eachBatch`: fetched batches go into a bounded buffer;
 *   past `bufferRecords` the assigned partitions are paused (kafkajs keeps heartbeating), and
 *   resumed when poll() has drained half of it.
 * - No auto-commit: commit() writes the given positions to the group; kafkajs's own
 *   "resolved offsets" only move its fetch position.
 * - Every assignment (first join and each rebalance) pauses the new partitions, asks
 *   `startPositions`, seeks, and only then resumes them; everything buffered is dropped at
 *   each rebalance, so records of revoked partitions never come out of poll() afterwards.
 */
import { Kafka, Partitioners, logLevel, type Admin, type Consumer, type EachBatchPayload, type LogEntry, type Producer } from 'kafkajs';
import { partitionFor } from '../../core/change.js';
import { ConfigError, SynclineError } from '../../core/errors.js';
import { RecordBuffer } from '../record-buffer.js';
import { RetentionGapError, type ConsumerOptions, type OutgoingRecord, type Stream, type StreamConsumer, type StreamProducer, type StreamRecord } from '../stream.js';
import { kafkaError } from './kafka-errors.js';

export interface KafkaStreamOptions {
  /** `host:port` of one or more brokers. */
  brokers: readonly string[];
  topic: string;
  /** Partition count of the topic; an existing topic must have exactly this many. */
  partitions: number;
  /** `retention.ms` of a topic this creates. Default 168 (7 days). */
  retentionHours?: number;
  /**
   * Create the topic with `cleanup.policy=compact` instead of time retention: the latest
   * record per key is kept forever, a record with an empty value deletes its key (the
   * dead-letter topic, whose entries must wait for a person however long that takes).
   */
  compacted?: boolean;
  /** Replication factor of a topic this creates. Default: the broker's default. */
  replicationFactor?: number;
  clientId?: string;
  /** Records a consumer buffers before it pauses fetching. Default 10000. */
  bufferRecords?: number;
  /** Bytes per partition and fetch. Default 1 MiB. */
  maxBytesPerPartition?: number;
  /** Largest estimated size of one partition's batch in one produce request. Default 768 KiB (brokers refuse batches over `message.max.bytes`, 1 MiB by default). */
  maxBatchBytes?: number;
  /** Group session timeout: how long a killed member keeps its partitions. Default 10000. */
  sessionTimeoutMs?: number;
  /** How long consumer() waits for its first assignment. Default 60000. */
  joinTimeoutMs?: number;
  /** Receives kafkajs's log lines. Default: errors as JSON lines on stderr. */
  log?: (level: 'error' | 'warn' | 'info' | 'debug', message: string, fields: Record<string, unknown>) => void;
}

const DEFAULT_RETENTION_HOURS = 168;
const DEFAULT_BUFFER_RECORDS = 10_000;
const DEFAULT_MAX_BATCH_BYTES = 768 * 1024;
/**
 * Records per produce request. kafkajs groups a send's messages by partition with an array
 * copy per message (quadratic in the records per partition), so one huge merged request
 * costs more CPU than a few moderate ones.
 */
const MAX_RECORDS_PER_REQUEST = 2000;
/** Per-record overhead of the v2 record format, roughly (varints, attributes, headers count). */
const RECORD_OVERHEAD_BYTES = 24;

function levelName(level: logLevel): 'error' | 'warn' | 'info' | 'debug' {
  switch (level) {
    case logLevel.ERROR:
      return 'error';
    case logLevel.WARN:
      return 'warn';
    case logLevel.INFO:
      return 'info';
    default:
      return 'debug';
  }
}

/**
 * Errors as JSON lines on stderr, except kafkajs's per-response lines ("Connection: Response
 * Heartbeat ... rebalancing"): those errors also reach the caller, or are handled by kafkajs
 * (a rebalance), and would flood the log at every rebalance.
 */
function defaultLog(level: string, message: string, fields: Record<string, unknown>): void {
  if (level !== 'error' || message.startsWith('Connection: Response')) return;
  process.stderr.write(`${JSON.stringify({ level, component: 'kafkajs', msg: message, ...fields })}\n`);
}

/** Connects, creates the topic if missing (checking the partition count if not) and returns the stream. */
export async function openKafkaStream(opts: KafkaStreamOptions): Promise<Stream> {
  const issues: string[] = [];
  if (opts.brokers.length === 0) issues.push('stream.brokers: at least one host:port is required');
  if (opts.topic.length === 0) issues.push('stream.topic: must not be empty');
  if (!Number.isInteger(opts.partitions) || opts.partitions < 1) issues.push(`stream.partitions: must be an integer >= 1, got ${opts.partitions}`);
  if (opts.retentionHours !== undefined && !(opts.retentionHours > 0)) issues.push(`stream.retention_hours: must be > 0, got ${opts.retentionHours}`);
  if (issues.length > 0) throw new ConfigError(issues);

  const log = opts.log;
  const kafka = new Kafka({
    clientId: opts.clientId ?? 'syncline',
    brokers: [...opts.brokers],
    connectionTimeout: 3000,
    requestTimeout: 30_000,
    logLevel: log ? logLevel.INFO : logLevel.ERROR,
    logCreator: () => (entry: LogEntry) => {
      const { message, timestamp: _t, logger: _l, ...fields } = entry.log;
      (log ?? defaultLog)(levelName(entry.level), `${entry.namespace}: ${message}`, fields);
    },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
  } catch (err) {
    throw kafkaError(err, `connecting to ${opts.brokers.join(',')}`);
  }
  try {
    await ensureTopic(admin, opts);
  } catch (err) {
    await admin.disconnect().catch(() => undefined);
    throw err instanceof SynclineError ? err : kafkaError(err, `creating topic ${opts.topic}`);
  }
  return new KafkaStream(kafka, admin, opts);
}

async function ensureTopic(admin: Admin, opts: KafkaStreamOptions): Promise<void> {
  const retentionMs = Math.round((opts.retentionHours ?? DEFAULT_RETENTION_HOURS) * 3_600_000);
  await admin.createTopics({
    waitForLeaders: true,
    topics: [
      {
        topic: opts.topic,
        numPartitions: opts.partitions,
        replicationFactor: opts.replicationFactor ?? -1,
        configEntries: [
          ...(opts.compacted ? [{ name: 'cleanup.policy', value: 'compact' }] : [{ name: 'retention.ms', value: String(retentionMs) }]),
          { name: 'message.timestamp.type', value: 'LogAppendTime' },
        ],
      },
    ],
  });
  const meta = await admin.fetchTopicMetadata({ topics: [opts.topic] });
  const count = meta.topics[0]?.partitions.length ?? 0;
  if (count !== opts.partitions) {
    throw new SynclineError(
      'STREAM_PARTITIONS_MISMATCH',
      `Kafka topic ${opts.topic} has ${count} partitions but ${opts.partitions} are configured. ` +
        'The count cannot change (keys would move to other partitions and lose their order): ' +
        `set stream.partitions to ${count}, or use another stream.topic.`,
      { retriable: false },
    );
  }
}

function closedError(what: string): SynclineError {
  return new SynclineError('STREAM_CLOSED', `Kafka stream ${what} is closed`, { retriable: false });
}

class KafkaStream implements Stream {
  readonly partitions: number;
  readonly topic: string;
  private readonly producers = new Set<KafkaProducer>();
  private readonly consumers = new Set<KafkaConsumer>();
  private closed = false;

  constructor(
    readonly kafka: Kafka,
    readonly admin: Admin,
    readonly opts: KafkaStreamOptions,
  ) {
    this.partitions = opts.partitions;
    this.topic = opts.topic;
  }

  async producer(): Promise<StreamProducer> {
    if (this.closed) throw closedError('');
    const producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner, // unused: every message names its partition
      // Bounded (kafkajs's idempotent default is forever): a broker outage must surface as a
      // retriable error to capture, which restarts from the slot rather than hang.
      retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 10_000 },
    });
    try {
      await producer.connect();
    } catch (err) {
      throw kafkaError(err, 'connecting the producer');
    }
    const p = new KafkaProducer(this, producer, this.opts.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES);
    this.producers.add(p);
    return p;
  }

  async consumer(groupId: string, options: ConsumerOptions = {}): Promise<StreamConsumer> {
    if (this.closed) throw closedError('');
    if (groupId.length === 0) throw new SynclineError('STREAM_GROUP_INVALID', 'consumer group id is empty', { retriable: false });
    const c = new KafkaConsumer(this, groupId, options);
    this.consumers.add(c);
    try {
      await c.start();
    } catch (err) {
      await c.close().catch(() => undefined);
      throw err;
    }
    return c;
  }

  /** Low and high watermarks per partition. */
  async watermarks(): Promise<Map<number, { low: bigint; high: bigint }>> {
    try {
      const rows = await this.admin.fetchTopicOffsets(this.topic);
      return new Map(rows.map((r) => [r.partition, { low: BigInt(r.low), high: BigInt(r.high) }]));
    } catch (err) {
      throw kafkaError(err, `fetching the offsets of ${this.topic}`);
    }
  }

  async endOffsets(): Promise<Map<number, bigint>> {
    if (this.closed) throw closedError('');
    const result = new Map<number, bigint>();
    for (const [p, w] of await this.watermarks()) result.set(p, w.high);
    return result;
  }

  async offsetsForTime(timestampMs: number): Promise<Map<number, bigint>> {
    if (this.closed) throw closedError('');
    try {
      // kafkajs answers the high watermark for partitions without a record at or after the time.
      const rows = await this.admin.fetchTopicOffsetsByTimestamp(this.topic, timestampMs);
      return new Map(rows.map((r) => [r.partition, BigInt(r.offset)]));
    } catch (err) {
      throw kafkaError(err, `looking up offsets by time in ${this.topic}`);
    }
  }

  async fetchCommitted(groupId: string): Promise<Map<number, bigint>> {
    try {
      const rows = await this.admin.fetchOffsets({ groupId, topics: [this.topic] });
      const result = new Map<number, bigint>();
      for (const t of rows) {
        for (const p of t.partitions) {
          const offset = BigInt(p.offset);
          if (offset >= 0n) result.set(p.partition, offset);
        }
      }
      return result;
    } catch (err) {
      throw kafkaError(err, `fetching the committed offsets of group ${groupId}`);
    }
  }

  producerClosed(p: KafkaProducer): void {
    this.producers.delete(p);
  }

  consumerClosed(c: KafkaConsumer): void {
    this.consumers.delete(c);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([...[...this.producers].map((p) => p.close()), ...[...this.consumers].map((c) => c.close())]);
    await this.admin.disconnect().catch(() => undefined);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
}

interface PendingPublish {
  records: readonly OutgoingRecord[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface KafkaMessage {
  key: string;
  value: Buffer | null;
  partition: number;
}

class KafkaProducer implements StreamProducer {
  private queue: PendingPublish[] = [];
  private draining: Promise<void> | null = null;
  /** Set by the first failed request: later publishes are refused so none is stored after it. */
  private failure: SynclineError | null = null;
  private closed = false;

  constructor(
    private readonly stream: KafkaStream,
    private readonly producer: Producer,
    private readonly maxBatchBytes: number,
  ) {}

  publish(records: readonly OutgoingRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(closedError('producer'));
    if (this.failure !== null) return Promise.reject(this.failure);
    if (records.length === 0) return Promise.resolve();
    const copy = records.slice(); // callers may reuse their array once publish returns
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ records: copy, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.draining; // publishes accepted before close still complete
    this.stream.producerClosed(this);
    try {
      await this.producer.disconnect();
    } catch (err) {
      throw kafkaError(err, 'disconnecting the producer');
    }
  }

  private async drain(): Promise<void> {
    // Yield once so that publishes issued in the same tick join the first request.
    await Promise.resolve();
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        try {
          if (this.failure !== null) throw this.failure;
          await this.send(batch);
        } catch (err) {
          this.failure ??= kafkaError(err, `publishing to ${this.stream.topic}`);
          for (const p of batch) p.reject(this.failure);
          continue;
        }
        for (const p of batch) p.resolve();
      }
    } finally {
      this.draining = null;
    }
  }

  /**
   * Sends the queued publishes in call order: one produce request unless some partition's
   * share would pass `maxBatchBytes`, in which case the records are cut into consecutive
   * requests (each still in order, so per-partition order holds across them).
   */
  private async send(batch: readonly PendingPublish[]): Promise<void> {
    const partitions = this.stream.partitions;
    const bytes = new Array<number>(partitions).fill(0);
    let messages: KafkaMessage[] = [];
    for (const call of batch) {
      const records = call.records;
      for (let i = 0; i < records.length; i++) {
        const r = records[i] as OutgoingRecord;
        const partition = partitionFor(r.key, partitions);
        const size = r.key.length * 3 + r.value.length + RECORD_OVERHEAD_BYTES;
        if (messages.length > 0 && ((bytes[partition] as number) + size > this.maxBatchBytes || messages.length >= MAX_RECORDS_PER_REQUEST)) {
          await this.produce(messages);
          messages = [];
          bytes.fill(0);
        }
        bytes[partition] = (bytes[partition] as number) + size;
        // An empty value goes out as null: a tombstone, which compaction removes with its key.
        messages.push({ key: r.key, value: r.value.length === 0 ? null : r.value, partition });
      }
    }
    if (messages.length > 0) await this.produce(messages);
  }

  private async produce(messages: KafkaMessage[]): Promise<void> {
    await this.producer.send({ topic: this.stream.topic, acks: -1, timeout: 30_000, messages });
  }
}

/**
 * One member of a Kafka consumer group. Partition states: assigned (by the group),
 * ready (its start position is set), seek-pending (a seek() waits for the next poll).
 * A partition is fetched only when ready, not seek-pending and the buffer is not full.
 */
class KafkaConsumer implements StreamConsumer {
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
  private failure: SynclineError | null = null;
  private polling = false;
  private closed = false;
  private firstReady: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void };
  private readonly topic: string;

  constructor(
    private readonly stream: KafkaStream,
    private readonly groupId: string,
    private readonly options: ConsumerOptions,
  ) {
    this.topic = stream.topic;
    this.highWater = stream.opts.bufferRecords ?? DEFAULT_BUFFER_RECORDS;
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined); // observed by start(); a later failure must not be unhandled
    this.firstReady = { promise, resolve, reject };
    this.consumer = stream.kafka.consumer({
      groupId,
      allowAutoTopicCreation: false,
      sessionTimeout: stream.opts.sessionTimeoutMs ?? 10_000,
      heartbeatInterval: 1000,
      maxWaitTimeInMs: 500,
      maxBytesPerPartition: stream.opts.maxBytesPerPartition ?? 1024 * 1024,
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
    const timeoutMs = this.stream.opts.joinTimeoutMs ?? 60_000;
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

  assignment(): readonly number[] {
    return this.assigned;
  }

  async poll(maxRecords: number, maxWaitMs: number): Promise<StreamRecord[]> {
    if (this.closed) throw closedError('consumer');
    if (this.failure !== null) throw this.failure;
    if (this.polling) throw new SynclineError('STREAM_CONCURRENT_POLL', 'poll() called while a previous poll() is still running', { retriable: false });
    this.polling = true;
    try {
      const deadline = performance.now() + maxWaitMs;
      for (;;) {
        if (this.seeks.size > 0) await this.applySeeks();
        const out = this.buffer.take(this.assigned, maxRecords);
        if (this.full && this.buffer.size <= this.highWater / 2) {
          this.full = false;
          this.syncPauses();
        }
        if (out.length > 0 || this.closed) return out;
        if (this.failure !== null) throw this.failure;
        const remaining = deadline - performance.now();
        if (remaining <= 0) return out;
        await this.buffer.wait(remaining);
      }
    } finally {
      this.polling = false;
    }
  }

  seek(partition: number, offset: bigint): void {
    if (!Number.isInteger(partition) || partition < 0 || partition >= this.stream.partitions || offset < 0n) {
      throw new SynclineError('STREAM_SEEK_INVALID', `cannot seek partition ${partition} to offset ${offset}`, { retriable: false });
    }
    if (!this.assigned.includes(partition)) {
      throw new SynclineError('STREAM_SEEK_INVALID', `cannot seek partition ${partition}: it is not assigned to this consumer (assigned: ${this.assigned.join(',') || 'none'})`, { retriable: false });
    }
    // Applied (clamped to the retained range) by the next poll; until then nothing of the
    // partition is buffered or fetched.
    this.seeks.set(partition, offset);
    this.buffer.clear(partition);
    this.syncPauses();
  }

  async commit(positions: ReadonlyMap<number, bigint>): Promise<void> {
    if (this.closed) throw closedError('consumer');
    const offsets: { topic: string; partition: number; offset: string }[] = [];
    for (const [p, offset] of positions) {
      if (!Number.isInteger(p) || p < 0 || p >= this.stream.partitions || offset < 0n) {
        throw new SynclineError('STREAM_COMMIT_INVALID', `cannot commit offset ${offset} for partition ${p}`, { retriable: false });
      }
      // A partition revoked since it was polled belongs to another member now, whose
      // commits must not be overwritten by ours.
      if (this.assigned.includes(p)) offsets.push({ topic: this.topic, partition: p, offset: offset.toString() });
    }
    if (offsets.length === 0) return;
    try {
      await this.consumer.commitOffsets(offsets);
    } catch (err) {
      throw kafkaError(err, `committing offsets of group ${this.groupId}`);
    }
  }

  committed(): Promise<Map<number, bigint>> {
    return this.stream.fetchCommitted(this.groupId);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.revokeAll();
    this.firstReady.reject(closedError('consumer'));
    this.buffer.wake();
    this.stream.consumerClosed(this);
    try {
      // Leaves the group, so the partitions move to the other members at once.
      await this.consumer.disconnect();
    } catch (err) {
      throw kafkaError(err, 'disconnecting the consumer');
    }
  }

  private fail(err: SynclineError): void {
    this.failure ??= err;
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
    if (this.closed) return;
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
      if (generation !== this.generation || this.closed) return;
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
        const committed = await this.stream.fetchCommitted(this.groupId);
        if (generation !== this.generation || this.closed) return;
        const fromGroup = new Map<number, bigint>();
        for (const p of assigned) {
          const o = committed.get(p);
          if (!fromSink.has(p) && o !== undefined) fromGroup.set(p, o);
        }
        if (fromGroup.size > 0) {
          await this.clamp(fromGroup); // throws RetentionGapError for an offset below the low watermark
          if (generation !== this.generation || this.closed) return;
          for (const [p, o] of fromGroup) this.next.set(p, o);
        }
      }
      if (fromSink.size > 0) {
        const clamped = await this.clamp(fromSink);
        if (generation !== this.generation || this.closed) return;
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
    const marks = await this.stream.watermarks();
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
      const want = this.closed || this.full || !this.ready.has(p) || this.seeks.has(p);
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
    if (this.closed || payload.isStale() || !this.ready.has(p) || this.seeks.has(p)) return;
    const messages = batch.messages;
    const records: StreamRecord[] = [];
    const expected = this.next.get(p);
    const firstOffset = messages[0] === undefined ? undefined : BigInt(messages[0].offset);
    if (expected !== undefined && firstOffset !== undefined && firstOffset > expected && !this.stream.opts.compacted) {
      // Offsets of a time-retained topic are contiguous: a jump means the fetch position fell
      // below the low watermark (retention deleted what this member had not read yet) and
      // kafkajs reset it to the earliest record. Refuse rather than skip.
      const low = (await this.stream.watermarks()).get(p)?.low;
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
    if (!this.full && this.buffer.size >= this.highWater) {
      this.full = true;
      this.syncPauses();
    }
  }
}
