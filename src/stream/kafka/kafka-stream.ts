/**
 * The Kafka stream (`stream.broker: kafka`): one topic, `partitions` partitions. Records are
 * produced by syncline's own idempotent producer (idempotent-producer.ts); topic admin,
 * offsets and consumer groups go through kafkajs.
 *
 * Why kafkajs 2.2.4 and not @platformatic/kafka (the other pure-JS client; 2.12 on the
 * registry today, 1.x when this was chosen): kafkajs is already a dependency, pure
 * JavaScript (no native build, unlike @confluentinc/kafka-javascript over librdkafka), runs
 * on Node 20, and has what this adapter needs — consumer groups with explicit offset
 * commits, seek/pause/resume and admin calls for topic creation, watermarks and offsets by
 * timestamp. It is by far the most used Kafka client for Node (~9.6M downloads a month
 * against ~55k) and its broker error table carries the `retriable` flag we map from. Its
 * cost: no release since 2022, so it speaks the protocol versions of Kafka 2.x;
 * scripts/kafka.sh runs a 3.9 broker, which still accepts them (Kafka 4.0 dropped some,
 * KIP-896). Its producer spent ~12 µs of CPU per record encoding (more than capture's own
 * work), hence the producer of our own. @confluentinc/kafka-javascript was measured too
 * (2026-12-06): it installs here only when built from source with `CKJS_LINKING=dynamic`
 * (~3 min; its default install downloads a binary, or the sources of its dependencies,
 * from outside the npm registry), its producer cost about what kafkajs's did through its
 * KafkaJS-style API and its consumer two to three times kafkajs's CPU per record.
 *
 * Mapping onto the Stream contract:
 * - Partition choice is ours (`partitionFor`, FNV-1a), passed explicitly with every
 *   message, so a key lands in the same partition number as on the embedded stream.
 * - Topics are created with `message.timestamp.type=LogAppendTime`: record timestamps are
 *   the broker's append time, as `StreamRecord.timestamp` and `offsetsForTime` promise.
 * - publish() is a group commit over the idempotent producer (kafka-producer.ts); poll(), commits and rebalances are in
 *   kafka-consumer.ts, topic creation and offset look-ups in kafka-admin.ts.
 */
import { Kafka, logLevel, type LogEntry } from 'kafkajs';
import { BrokerClients, checkStreamOptions } from '../common/broker-stream.js';
import type { ConsumerOptions, Stream, StreamConsumer, StreamProducer } from '../stream.js';
import { openKafkaAdmin, type KafkaAdmin } from './kafka-admin.js';
import { KafkaConsumer } from './kafka-consumer.js';
import { openKafkaProducer } from './kafka-producer.js';

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
  /** Largest estimated size of one partition's batch in one produce request. Default 128 KiB (consumers fetch 1 MiB per partition; a batch over the topic's `max.message.bytes` is split when refused). */
  maxBatchBytes?: number;
  /** Group session timeout: how long a killed member keeps its partitions. Default 10000. */
  sessionTimeoutMs?: number;
  /** How long consumer() waits for its first assignment. Default 60000. */
  joinTimeoutMs?: number;
  /** Receives kafkajs's log lines. Default: errors as JSON lines on stderr. */
  log?: (level: 'error' | 'warn' | 'info' | 'debug', message: string, fields: Record<string, unknown>) => void;
}

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
  checkStreamOptions(opts, opts.brokers.length === 0 ? ['stream.brokers: at least one host:port is required'] : []);
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
  return new KafkaStream(kafka, await openKafkaAdmin(kafka, opts), opts);
}

class KafkaStream implements Stream {
  readonly partitions: number;
  private readonly clients = new BrokerClients('Kafka');

  constructor(
    private readonly kafka: Kafka,
    private readonly admin: KafkaAdmin,
    private readonly opts: KafkaStreamOptions,
  ) {
    this.partitions = opts.partitions;
  }

  async producer(): Promise<StreamProducer> {
    this.clients.checkOpen();
    return openKafkaProducer(this.opts, this.clients);
  }

  async consumer(groupId: string, options: ConsumerOptions = {}): Promise<StreamConsumer> {
    this.clients.checkConsumer(groupId);
    const c = new KafkaConsumer({ kafka: this.kafka, admin: this.admin, opts: this.opts, clients: this.clients }, groupId, options);
    return this.clients.started(c, () => c.start());
  }

  async endOffsets(): Promise<Map<number, bigint>> {
    this.clients.checkOpen();
    const result = new Map<number, bigint>();
    for (const [p, w] of await this.admin.watermarks()) result.set(p, w.high);
    return result;
  }

  async offsetsForTime(timestampMs: number): Promise<Map<number, bigint>> {
    this.clients.checkOpen();
    return this.admin.offsetsForTime(timestampMs);
  }

  async committedOffsets(groupId: string): Promise<Map<number, bigint>> {
    return this.admin.fetchCommitted(groupId);
  }

  close(): Promise<void> {
    return this.clients.close(() => this.admin.disconnect());
  }
}
