/**
 * The NATS JetStream stream (`stream.broker: nats`), through the `nats` client (v2).
 *
 * Layout (nats-names.ts): one JetStream stream per partition (nats-topology.ts, which also
 * says how offsets map to sequences), a KV bucket for committed positions, group membership
 * and delivery counts, and per group a durable consumer on each partition's stream.
 * Publishing (nats-producer.ts) carries the record key in headers and deduplicates
 * republished records by `Nats-Msg-Id`. Consumer groups share the partitions through KV
 * leases (nats-consumer.ts, group-membership.ts), each partition read by a pull loop
 * (partition-reader.ts). Records over the server's max_payload go through the topic's object
 * store (claim-check.ts).
 */
import { AckPolicy, DeliverPolicy, connect, nanos, type JetStreamManager, type KV, type NatsConnection } from 'nats';
import { BrokerClients, DEFAULT_RETENTION_HOURS, checkStreamOptions } from '../common/broker-stream.js';
import type { ConsumerOptions, Stream, StreamConsumer, StreamProducer } from '../stream.js';
import { ObjectBucket } from './claim-check.js';
import type { MembershipOptions } from './group-membership.js';
import { NatsConsumer } from './nats-consumer.js';
import { natsError } from './nats-errors.js';
import { natsName, objectsBucketName, partitionStreamName, positionsBucketName } from './nats-names.js';
import { NatsProducer } from './nats-producer.js';
import type { ChainSwitch } from './publish-chains.js';
import { ensureStreams } from './nats-topology.js';

export interface NatsStreamOptions {
  /** Heartbeat and session timeout of consumer-group members (see group-membership.ts). */
  membership?: MembershipOptions;
  /** Server URL(s), e.g. `nats://127.0.0.1:4222`. */
  url: string | readonly string[];
  topic: string;
  /** Fixed at creation: reopening with another count throws STREAM_PARTITIONS_MISMATCH. */
  partitions: number;
  /** `max_age` of the streams this creates. Default 168 (7 days). */
  retentionHours?: number;
  /** Records a consumer buffers (all partitions) before it stops pulling. Default 10000. */
  bufferRecords?: number;
  /** Messages per pull request. Default 1000. */
  fetchBatch?: number;
  /** How long a publish waits for the server's acknowledgement. Default 30000. */
  publishTimeoutMs?: number;
  /** Deliveries of a record that kills its reader every time before it is dead-lettered (see delivery-tracker.ts). Default 5. */
  maxDeliver?: number;
}

/** Connects, creates the partition streams and the positions bucket if missing, and returns the stream. */
export async function openNatsStream(opts: NatsStreamOptions): Promise<Stream> {
  checkStreamOptions(opts);
  const servers = typeof opts.url === 'string' ? opts.url : [...opts.url];
  let nc: NatsConnection;
  try {
    nc = await connect({ servers, name: 'syncline', timeout: 3000, maxReconnectAttempts: -1 });
  } catch (err) {
    throw natsError(err, `connecting to ${String(servers)}`);
  }
  try {
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, opts);
    const js = nc.jetstream();
    const kv = await js.views.kv(positionsBucketName(opts.topic), { history: 1 });
    return new NatsStream(nc, jsm, kv, opts);
  } catch (err) {
    await nc.close().catch(() => undefined);
    throw natsError(err, `preparing JetStream streams for ${opts.topic}`);
  }
}

class NatsStream implements Stream {
  readonly partitions: number;
  private readonly streamNames: readonly string[];
  private readonly clients = new BrokerClients('NATS');
  /** Shared by this stream's producers: see publish-chains.ts. */
  private readonly chainSwitch: ChainSwitch = { broken: false };
  /** The topic's object store, for records over max_payload (opened at first use). */
  private readonly objects: ObjectBucket;

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly kv: KV,
    private readonly opts: NatsStreamOptions,
  ) {
    this.partitions = opts.partitions;
    this.streamNames = Array.from({ length: opts.partitions }, (_, p) => partitionStreamName(opts.topic, p));
    const retentionMs = Math.round((opts.retentionHours ?? DEFAULT_RETENTION_HOURS) * 3_600_000);
    this.objects = new ObjectBucket(nc, objectsBucketName(opts.topic), retentionMs, opts.publishTimeoutMs ?? 30_000);
  }

  async producer(): Promise<StreamProducer> {
    this.clients.checkOpen();
    return this.clients.add(new NatsProducer(this.nc, this.opts, this.clients, this.chainSwitch, this.objects));
  }

  async consumer(groupId: string, options: ConsumerOptions = {}): Promise<StreamConsumer> {
    this.clients.checkConsumer(groupId);
    const c = new NatsConsumer({ jsm: this.jsm, nc: this.nc, kv: this.kv, opts: this.opts, clients: this.clients, objects: this.objects }, groupId);
    try {
      return await this.clients.started(c, () => c.start(options));
    } catch (err) {
      throw natsError(err, `starting consumer group ${groupId}`);
    }
  }

  /** A group's committed positions, as its consumers store them (NatsConsumer.commit): for `syncline status`. */
  async committedOffsets(groupId: string): Promise<Map<number, bigint>> {
    this.clients.checkOpen();
    const durable = natsName(groupId);
    try {
      const entries = await Promise.all(this.streamNames.map((_, p) => this.kv.get(`${durable}.${p}`)));
      const result = new Map<number, bigint>();
      entries.forEach((e, p) => {
        if (e !== null && e.operation === 'PUT') result.set(p, BigInt(e.string()));
      });
      return result;
    } catch (err) {
      throw natsError(err, `reading committed positions of group ${groupId}`);
    }
  }

  async endOffsets(): Promise<Map<number, bigint>> {
    this.clients.checkOpen();
    try {
      const infos = await Promise.all(this.streamNames.map((name) => this.jsm.streams.info(name)));
      // The next message gets sequence last_seq + 1, i.e. offset last_seq.
      return new Map(infos.map((info, p) => [p, BigInt(info.state.last_seq)]));
    } catch (err) {
      throw natsError(err, 'reading stream states');
    }
  }

  /**
   * The server's own time index: an ephemeral consumer created with deliver policy
   * "by start time" reports, before delivering anything, `delivered.stream_seq` = (first
   * sequence at or after the time) - 1, which is that record's offset — or last_seq, the
   * end offset, when no record is that new.
   */
  async offsetsForTime(timestampMs: number): Promise<Map<number, bigint>> {
    this.clients.checkOpen();
    const start = new Date(timestampMs).toISOString();
    try {
      const offsets = await Promise.all(
        this.streamNames.map(async (name) => {
          const info = await this.jsm.consumers.add(name, {
            ack_policy: AckPolicy.None,
            deliver_policy: DeliverPolicy.StartTime,
            opt_start_time: start,
            inactive_threshold: nanos(10_000),
          });
          await this.jsm.consumers.delete(name, info.name).catch(() => undefined);
          return BigInt(info.delivered.stream_seq);
        }),
      );
      return new Map(offsets.map((o, p) => [p, o]));
    } catch (err) {
      throw natsError(err, 'looking up offsets by time');
    }
  }

  close(): Promise<void> {
    return this.clients.close(() => this.nc.close().catch(() => undefined));
  }
}
