import type { ChangeEvent } from '../core/change.js';
import { formatLsn, parseLsn, type Lsn } from '../core/lsn.js';
import type { StreamRecord } from '../stream/stream.js';

/**
 * The pseudo stream partition under which transactional apply stores, with its positions and
 * in the same sink transaction, the last commit LSN it released (`TransactionAssembler
 * .releasedUpTo`). After a restart the tail of a copy that a capture restart republished,
 * whose head was applied before, is then known stale at once; without it the assembler
 * waited `incompleteTransactionMs` (60 s) for a head that would never come again. Every
 * sink that stores positions keeps it with no change (a partition number, an offset); the
 * readers of positions go by the stream's partitions, so none of them sees it.
 */
export const RELEASED_MARK = -1;

/** A stream record and its decoded change (undefined: undecodable, dead-lettered at once). */
export interface AssemblerItem {
  record: StreamRecord;
  change: ChangeEvent | undefined;
}

interface PendingTransaction {
  commitLsn: Lsn;
  items: AssemblerItem[];
  seqs: Set<number>;
  /** The `seq` of the change marked `tx_last` (the transaction's size), once seen. */
  size: number | undefined;
  /** `tx_prev` of the last change: the commit LSN of the transaction published before it. */
  prev: Lsn | undefined;
}

/**
 * Reassembles source transactions from a partitioned stream for `sink.consistency:
 * transactional`. Capture spreads a transaction's changes over partitions by row key and
 * marks its last change `tx_last` (so its `seq` is the transaction's size) with `tx_prev`,
 * the commit LSN of the transaction it published before. A transaction is released when
 *   - all its changes arrived (`seq` 1..size, duplicates from a capture restart ignored),
 *   - every transaction before it in commit order was released, and
 *   - its predecessor is known to be released: `tx_prev` at or below the last released
 *     commit LSN. Where that chain is unknown (the first transaction after a capture or
 *     apply restart), a barrier stands in: each partition is read up to the end offsets
 *     taken after the transaction was complete, or until it shows a change committed at or
 *     after it, so everything published before it was seen.
 * Snapshot rows (READ), a keyless snapshot's reset and undecodable records pass straight
 * through: they belong to no source transaction. Pure: the caller polls, decodes, and fetches end offsets when
 * `barrierNeeded()` says so.
 */
export class TransactionAssembler {
  private readonly pending = new Map<Lsn, PendingTransaction>();
  /** Commit LSNs of `pending`, ascending (transactions mostly arrive in order: appends). */
  private readonly order: Lsn[] = [];
  /** Next offset to read per partition (from the start positions, then what was added). */
  private readonly readUpTo = new Map<number, bigint>();
  /** Highest commit LSN read per partition: nothing before it in that partition is unread. */
  private readonly newest = new Map<number, Lsn>();
  /** Offsets of held records per partition (the position may not pass the lowest). */
  private readonly held = new Map<number, Set<bigint>>();
  /** Items of all pending transactions (asked after every poll: kept, not counted). */
  private heldCount = 0;
  private lastReleased: Lsn | undefined;
  /**
   * The last commit LSN released before this apply started (stored with the sink's
   * positions): a transaction at or below it was applied whole then, and passes as stale.
   * It vouches for nothing after it: the first transaction still waits for a barrier.
   */
  private releasedBefore: Lsn | undefined;
  private barrier: Map<number, bigint> | undefined;
  /** The transaction the current barrier was taken for. */
  private barrierFor: Lsn | undefined;

  /** The consumer starts (or was repositioned) at `offset` in `partition`. */
  startAt(partition: number, offset: bigint): void {
    this.readUpTo.set(partition, offset);
  }

  /**
   * The sink's stored mark (see RELEASED_MARK): every source transaction committed at or
   * below `lsn` was applied whole before this start.
   */
  resumeAfter(lsn: Lsn): void {
    if (this.releasedBefore === undefined || lsn > this.releasedBefore) this.releasedBefore = lsn;
  }

  /** The newest commit LSN released (or vouched for at start): stored with the positions. */
  get releasedUpTo(): Lsn | undefined {
    const before = this.releasedBefore;
    return before !== undefined && (this.lastReleased === undefined || before > this.lastReleased) ? before : this.lastReleased;
  }

  /** Records held (transactions not complete or not yet in order). */
  get heldRecords(): number {
    return this.heldCount;
  }

  /** What the first transaction in line waits for (for logs). */
  waitingFor(): Record<string, unknown> | undefined {
    const t = this.first();
    if (!t) return undefined;
    return {
      commit_lsn: formatLsn(t.commitLsn),
      changes: t.seqs.size,
      size: t.size ?? 'tx_last not seen',
      tx_prev: t.prev === undefined ? null : formatLsn(t.prev),
      last_released: this.lastReleased === undefined ? null : formatLsn(this.lastReleased),
      barrier: this.barrierFor === t.commitLsn ? Object.fromEntries([...(this.barrier ?? [])].map(([p, o]) => [p, `${this.readUpTo.get(p) ?? 0n}/${o}`])) : null,
    };
  }

  add(items: readonly AssemblerItem[], released: AssemblerItem[]): void {
    // (Changes only when a transaction is taken, never inside this loop.)
    const releasedUpTo = this.releasedUpTo;
    for (const item of items) {
      const { record, change } = item;
      const next = record.offset + 1n;
      if ((this.readUpTo.get(record.partition) ?? 0n) < next) this.readUpTo.set(record.partition, next);
      // Undecodable records are dead-lettered; snapshot rows (READ) and resets are
      // version-gated writes of no source transaction: none waits.
      if (!change || change.op === 'READ' || change.snapshot_reset) {
        released.push(item);
        continue;
      }
      const commitLsn = parseLsn(change.commit_lsn);
      if ((this.newest.get(record.partition) ?? -1n) < commitLsn) this.newest.set(record.partition, commitLsn);
      // A transaction released before (a capture restart republished it), in this run or
      // the one before: a no-op at the version gate, so it goes through as it is.
      if (releasedUpTo !== undefined && commitLsn <= releasedUpTo) {
        released.push(item);
        continue;
      }
      let t = this.pending.get(commitLsn);
      if (!t) {
        t = { commitLsn, items: [], seqs: new Set(), size: undefined, prev: undefined };
        this.pending.set(commitLsn, t);
        this.insertOrdered(commitLsn);
      }
      if (t.seqs.has(change.seq)) continue; // the same change twice (republished)
      t.seqs.add(change.seq);
      t.items.push(item);
      this.heldCount++;
      this.holdOffset(record);
      if (change.tx_last) {
        t.size = change.seq;
        t.prev = change.tx_prev === undefined ? undefined : parseLsn(change.tx_prev);
      }
    }
  }

  /** True when the first transaction in line waits for a barrier that has not been set. */
  barrierNeeded(): boolean {
    const first = this.first();
    return first !== undefined && this.complete(first) && this.chainUnknown(first) && this.barrierFor !== first.commitLsn;
  }

  /** End offsets taken now, after the first transaction in line was complete. */
  setBarrier(ends: ReadonlyMap<number, bigint>): void {
    const first = this.first();
    if (!first) return;
    this.barrier = new Map(ends);
    this.barrierFor = first.commitLsn;
  }

  /** Takes every transaction that may be applied now, in commit order. */
  release(into: AssemblerItem[]): void {
    for (;;) {
      const t = this.first();
      if (!t || !this.complete(t)) return;
      // A known predecessor not yet released is waited for, whatever a barrier would say.
      if (!this.chained(t) && !(this.chainUnknown(t) && this.barrierFor === t.commitLsn && this.barrierPassed(t))) return;
      this.takeFirst(t, into);
    }
  }

  /** Releases `t`, the first in line, in `seq` order. */
  private takeFirst(t: PendingTransaction, into: AssemblerItem[]): void {
    this.pending.delete(t.commitLsn);
    this.order.shift();
    this.heldCount -= t.items.length;
    t.items.sort((a, b) => (a.change as ChangeEvent).seq - (b.change as ChangeEvent).seq);
    for (const item of t.items) {
      this.held.get(item.record.partition)?.delete(item.record.offset);
      into.push(item);
    }
    // Transactions wait here only when newer than the last released (see add).
    this.lastReleased = t.commitLsn;
  }

  /**
   * The first transaction in line is not whole, although a later one is: the stream has
   * moved past it (a capture that is down or still publishing it has no later one).
   */
  firstStuck(): boolean {
    const t = this.first();
    if (t === undefined || this.complete(t)) return false;
    for (const lsn of this.order) if (lsn !== t.commitLsn && this.complete(this.pending.get(lsn) as PendingTransaction)) return true;
    return false;
  }

  /** Every partition was read up to `ends`. */
  readTo(ends: ReadonlyMap<number, bigint>): boolean {
    for (const [p, end] of ends) if ((this.readUpTo.get(p) ?? 0n) < end) return false;
    return true;
  }

  /**
   * Gives up waiting for the first transaction in line, which cannot become whole (one of
   * its changes was undecodable, it is the tail of a copy republished by a capture restart
   * whose head was applied before an apply restart, or a capture without `tx_last` published
   * it): its changes are released as they are, and the line moves on.
   */
  releaseFirstAsIs(into: AssemblerItem[]): void {
    const t = this.first();
    if (t) this.takeFirst(t, into);
  }

  /** Where each partition may be committed: its read position, or its first held record. */
  positions(): Map<number, bigint> {
    const out = new Map<number, bigint>();
    for (const [p, next] of this.readUpTo) {
      let lowest = next;
      for (const o of this.held.get(p) ?? []) if (o < lowest) lowest = o;
      out.set(p, lowest);
    }
    return out;
  }

  private holdOffset(record: StreamRecord): void {
    let s = this.held.get(record.partition);
    if (!s) {
      s = new Set();
      this.held.set(record.partition, s);
    }
    s.add(record.offset);
  }

  private first(): PendingTransaction | undefined {
    const lsn = this.order[0];
    return lsn === undefined ? undefined : this.pending.get(lsn);
  }

  private insertOrdered(lsn: Lsn): void {
    let i = this.order.length;
    while (i > 0 && (this.order[i - 1] as Lsn) > lsn) i--;
    this.order.splice(i, 0, lsn);
  }

  private complete(t: PendingTransaction): boolean {
    return t.size !== undefined && t.seqs.size >= t.size;
  }

  /** Nothing tells what came before it: the first transaction after a capture or apply start. */
  private chainUnknown(t: PendingTransaction): boolean {
    return t.prev === undefined || this.lastReleased === undefined;
  }

  /** Its predecessor was released here (the chain vouches that nothing is missing before it). */
  private chained(t: PendingTransaction): boolean {
    return t.prev !== undefined && this.lastReleased !== undefined && t.prev <= this.lastReleased;
  }

  /**
   * Every partition either was read up to the barrier, or already showed a change committed
   * at or after `t` — partitions are in commit order, so nothing before `t` is still unread
   * there. (With a backlog that is all of them at once: the backlog is not read into memory.)
   */
  private barrierPassed(t: PendingTransaction): boolean {
    if (!this.barrier) return false;
    for (const [p, end] of this.barrier) {
      if ((this.readUpTo.get(p) ?? 0n) < end && (this.newest.get(p) ?? -1n) < t.commitLsn) return false;
    }
    return true;
  }
}
