import type { KV } from 'nats';

/**
 * `max_deliver` for NATS consumer groups. JetStream's own counter cannot serve: readers
 * acknowledge records when they hand them to apply (positions live in the sink) and are
 * recreated at every start, so the server never redelivers and its counts restart at zero.
 * What `max_deliver` guards against remains: a record that kills apply (out of memory, a
 * crash, a supervisor's kill) every time it is delivered, stalling its partition forever.
 *
 * So deliveries are counted per start position, in the topic's KV bucket
 * (`<group>.delivery.<partition>`): a reader that starts a partition at the offset where the
 * previous reader started, after that one handed records out and died (a reader that closes
 * clears its record) without getting past them, is a redelivery. Each redelivery halves how many of the partition's records the first poll
 * hands out, down to one, so the record that kills apply ends up delivered alone; delivered
 * alone `maxDeliver` times without getting past it, it is handed out marked, and apply
 * dead-letters it instead of applying it. A record that is innocent is never marked: it is
 * marked only after it was the only record of its partition in `maxDeliver` failed attempts.
 */
export interface DeliveryRecord {
  offset: string;
  /** Attempts that started at `offset`. */
  count: number;
  /** Of those, attempts that handed out only the record at `offset`. */
  singles: number;
  /** Records the last attempt's first poll handed out (0: none yet). */
  handed: number;
}

export interface FirstDelivery {
  offset: bigint;
  count: number;
  singles: number;
  /** Most records of the partition the first poll may hand out. */
  cap: number;
  /** The record at `offset` was delivered alone `maxDeliver` times: hand it out marked. */
  exhausted: boolean;
}

/** Pure: what the next attempt at `offset` may hand out, given the previous attempt's record. */
export function nextDelivery(prev: DeliveryRecord | undefined, offset: bigint, maxDeliver: number): FirstDelivery {
  if (!prev || prev.offset !== offset.toString() || prev.handed === 0) {
    return { offset, count: 1, singles: 0, cap: Infinity, exhausted: false };
  }
  const singles = prev.singles + (prev.handed === 1 ? 1 : 0);
  const exhausted = singles >= maxDeliver;
  return { offset, count: prev.count + 1, singles, cap: exhausted ? 1 : Math.max(1, Math.floor(prev.handed / 2)), exhausted };
}

export class DeliveryTracker {
  private readonly pending = new Map<number, FirstDelivery>();
  /** Partitions whose delivery this reader recorded, with the revision it wrote. */
  private readonly recorded = new Map<number, number>();

  constructor(
    private readonly kv: KV,
    private readonly group: string,
    private readonly maxDeliver: number,
  ) {}

  /** A reader starts `partition` at `offset`: its first poll is limited by the history there. */
  async started(partition: number, offset: bigint): Promise<void> {
    const e = await this.kv.get(this.key(partition));
    const prev = e !== null && e.operation === 'PUT' ? (e.json() as DeliveryRecord) : undefined;
    this.pending.set(partition, nextDelivery(prev, offset, this.maxDeliver));
  }

  /** The reader was repositioned (a seek): what it records next starts over. */
  stopped(partition: number): void {
    this.pending.delete(partition);
    this.recorded.delete(partition);
  }

  /** The partition went to another member cleanly: this reader's record does not count. */
  async handedOver(partition: number): Promise<void> {
    const revision = this.recorded.get(partition);
    this.stopped(partition);
    if (revision !== undefined) await this.forget(partition, revision);
  }

  /** The first poll of `partition` is still to come. */
  first(partition: number): FirstDelivery | undefined {
    return this.pending.get(partition);
  }

  /** Records what the first poll handed out, before apply gets it (a crash during apply counts). */
  async handed(partition: number, records: number): Promise<void> {
    const d = this.pending.get(partition);
    if (!d) return;
    this.pending.delete(partition);
    const record: DeliveryRecord = { offset: d.offset.toString(), count: d.count, singles: d.singles, handed: records };
    this.recorded.set(partition, await this.kv.put(this.key(partition), JSON.stringify(record)));
  }

  /**
   * A reader that closes (a stop, a rolling restart, an apply that stopped on an error it
   * reported) did not die on its records: its deliveries do not count.
   */
  async closedCleanly(): Promise<void> {
    for (const [p, revision] of this.recorded) await this.forget(p, revision);
    this.recorded.clear();
    this.pending.clear();
  }

  /** Deletes this reader's record, unless another reader wrote one since. */
  private async forget(partition: number, revision: number): Promise<void> {
    await this.kv.delete(this.key(partition), { previousSeq: revision }).catch(() => undefined);
  }

  private key(partition: number): string {
    return `${this.group}.delivery.${partition}`;
  }
}
