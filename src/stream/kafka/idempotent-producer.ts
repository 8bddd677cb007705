/**
 * Kafka's idempotent producer, as syncline needs it: one topic, every record with its
 * partition already chosen, acks=all, one produce request in flight per broker, and the
 * broker's duplicate detection (producer id, epoch and a sequence number per partition) so
 * that a request sent again after a lost answer is stored once.
 *
 * Why not kafkajs's producer: it builds a Record object, two Buffers and an Encoder that
 * grows by copying for every record, groups records by partition with an array copy per
 * record, and takes the CRC-32C byte by byte; that was ~12 µs of CPU per record, more than
 * capture's own work. Here a request is measured, then written once into one buffer
 * (protocol/messages.ts). kafkajs still does everything else (topic admin, consumer groups).
 *
 * send() contract: the batches of one call are stored in order per partition, each exactly
 * once, or the call fails. A failed call leaves the sequence numbers behind the broker's
 * unknown, so the producer refuses every later call (its caller starts over with a new one).
 *
 * A batch the broker refuses as too large (the topic's max.message.bytes may be below the
 * batch size syncline aims for) is split in halves with the same sequence numbers, as Kafka's
 * own producer does; a single record too large fails with its size. A partition whose log
 * goes back behind what this producer had stored there (the topic deleted and recreated, or
 * an unclean leader election) fails the producer for good: records that were acknowledged
 * are gone, and writing on would hide it.
 */
import { SynclineError } from '../../core/errors.js';
import { backoffDelay, type RetryPolicy } from '../../core/retry.js';
import { partitionsMismatchError } from '../common/errors.js';
import { KafkaConnection } from './kafka-connection.js';
import { DUPLICATE_SEQUENCE_NUMBER, NONE, PRODUCER_STATE_ERRORS, TOO_LARGE_ERRORS, kafkaErrorCode } from './protocol/error-codes.js';
import {
  decodeInitProducerIdResponse,
  decodeMetadataResponse,
  decodeProduceResponse,
  encodeInitProducerIdRequest,
  encodeMetadataRequest,
  encodeProduceRequest,
  type BrokerAddress,
  type PartitionBatch,
  type ProduceRecord,
  type ProducerIdentity,
} from './protocol/messages.js';

export interface IdempotentProducerOptions {
  /** Bootstrap `host:port` list. */
  brokers: readonly string[];
  clientId: string;
  topic: string;
  /** Partitions the topic must have: metadata that shows another count fails the producer (STREAM_PARTITIONS_MISMATCH). */
  partitions?: number;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /**
   * Largest produce request sent. Default 100 MiB, Kafka's default socket.request.max.bytes: a
   * broker closes the connection on a larger one without an answer, which looks like a broken
   * connection and would be retried forever.
   */
  maxRequestBytes?: number;
  /** Between attempts of a request that failed in a way that may pass. Default: 10 attempts, 300 ms doubling to 10 s, jittered. */
  retry?: RetryPolicy;
  /** Opens a connection to a broker. Default: KafkaConnection.connect (tests route it through a proxy). */
  connect?: (host: string, port: number, timeoutMs: number) => Promise<KafkaConnection>;
}

const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 10, baseMs: 300, maxMs: 10_000, jitter: true };
const MAX_SEQUENCE = 0x7fff_ffff;
const DEFAULT_MAX_REQUEST_BYTES = 100 * 1024 * 1024;

/** One partition's records waiting to be stored, with the sequence they were given. */
interface Outstanding {
  batch: PartitionBatch;
  /** The last failure, for the message if the retries run out. */
  error: SynclineError | null;
}

/** What one round of produce requests left: batches still to send, and whether a failure among them calls for a backoff. */
interface Round {
  remaining: Outstanding[];
  failed: boolean;
}

export class IdempotentProducer {
  private readonly connections = new Map<number, KafkaConnection>();
  private bootstrap: KafkaConnection | null = null;
  private leaders = new Map<number, number>();
  private brokers = new Map<number, BrokerAddress>();
  private identity: ProducerIdentity | null = null;
  private readonly sequences = new Map<number, number>();
  /** Per partition, the offset after the last batch the broker acknowledged to this producer. */
  private readonly nextOffsets = new Map<number, bigint>();
  private failure: SynclineError | null = null;
  private closed = false;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly maxRequestBytes: number;
  private readonly retry: RetryPolicy;
  private readonly open: (host: string, port: number, timeoutMs: number) => Promise<KafkaConnection>;

  constructor(private readonly opts: IdempotentProducerOptions) {
    this.open = opts.connect ?? ((host, port, timeoutMs) => KafkaConnection.connect(host, port, timeoutMs));
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 3000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.retry = opts.retry ?? DEFAULT_RETRY;
  }

  /** Loads the topic's leaders and gets a producer id, retrying what may pass. */
  async connect(): Promise<void> {
    await this.attempts('connecting the producer', async () => {
      await this.refreshMetadata();
      await this.initProducerId();
    });
  }

  /**
   * Stores `records` (per partition, in order) with acks=all. Resolves once every partition's
   * records are acknowledged; rejects with the first failure that did not pass, after which
   * every call is refused.
   */
  async send(records: ReadonlyMap<number, readonly ProduceRecord[]>): Promise<void> {
    if (this.closed) throw new SynclineError('STREAM_CLOSED', 'Kafka: the producer is closed', { retriable: true });
    if (this.failure !== null) throw this.failure;
    let outstanding: Outstanding[] = [];
    for (const [partition, list] of records) {
      if (list.length === 0) continue;
      const baseSequence = this.sequences.get(partition) ?? 0;
      this.sequences.set(partition, addSequence(baseSequence, list.length));
      outstanding.push({ batch: { partition, baseSequence, records: list }, error: null });
    }
    try {
      for (let failures = 0; outstanding.length > 0; ) {
        const round = await this.produceOnce(outstanding);
        outstanding = round.remaining;
        if (outstanding.length === 0 || !round.failed) continue; // done, or split batches to send now
        if (++failures >= this.retry.maxAttempts) throw outstanding.find((o) => o.error !== null)?.error ?? new SynclineError('KAFKA_PRODUCE', 'Kafka: producing failed', { retriable: true });
        await sleep(backoffDelay(this.retry, failures));
        if (this.closed) throw new SynclineError('STREAM_CLOSED', 'Kafka: the producer closed while a publish was retried', { retriable: true });
        // Leaders may have moved; a failure that may pass shows in the produce again, one
        // that cannot (the topic now has another partition count) ends the call.
        await this.refreshMetadata().catch((err: unknown) => {
          if (err instanceof SynclineError && !err.retriable) throw err;
        });
      }
    } catch (err) {
      this.failure = err instanceof SynclineError ? err : new SynclineError('KAFKA_PRODUCE', `Kafka: producing to ${this.opts.topic} failed: ${String(err)}`, { retriable: false, cause: err });
      throw this.failure;
    }
  }

  close(): void {
    this.closed = true;
    for (const c of this.connections.values()) c.close();
    this.connections.clear();
    this.bootstrap?.close();
    this.bootstrap = null;
  }

  /**
   * One produce request per leader, in parallel, with the first outstanding batch of each
   * partition (a request holds one batch per partition; later ones of a split wait their
   * turn). Returns the batches left, in order per partition: those whose partition's error, or
   * request's, may pass, the halves of a batch refused as too large, and those not sent yet.
   * Throws on a failure that cannot pass.
   */
  private async produceOnce(outstanding: Outstanding[]): Promise<Round> {
    const identity = this.identity;
    if (identity === null) throw new SynclineError('KAFKA_PRODUCE', 'Kafka: the producer has no producer id', { retriable: true });
    const byLeader = new Map<number, Outstanding[]>();
    const sending = new Set<number>();
    /** What replaces each sent batch: nothing once stored, itself to retry, its halves. */
    const after = new Map<Outstanding, Outstanding[]>();
    let failed = false;
    for (const o of outstanding) {
      if (sending.has(o.batch.partition)) continue;
      sending.add(o.batch.partition);
      const leader = this.leaders.get(o.batch.partition);
      if (leader === undefined || leader < 0) {
        o.error = new SynclineError('KAFKA_LEADER_NOT_AVAILABLE', `Kafka: ${this.opts.topic} partition ${o.batch.partition} has no leader`, { retriable: true });
        after.set(o, [o]);
        failed = true;
        continue;
      }
      const list = byLeader.get(leader);
      if (list === undefined) byLeader.set(leader, [o]);
      else list.push(o);
    }
    let fatal: SynclineError | null = null;
    await Promise.all(
      [...byLeader].map(async ([leader, list]) => {
        let body: Buffer;
        try {
          const conn = await this.connectionTo(leader);
          const frame = encodeProduceRequest({ clientId: this.opts.clientId, topic: this.opts.topic, acks: -1, timeoutMs: this.requestTimeoutMs, identity, batches: list.map((o) => o.batch) });
          if (frame.length > this.maxRequestBytes) throw requestTooLargeError(frame.length, this.maxRequestBytes, this.opts.topic, list);
          // The broker waits up to the produce timeout for the replicas: allow for the trip.
          body = await conn.request(frame, this.requestTimeoutMs + 5000, `producing to ${this.opts.topic}`);
        } catch (err) {
          const e = asSynclineError(err, `producing to ${this.opts.topic}`);
          // Whether the broker stored these is unknown: sent again with the same sequence
          // numbers, they are stored once either way.
          for (const o of list) {
            o.error = e;
            after.set(o, [o]);
          }
          if (e.retriable) failed = true;
          else fatal ??= e;
          return;
        }
        const results = new Map(decodeProduceResponse(body, this.opts.topic).map((r) => [r.partition, r]));
        for (const o of list) {
          const { partition, records } = o.batch;
          const result = results.get(partition);
          if (result === undefined) {
            fatal ??= new SynclineError('KAFKA_PROTOCOL', `Kafka: the produce response has no result for ${this.opts.topic} partition ${partition}`, { retriable: true });
            continue;
          }
          if (result.error === NONE || result.error === DUPLICATE_SEQUENCE_NUMBER) {
            // Stored (now or by an earlier attempt). Offsets only grow: one below what this
            // producer already had acknowledged means the log lost records.
            const expected = this.nextOffsets.get(partition);
            if (result.baseOffset >= 0n) {
              if (expected !== undefined && result.baseOffset < expected) fatal ??= logWentBackError(this.opts.topic, partition, expected, result.baseOffset);
              this.nextOffsets.set(partition, result.baseOffset + BigInt(records.length));
            }
            after.set(o, []);
            continue;
          }
          if (TOO_LARGE_ERRORS.has(result.error) && records.length > 1) {
            // Refused whole, nothing stored: the halves carry the same sequence numbers.
            const half = Math.ceil(records.length / 2);
            after.set(o, [
              { batch: { partition, baseSequence: o.batch.baseSequence, records: records.slice(0, half) }, error: null },
              { batch: { partition, baseSequence: addSequence(o.batch.baseSequence, half), records: records.slice(half) }, error: null },
            ]);
            continue;
          }
          const e = TOO_LARGE_ERRORS.has(result.error) ? recordTooLargeError(result.error, this.opts.topic, partition, records[0] as ProduceRecord) : produceError(result.error, this.opts.topic, partition);
          o.error = e;
          after.set(o, [o]);
          if (kafkaErrorCode(result.error).retriable) failed = true;
          else fatal ??= e;
        }
      }),
    );
    if (fatal !== null) throw fatal;
    const remaining: Outstanding[] = [];
    for (const o of outstanding) remaining.push(...(after.get(o) ?? [o]));
    return { remaining, failed };
  }

  private async connectionTo(nodeId: number): Promise<KafkaConnection> {
    const open = this.connections.get(nodeId);
    if (open?.isOpen) return open;
    const address = this.brokers.get(nodeId);
    if (address === undefined) throw new SynclineError('KAFKA_BROKER_NOT_AVAILABLE', `Kafka: broker ${nodeId} is not in the metadata`, { retriable: true });
    const conn = await this.open(address.host, address.port, this.connectTimeoutMs);
    if (this.closed) {
      conn.close();
      throw new SynclineError('STREAM_CLOSED', 'Kafka: the producer is closed', { retriable: true });
    }
    this.connections.set(nodeId, conn);
    return conn;
  }

  /** A connection to some broker: a known one first, else the bootstrap list in turn. */
  private async anyConnection(): Promise<KafkaConnection> {
    for (const c of this.connections.values()) if (c.isOpen) return c;
    if (this.bootstrap?.isOpen) return this.bootstrap;
    let last: unknown = null;
    for (const hostPort of this.opts.brokers) {
      const at = hostPort.lastIndexOf(':');
      try {
        this.bootstrap = await this.open(hostPort.slice(0, at), Number(hostPort.slice(at + 1)), this.connectTimeoutMs);
        return this.bootstrap;
      } catch (err) {
        last = err;
      }
    }
    throw asSynclineError(last, `connecting to ${this.opts.brokers.join(',')}`);
  }

  private async refreshMetadata(): Promise<void> {
    const conn = await this.anyConnection();
    const body = await conn.request(encodeMetadataRequest(this.opts.clientId, this.opts.topic), this.requestTimeoutMs, 'reading metadata');
    const md = decodeMetadataResponse(body, this.opts.topic);
    if (md.error !== NONE) throw produceError(md.error, this.opts.topic, null);
    // Another process may have made the topic (or deleted and made it again) with another count.
    const expected = this.opts.partitions;
    if (expected !== undefined && md.partitions.size !== expected) {
      throw partitionsMismatchError(`Kafka topic ${this.opts.topic} has ${md.partitions.size} partitions`, expected, 'set stream.partitions to that count, or use another stream.topic');
    }
    this.brokers = new Map(md.brokers.map((b) => [b.nodeId, b]));
    this.leaders = new Map([...md.partitions].map(([p, m]) => [p, m.error === NONE || m.leader >= 0 ? m.leader : -1]));
    // Connections to brokers that left the cluster are closed.
    for (const [id, c] of this.connections) {
      if (!this.brokers.has(id)) {
        c.close();
        this.connections.delete(id);
      }
    }
  }

  private async initProducerId(): Promise<void> {
    const conn = await this.anyConnection();
    const r = decodeInitProducerIdResponse(await conn.request(encodeInitProducerIdRequest(this.opts.clientId), this.requestTimeoutMs, 'getting a producer id'));
    if (r.error !== NONE) throw produceError(r.error, this.opts.topic, null);
    this.identity = { producerId: r.producerId, epoch: r.epoch };
    this.sequences.clear();
  }

  /** Runs `fn` until it succeeds, a failure cannot pass, or the attempts run out. */
  private async attempts(doing: string, fn: () => Promise<void>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await fn();
        return;
      } catch (err) {
        const e = asSynclineError(err, doing);
        if (!e.retriable || attempt >= this.retry.maxAttempts || this.closed) throw e;
        await sleep(backoffDelay(this.retry, attempt));
      }
    }
  }
}

/**
 * A broker error code as a SynclineError. The producer-state errors (sequence gap, unknown or
 * fenced producer id) end this producer but are retriable for its caller: a new producer
 * (capture restarting from the slot) gets a new producer id and starts its sequences afresh.
 */
function produceError(code: number, topic: string, partition: number | null): SynclineError {
  const { name, retriable } = kafkaErrorCode(code);
  const where = partition === null ? topic : `${topic} partition ${partition}`;
  return new SynclineError(`KAFKA_${name}`, `Kafka: producing to ${where} failed: ${name} (error code ${code})`, { retriable: retriable || PRODUCER_STATE_ERRORS.has(code) });
}

/** A record the broker refuses even alone: nothing syncline can split, so the error says what to change. */
function recordTooLargeError(code: number, topic: string, partition: number, record: ProduceRecord): SynclineError {
  const keyBytes = typeof record.key === 'string' ? Buffer.byteLength(record.key) : record.key.length;
  const valueBytes = record.value?.length ?? 0;
  return new SynclineError(
    `KAFKA_${kafkaErrorCode(code).name}`,
    `Kafka: a record of ${keyBytes + valueBytes} bytes (key ${keyBytes}, value ${valueBytes}) for ${topic} partition ${partition} is larger than the broker accepts ` +
      `(${kafkaErrorCode(code).name}, error code ${code}): raise the topic's max.message.bytes (and the broker's message.max.bytes and replica.fetch.max.bytes if above them) beyond it, ` +
      'or keep such values out of the published tables',
    { retriable: false },
  );
}

/** A request the broker would drop with its connection (socket.request.max.bytes): said here, not retried. */
function requestTooLargeError(bytes: number, limit: number, topic: string, list: readonly Outstanding[]): SynclineError {
  let largest: { partition: number; keyBytes: number; valueBytes: number } = { partition: -1, keyBytes: 0, valueBytes: 0 };
  for (const o of list) {
    for (const r of o.batch.records) {
      const keyBytes = typeof r.key === 'string' ? Buffer.byteLength(r.key) : r.key.length;
      const valueBytes = r.value?.length ?? 0;
      if (keyBytes + valueBytes > largest.keyBytes + largest.valueBytes) largest = { partition: o.batch.partition, keyBytes, valueBytes };
    }
  }
  return new SynclineError(
    'KAFKA_MESSAGE_TOO_LARGE',
    `Kafka: a produce request of ${bytes} bytes to ${topic} is over ${limit} (the broker's socket.request.max.bytes, 100 MiB by default, drops the connection of a larger one); ` +
      `its largest record has ${largest.keyBytes + largest.valueBytes} bytes (key ${largest.keyBytes}, value ${largest.valueBytes}, partition ${largest.partition}): ` +
      'keep such values out of the published tables',
    { retriable: false },
  );
}

function logWentBackError(topic: string, partition: number, expected: bigint, got: bigint): SynclineError {
  return new SynclineError(
    'KAFKA_LOG_TRUNCATED',
    `Kafka: ${topic} partition ${partition} stored a batch at offset ${got} although this producer's records already reached offset ${expected}: ` +
      'the topic was deleted and made again, or its log was truncated (an unclean leader election), so records it had acknowledged are gone. ' +
      "Consumers' committed positions no longer match it; re-snapshot the target from the source (or restore the topic) before going on",
    { retriable: false },
  );
}

/** Kafka's sequence numbers wrap from Int32 max to 0. */
function addSequence(sequence: number, n: number): number {
  const next = sequence + n;
  return next > MAX_SEQUENCE ? next - MAX_SEQUENCE - 1 : next;
}

function asSynclineError(err: unknown, doing: string): SynclineError {
  if (err instanceof SynclineError) return err;
  return new SynclineError('KAFKA_UNKNOWN', `Kafka: ${doing} failed: ${String(err)}`, { retriable: false, cause: err });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
