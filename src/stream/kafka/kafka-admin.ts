/**
 * The admin side of the Kafka stream: creating the topic (and checking the partition count
 * of an existing one), the offset look-ups (watermarks, offsets by time, a group's
 * committed offsets) and a group's members.
 */
import type { Admin, Kafka } from 'kafkajs';
import { SynclineError } from '../../core/errors.js';
import { DEFAULT_RETENTION_HOURS } from '../common/broker-stream.js';
import { partitionsMismatchError } from '../common/errors.js';
import { kafkaError } from './kafka-errors.js';
import type { KafkaStreamOptions } from './kafka-stream.js';

/** Connects the admin client and creates the topic if missing (checking the partition count if not). */
export async function openKafkaAdmin(kafka: Kafka, opts: KafkaStreamOptions): Promise<KafkaAdmin> {
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
  return new KafkaAdmin(admin, opts.topic);
}

/**
 * `max.message.bytes` of a topic this creates: 64 MiB. The broker's default (its
 * `message.max.bytes`, 1 MB) refused the record of one row with a TOASTed value of a few MB
 * (KAFKA_MESSAGE_TOO_LARGE), and capture stopped at it for good. A topic's value may be above
 * the broker's; consumers still get such a record (a fetch returns its first batch whole,
 * whatever its size limits), and a produce request stays under the broker's
 * `socket.request.max.bytes` (100 MiB). An existing topic keeps its own value.
 */
export const TOPIC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

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
          { name: 'max.message.bytes', value: String(TOPIC_MAX_MESSAGE_BYTES) },
        ],
      },
    ],
  });
  const meta = await admin.fetchTopicMetadata({ topics: [opts.topic] });
  const count = meta.topics[0]?.partitions.length ?? 0;
  if (count !== opts.partitions) {
    throw partitionsMismatchError(`Kafka topic ${opts.topic} has ${count} partitions`, opts.partitions, `set stream.partitions to ${count}, or use another stream.topic`);
  }
}

export interface GroupMember {
  memberId: string;
  /** Where it connected from, as the broker saw it. */
  clientHost: string;
}

export class KafkaAdmin {
  constructor(
    private readonly admin: Admin,
    readonly topic: string,
  ) {}

  /** Low and high watermarks per partition. */
  async watermarks(): Promise<Map<number, { low: bigint; high: bigint }>> {
    try {
      const rows = await this.admin.fetchTopicOffsets(this.topic);
      return new Map(rows.map((r) => [r.partition, { low: BigInt(r.low), high: BigInt(r.high) }]));
    } catch (err) {
      throw kafkaError(err, `fetching the offsets of ${this.topic}`);
    }
  }

  async offsetsForTime(timestampMs: number): Promise<Map<number, bigint>> {
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

  /** The members a group lists now (a dead one until its session expires), without joining it. */
  async groupMembers(groupId: string): Promise<GroupMember[]> {
    try {
      const { groups } = await this.admin.describeGroups([groupId]);
      return (groups[0]?.members ?? []).map((m) => ({ memberId: m.memberId, clientHost: m.clientHost }));
    } catch (err) {
      throw kafkaError(err, `describing group ${groupId}`);
    }
  }

  async disconnect(): Promise<void> {
    await this.admin.disconnect().catch(() => undefined);
  }
}
