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
 */
import { SynclineError } from '../../core/errors.js';
import { backoffDelay, type RetryPolicy } from '../../core/retry.js';
import { KafkaConnection } from './kafka-connection.js';
import { DUPLICATE_SEQUENCE_NUMBER, NONE, PRODUCER_STATE_ERRORS, kafkaErrorCode } from './protocol/error-codes.js';
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
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Between attempts of a request that failed in a way that may pass. Default: 10 attempts, 300 ms doubling to 10 s, jittered. */
  retry?: RetryPolicy;
  /** Opens a connection to a broker. Default: KafkaConnection.connect (tests route it through a proxy). */
  connect?: (host: string, port: number, timeoutMs: number) => Promise<KafkaConnection>;
}

const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 10, baseMs: 300, maxMs: 10_000, jitter: true };
const MAX_SEQUENCE = 0x7fff_ffff;

/** One partition's records waiting to be stored, with the sequence they were given. */
interface Outstanding {
  batch: PartitionBatch;
  /** The last failure, for the message if the retries run out. */
  error: SynclineError | null;
}

export class IdempotentProducer {
  private readonly connections = new Map<number, KafkaConnection>();
  private bootstrap: KafkaConnection | null = null;
  private leaders = new Map<number, number>();
  private brokers = new Map<number, BrokerAddress>();
  private identity: ProducerIdentity | null = null;
  private readonly sequences = new Map<number, number>();
  private failure: SynclineError | null = null;
  private closed = false;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly open: (host: string, port: number, timeoutMs: number) => Promise<KafkaConnection>;

  constructor(private readonly opts: IdempotentProducerOptions) {
    this.open = opts.connect ?? ((host, port, timeoutMs) => KafkaConnection.connect(host, port, timeoutMs));
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 3000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
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
      const next = baseSequence + list.length;
      this.sequences.set(partition, next > MAX_SEQUENCE ? next - MAX_SEQUENCE - 1 : next);
      outstanding.push({ batch: { partition, baseSequence, records: list }, error: null });
    }
    try {
      for (let attempt = 1; outstanding.length > 0; attempt++) {
        if (attempt > 1) {
          if (attempt > this.retry.maxAttempts) throw outstanding[0]?.error ?? new SynclineError('KAFKA_PRODUCE', 'Kafka: producing failed', { retriable: true });
          await sleep(backoffDelay(this.retry, attempt - 1));
          if (this.closed) throw new SynclineError('STREAM_CLOSED', 'Kafka: the producer closed while a publish was retried', { retriable: true });
          await this.refreshMetadata().catch(() => undefined); // leaders may have moved; a failure shows in the produce
        }
        outstanding = await this.produceOnce(outstanding);
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
   * One produce request per leader, in parallel; returns the batches to send again (their
   * partition's error, or their request's, may pass). Throws on one that cannot.
   */
  private async produceOnce(outstanding: Outstanding[]): Promise<Outstanding[]> {
    const identity = this.identity;
    if (identity === null) throw new SynclineError('KAFKA_PRODUCE', 'Kafka: the producer has no producer id', { retriable: true });
    const byLeader = new Map<number, Outstanding[]>();
    const again: Outstanding[] = [];
    for (const o of outstanding) {
      const leader = this.leaders.get(o.batch.partition);
      if (leader === undefined || leader < 0) {
        o.error = new SynclineError('KAFKA_LEADER_NOT_AVAILABLE', `Kafka: ${this.opts.topic} partition ${o.batch.partition} has no leader`, { retriable: true });
        again.push(o);
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
          // The broker waits up to the produce timeout for the replicas: allow for the trip.
          body = await conn.request(frame, this.requestTimeoutMs + 5000, `producing to ${this.opts.topic}`);
        } catch (err) {
          const e = asSynclineError(err, `producing to ${this.opts.topic}`);
          // Whether the broker stored these is unknown: sent again with the same sequence
          // numbers, they are stored once either way.
          for (const o of list) o.error = e;
          if (e.retriable) again.push(...list);
          else fatal ??= e;
          return;
        }
        const results = new Map(decodeProduceResponse(body, this.opts.topic).map((r) => [r.partition, r.error]));
        for (const o of list) {
          const code = results.get(o.batch.partition);
          if (code === NONE || code === DUPLICATE_SEQUENCE_NUMBER) continue; // stored (now or by an earlier attempt)
          if (code === undefined) {
            fatal ??= new SynclineError('KAFKA_PROTOCOL', `Kafka: the produce response has no result for ${this.opts.topic} partition ${o.batch.partition}`, { retriable: true });
            continue;
          }
          const e = produceError(code, this.opts.topic, o.batch.partition);
          o.error = e;
          if (kafkaErrorCode(code).retriable) again.push(o);
          else fatal ??= e;
        }
      }),
    );
    if (fatal !== null) throw fatal;
    return again;
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

  /** A connection to any broker: a known one first, else the bootstrap list in turn. */
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

function asSynclineError(err: unknown, doing: string): SynclineError {
  if (err instanceof SynclineError) return err;
  return new SynclineError('KAFKA_UNKNOWN', `Kafka: ${doing} failed: ${String(err)}`, { retriable: false, cause: err });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
