/**
 * The durable, partitioned log between capture and apply. Every broker (embedded, Kafka,
 * NATS JetStream) implements this interface and passes the same contract suite.
 *
 * Offsets are per partition, start at 0 and increase by one per record. A consumer
 * position is always the offset of the *next* record to read.
 */
import { PrerequisiteError } from '../core/errors.js';

export interface OutgoingRecord {
  /** Records with the same key land in the same partition, in publish order. */
  key: string;
  /**
   * The message key as the record's format encodes it (a typed `stream.format`: the key
   * columns in their key schema, Confluent wire format). Kafka sends it as the message key;
   * the partition is still computed from `key`. Other streams ignore it.
   */
  keyBytes?: Buffer;
  value: Buffer;
  /**
   * Unique, deterministic identity of the record (capture sets `${commit_lsn}:${seq}`).
   * Brokers that deduplicate (NATS JetStream's `Nats-Msg-Id`) drop a republished record
   * with the same key and id; absent means no deduplication.
   */
  id?: string;
}

export interface StreamRecord {
  partition: number;
  offset: bigint;
  key: string;
  value: Buffer;
  /** Append time, ms since the epoch. */
  timestamp: number;
  /**
   * Set only when the stream gives up on the record (NATS `max_deliver`): it was delivered
   * this many times and every reader died before getting past it. Apply dead-letters it.
   */
  deliveries?: number;
}

export interface StreamProducer {
  /**
   * Appends the records in order and resolves only when all of them are durably stored
   * (on disk / acknowledged by the broker). Callers may keep several publishes in flight;
   * they are stored in call order.
   */
  publish(records: readonly OutgoingRecord[]): Promise<void>;
  close(): Promise<void>;
}

export interface PollOptions {
  ahead?: boolean;
}

export interface StreamConsumer {
  /**
   * False when apply must not poll the next batch before the batch the last poll returned is
   * applied (it holds records a consumer counts deliveries by: see nats/delivery-tracker.ts).
   * Read after every poll. Absent: it may.
   */
  readonly readAhead?: boolean;
  /** Partitions currently assigned to this consumer. */
  assignment(): readonly number[];
  /**
   * Returns up to `maxRecords` records from the assigned partitions, each partition in
   * offset order, waiting at most `maxWaitMs` for the first one. Empty on timeout.
   * `ahead`: apply reads ahead, while it still applies the batch before.
   */
  poll(maxRecords: number, maxWaitMs: number, options?: PollOptions): Promise<StreamRecord[]>;
  /** Next poll of `partition` starts at `offset`. */
  seek(partition: number, offset: bigint): void;
  /** Stores the group's position (next offset to read) for the given partitions. */
  commit(positions: ReadonlyMap<number, bigint>): Promise<void>;
  /** The group's stored positions; partitions never committed are absent. */
  committed(): Promise<Map<number, bigint>>;
  close(): Promise<void>;
}

export interface ConsumerOptions {
  /**
   * Where to start partitions newly assigned to this consumer (at start, and after every
   * rebalance on brokers that have them). Partitions missing from the result start at the
   * group's committed offset, else at the earliest retained record. Sinks that store their
   * positions with the rows answer here, so a crash between the sink commit and the stream
   * commit replays rather than skips.
   */
  startPositions?: (partitions: readonly number[]) => Promise<ReadonlyMap<number, bigint>>;
  /**
   * This consumer is its group's only member by design (transactional apply, which needs every
   * partition): members the group still lists when it joins are earlier instances that died
   * without leaving (kill -9), and are removed instead of waited for until their session
   * expires (Kafka; see kafka/group-cleanup.ts). Streams without group sessions ignore it.
   */
  exclusive?: boolean;
  /**
   * What `exclusive` did, for the log: the members it removed (`memberId@clientHost`), or why it
   * could not (the consumer joins anyway, and waits for their sessions to expire).
   */
  onExclusive?: (outcome: { removed: readonly string[] } | { error: Error }) => void;
}

export interface Stream {
  readonly partitions: number;
  producer(): Promise<StreamProducer>;
  consumer(groupId: string, options?: ConsumerOptions): Promise<StreamConsumer>;
  /** Per partition, the offset the next appended record will get. */
  endOffsets(): Promise<Map<number, bigint>>;
  /**
   * Per partition, the offset of the first record whose append time is at or after
   * `timestampMs` (ms since the epoch); the end offset (see `endOffsets`) when there is none.
   * Seeking a consumer there replays from that time.
   */
  offsetsForTime(timestampMs: number): Promise<Map<number, bigint>>;
  /**
   * Per partition, the offset group `groupId` committed, read without joining the group (a
   * status read must not cause a rebalance). Absent where a stream cannot (NATS: apply's
   * positions live in the sink).
   */
  committedOffsets?(groupId: string): Promise<Map<number, bigint>>;
  close(): Promise<void>;
}

/**
 * A consumer was to read a partition from an offset that retention has already deleted:
 * the records from `wanted` up to `firstRetained` were never consumed and are gone. Every
 * broker refuses this instead of starting at the first retained record, which would skip
 * them without a trace. Not retriable: the target misses those changes until it is rebuilt.
 */
export class RetentionGapError extends PrerequisiteError {
  readonly partition: number;
  readonly wanted: bigint;
  readonly firstRetained: bigint;
  constructor(what: string, partition: number, wanted: bigint, firstRetained: bigint) {
    super(
      `${what} partition ${partition}: a consumer was to start at offset ${wanted}, but retention has deleted the records before ${firstRetained}; ` +
        `the ${firstRetained - wanted} records from ${wanted} to ${firstRetained - 1n} were never consumed and the target is missing their changes`,
      `accept the gap and rebuild what it lost: start \`syncline apply\` (or \`run\`) once with \`--from ${partition}:${firstRetained}\` ` +
        '(one partition:offset pair per partition reported) so it resumes at the first retained record, and re-sync the target with ' +
        '`syncline snapshot` (or find and fix the drift with `syncline verify` + `syncline repair`); to keep it from happening again, ' +
        'raise stream.retention_hours above the longest apply outage',
    );
    this.name = 'RetentionGapError';
    this.partition = partition;
    this.wanted = wanted;
    this.firstRetained = firstRetained;
    const byPartition = retentionGapsByPartition.get(partition) ?? 0;
    retentionGapsByPartition.set(partition, byPartition + 1);
  }
}

const retentionGapsByPartition = new Map<number, number>();

/**
 * How many RetentionGapErrors this process raised, per partition: read by `Metrics`
 * (`sync_stream_retention_gap_total`). Process-wide, because the adapters know no metrics.
 */
export function retentionGapCounts(): ReadonlyMap<number, number> {
  return retentionGapsByPartition;
}
