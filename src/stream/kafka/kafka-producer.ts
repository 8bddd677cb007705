/**
 * The Kafka stream's producer: kafkajs's idempotent producer (acks=all, producer id +
 * sequence numbers) behind a group commit. While one produce request is in flight, later
 * publishes queue and go out together in the next one, so records are stored in call order
 * and many small publishes share a round trip. kafkajs's idempotent producer serializes
 * requests per broker but takes its lock after asynchronous metadata steps, so concurrent
 * `send` calls are not guaranteed to reach the broker in call order: the queue here is what
 * keeps order.
 *
 * One idempotent producer has one produce request in flight per broker, and while the broker
 * handles it this process sits idle (encoding the next request is most of its cost). So the
 * partitions are split over `lanes` producers (partition p goes through lane p % lanes), each
 * with its own connection, producer id and group commit: their requests overlap, and each
 * partition still has exactly one producer writing it, in call order.
 */
import { Partitioners, type Kafka, type Producer } from 'kafkajs';
import { partitionFor } from '../../core/change.js';
import type { BrokerClients } from '../common/broker-stream.js';
import { streamClosedError } from '../common/errors.js';
import { GroupCommit } from '../common/group-commit.js';
import type { OutgoingRecord, StreamProducer } from '../stream.js';
import { kafkaError } from './kafka-errors.js';

const DEFAULT_MAX_BATCH_BYTES = 768 * 1024;
/**
 * Producers per stream producer (at most one per partition). Two overlap one lane's encoding
 * with the other's round trip; more added nothing on a 2-core machine with a local broker.
 */
export const DEFAULT_PRODUCER_LANES = 2;
/**
 * Records per produce request. kafkajs groups a send's messages by partition with an array
 * copy per message (quadratic in the records per partition), so one huge merged request
 * costs more CPU than a few moderate ones.
 */
const MAX_RECORDS_PER_REQUEST = 2000;
/** Per-record overhead of the v2 record format, roughly (varints, attributes, headers count). */
const RECORD_OVERHEAD_BYTES = 24;

interface KafkaMessage {
  key: string | Buffer;
  value: Buffer | null;
  partition: number;
}

export interface KafkaProducerTarget {
  topic: string;
  partitions: number;
  /** Largest estimated size of one partition's batch in one produce request. */
  maxBatchBytes?: number;
  /** Idempotent producers the partitions are split over. Default DEFAULT_PRODUCER_LANES. */
  producerLanes?: number;
}

/** Connects a producer of `target.topic`; it is registered with `clients` until it closes. */
export async function openKafkaProducer(kafka: Kafka, target: KafkaProducerTarget, clients: BrokerClients): Promise<StreamProducer> {
  const count = Math.max(1, Math.min(target.partitions, target.producerLanes ?? DEFAULT_PRODUCER_LANES));
  const lanes: Lane[] = [];
  try {
    for (let i = 0; i < count; i++) lanes.push(new Lane(target, await connectProducer(kafka)));
  } catch (err) {
    await Promise.allSettled(lanes.map((l) => l.close()));
    throw err;
  }
  return clients.add(new KafkaProducer(target, lanes, clients));
}

async function connectProducer(kafka: Kafka): Promise<Producer> {
  const producer = kafka.producer({
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
  return producer;
}

class KafkaProducer implements StreamProducer {
  private closed = false;

  constructor(
    private readonly target: KafkaProducerTarget,
    private readonly lanes: readonly Lane[],
    private readonly clients: BrokerClients,
  ) {}

  /**
   * Splits the records by lane (keeping their order) and resolves once every lane stored its
   * share. The first failure of any lane refuses every later publish: a lane that failed
   * may have a gap, and nothing after it may be acknowledged as stored.
   */
  publish(records: readonly OutgoingRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(streamClosedError('Kafka', 'producer'));
    for (const lane of this.lanes) {
      const refused = lane.commits.refusal();
      if (refused !== null) return Promise.reject(refused);
    }
    if (records.length === 0) return Promise.resolve();
    const partitions = this.target.partitions;
    const count = this.lanes.length;
    if (count === 1) return (this.lanes[0] as Lane).commits.enqueue(withPartitions(records, partitions));
    const shares: PartitionedRecord[][] = Array.from({ length: count }, () => []);
    for (let i = 0; i < records.length; i++) {
      const r = records[i] as OutgoingRecord;
      const partition = partitionFor(r.key, partitions);
      (shares[partition % count] as PartitionedRecord[]).push({ record: r, partition });
    }
    const stored: Promise<void>[] = [];
    shares.forEach((share, i) => {
      if (share.length > 0) stored.push((this.lanes[i] as Lane).commits.enqueue(share));
    });
    return stored.length === 1 ? (stored[0] as Promise<void>) : Promise.all(stored).then(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled(this.lanes.map((l) => l.close())); // accepted publishes still complete
    this.clients.delete(this);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
}

/** A record with its partition, chosen once by publish(). */
interface PartitionedRecord {
  record: OutgoingRecord;
  partition: number;
}

function withPartitions(records: readonly OutgoingRecord[], partitions: number): PartitionedRecord[] {
  const out = new Array<PartitionedRecord>(records.length);
  for (let i = 0; i < records.length; i++) {
    const r = records[i] as OutgoingRecord;
    out[i] = { record: r, partition: partitionFor(r.key, partitions) };
  }
  return out;
}

/** One idempotent producer and the group commit in front of it. */
class Lane {
  readonly commits: GroupCommit<PartitionedRecord>;
  private readonly maxBatchBytes: number;

  constructor(
    private readonly target: KafkaProducerTarget,
    private readonly producer: Producer,
  ) {
    this.maxBatchBytes = target.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    this.commits = new GroupCommit<PartitionedRecord>({
      broker: 'Kafka',
      write: (calls) => this.send(calls),
      failed: (err) => kafkaError(err, `publishing to ${target.topic}`),
    });
  }

  async close(): Promise<void> {
    if (this.commits.isClosed) return;
    await this.commits.close(); // publishes accepted before close still complete
    try {
      await this.producer.disconnect();
    } catch (err) {
      throw kafkaError(err, 'disconnecting the producer');
    }
  }

  /**
   * Sends the queued publishes in call order: one produce request unless some partition's
   * share would pass `maxBatchBytes`, in which case the records are cut into consecutive
   * requests (each still in order, so per-partition order holds across them).
   */
  private async send(calls: readonly (readonly PartitionedRecord[])[]): Promise<void> {
    const bytes = new Array<number>(this.target.partitions).fill(0);
    let messages: KafkaMessage[] = [];
    for (const records of calls) {
      for (let i = 0; i < records.length; i++) {
        const { record: r, partition } = records[i] as PartitionedRecord;
        const size = (r.keyBytes?.length ?? r.key.length * 3) + r.value.length + RECORD_OVERHEAD_BYTES;
        if (messages.length > 0 && ((bytes[partition] as number) + size > this.maxBatchBytes || messages.length >= MAX_RECORDS_PER_REQUEST)) {
          await this.produce(messages);
          messages = [];
          bytes.fill(0);
        }
        bytes[partition] = (bytes[partition] as number) + size;
        // An empty value goes out as null: a tombstone, which compaction removes with its key.
        // A typed format's key goes out schema-encoded (keyBytes); the partition stays the text key's.
        messages.push({ key: r.keyBytes ?? r.key, value: r.value.length === 0 ? null : r.value, partition });
      }
    }
    if (messages.length > 0) await this.produce(messages);
  }

  private async produce(messages: KafkaMessage[]): Promise<void> {
    await this.producer.send({ topic: this.target.topic, acks: -1, timeout: 30_000, messages });
  }
}
