/**
 * The Kafka stream's producer: syncline's own idempotent producer (idempotent-producer.ts:
 * acks=all, producer id + sequence numbers) behind a group commit. While one produce request
 * is in flight, later publishes queue and go out together in the next one, so records are
 * stored in call order and many small publishes share a round trip.
 */
import { partitionFor } from '../../core/change.js';
import type { BrokerClients } from '../common/broker-stream.js';
import { GroupCommit } from '../common/group-commit.js';
import type { OutgoingRecord, StreamProducer } from '../stream.js';
import { IdempotentProducer } from './idempotent-producer.js';
import { kafkaError } from './kafka-errors.js';
import type { ProduceRecord } from './protocol/messages.js';

/**
 * Per partition and request. Batches near 768 KiB (this producer fills them, where kafkajs's
 * stopped at 2,000 records a request) made apply through Kafka ~30 % slower: kafka_vs_embedded
 * apply 0.55-0.86 in six runs vs 0.78-0.88 in four at 128 KiB (bench/pipeline.bench.mjs,
 * 2026-12-06). Probably the consumer's 1 MiB fetch per partition: the broker answers whole
 * batches plus the start of the next, which the client drops and fetches again.
 */
const DEFAULT_MAX_BATCH_BYTES = 128 * 1024;
/** Bytes of one produce request, roughly: bounds the time one encoding holds the event loop. */
const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
/** Per-record overhead of the v2 record format, roughly (varints, attributes, headers count). */
const RECORD_OVERHEAD_BYTES = 24;

export interface KafkaProducerTarget {
  brokers: readonly string[];
  clientId?: string;
  topic: string;
  partitions: number;
  /** Largest estimated size of one partition's batch in one produce request. */
  maxBatchBytes?: number;
}

/** Connects a producer of `target.topic`; it is registered with `clients` until it closes. */
export async function openKafkaProducer(target: KafkaProducerTarget, clients: BrokerClients): Promise<StreamProducer> {
  const producer = new IdempotentProducer({ brokers: target.brokers, clientId: target.clientId ?? 'syncline', topic: target.topic, partitions: target.partitions });
  try {
    await producer.connect();
  } catch (err) {
    producer.close();
    throw kafkaError(err, 'connecting the producer');
  }
  return clients.add(new KafkaProducer(target, producer, clients));
}

class KafkaProducer implements StreamProducer {
  private readonly commits: GroupCommit;
  private readonly maxBatchBytes: number;

  constructor(
    private readonly target: KafkaProducerTarget,
    private readonly producer: IdempotentProducer,
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
    this.producer.close();
  }

  /**
   * Sends the queued publishes in call order: one produce request unless some partition's
   * share would pass `maxBatchBytes` (or the request MAX_REQUEST_BYTES), in which case the
   * records are cut into consecutive requests (each still in order, so per-partition order
   * holds across them).
   */
  private async send(calls: readonly (readonly OutgoingRecord[])[]): Promise<void> {
    const partitions = this.target.partitions;
    const bytes = new Array<number>(partitions).fill(0);
    let total = 0;
    let request = new Map<number, ProduceRecord[]>();
    for (const records of calls) {
      for (let i = 0; i < records.length; i++) {
        const r = records[i] as OutgoingRecord;
        const partition = partitionFor(r.key, partitions);
        const size = (r.keyBytes?.length ?? r.key.length * 3) + r.value.length + RECORD_OVERHEAD_BYTES;
        if (total > 0 && ((bytes[partition] as number) + size > this.maxBatchBytes || total + size > MAX_REQUEST_BYTES)) {
          await this.producer.send(request);
          request = new Map();
          bytes.fill(0);
          total = 0;
        }
        bytes[partition] = (bytes[partition] as number) + size;
        total += size;
        // An empty value goes out as null: a tombstone, which compaction removes with its key.
        // A typed format's key goes out schema-encoded (keyBytes); the partition stays the text key's.
        const record: ProduceRecord = { key: r.keyBytes ?? r.key, value: r.value.length === 0 ? null : r.value };
        const list = request.get(partition);
        if (list === undefined) request.set(partition, [record]);
        else list.push(record);
      }
    }
    if (total > 0) await this.producer.send(request);
  }
}
