/**
 * The Kafka stream's producer: kafkajs's idempotent producer (acks=all, producer id +
 * sequence numbers) behind a group commit. While one produce request is in flight, later
 * publishes queue and go out together in the next one, so records are stored in call order
 * and many small publishes share a round trip. kafkajs's idempotent producer serializes
 * requests per broker but takes its lock after asynchronous metadata steps, so concurrent
 * `send` calls are not guaranteed to reach the broker in call order: the queue here is what
 * keeps order.
 */
import { Partitioners, type Kafka, type Producer } from 'kafkajs';
import { partitionFor } from '../../core/change.js';
import type { BrokerClients } from '../common/broker-stream.js';
import { GroupCommit } from '../common/group-commit.js';
import type { OutgoingRecord, StreamProducer } from '../stream.js';
import { kafkaError } from './kafka-errors.js';

const DEFAULT_MAX_BATCH_BYTES = 768 * 1024;
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
}

/** Connects a producer of `target.topic`; it is registered with `clients` until it closes. */
export async function openKafkaProducer(kafka: Kafka, target: KafkaProducerTarget, clients: BrokerClients): Promise<StreamProducer> {
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
  return clients.add(new KafkaProducer(target, producer, clients));
}

class KafkaProducer implements StreamProducer {
  private readonly commits: GroupCommit;
  private readonly maxBatchBytes: number;

  constructor(
    private readonly target: KafkaProducerTarget,
    private readonly producer: Producer,
    private readonly clients: BrokerClients,
  ) {
    this.maxBatchBytes = target.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    this.commits = new GroupCommit({
      broker: 'Kafka',
      write: (calls) => this.send(calls),
      failed: (err) => kafkaError(err, `publishing to ${target.topic}`),
    });
  }

  publish(records: readonly OutgoingRecord[]): Promise<void> {
    const refused = this.commits.refusal();
    if (refused !== null) return Promise.reject(refused);
    if (records.length === 0) return Promise.resolve();
    return this.commits.enqueue(records);
  }

  async close(): Promise<void> {
    if (this.commits.isClosed) return;
    await this.commits.close(); // publishes accepted before close still complete
    this.clients.delete(this);
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
  private async send(calls: readonly (readonly OutgoingRecord[])[]): Promise<void> {
    const partitions = this.target.partitions;
    const bytes = new Array<number>(partitions).fill(0);
    let messages: KafkaMessage[] = [];
    for (const records of calls) {
      for (let i = 0; i < records.length; i++) {
        const r = records[i] as OutgoingRecord;
        const partition = partitionFor(r.key, partitions);
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
