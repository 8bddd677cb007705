import type { ChangeEvent } from '../core/change.js';
import { STOPPED } from '../core/retry.js';
import { rowIdOf, type DeadLetter } from '../dlq/dead-letter-queue.js';
import type { StreamConsumer, StreamRecord } from '../stream/stream.js';
import type { ApplyContext, Item } from './apply-context.js';
import { decodeRecords } from './decode-records.js';
import { letterOf, transactionError } from './poison.js';
import { RELEASED_MARK, TransactionAssembler, type AssemblerItem } from './transaction-assembler.js';

/** Applies released records (in one sink transaction with `positions`); see Apply. */
type ApplyReleased = (records: StreamRecord[], signal: AbortSignal, positions: Map<number, bigint>, decoded: (ChangeEvent | undefined)[]) => Promise<void>;

/**
 * Transaction-consistent mode (`sink.consistency: transactional`): records go through the
 * assembler, and only whole source transactions, in commit order, reach the sink, with
 * positions that never pass a record still held.
 */
export class TransactionalApply {
  readonly assembler = new TransactionAssembler();
  /** Since when the first transaction in line has been stuck (see giveUpIfIncomplete). */
  private incompleteSince: number | undefined;
  private nextIncompleteCheck = 0;
  private nextPartialWarning = 0;
  private incompleteProgress = '';

  constructor(
    private readonly ctx: ApplyContext,
    /** The consumer apply reads with (undefined before it is open). */
    private readonly consumer: () => StreamConsumer | undefined,
    private readonly applyReleased: ApplyReleased,
  ) {}

  /** One poll's records: whatever they make whole is applied. */
  async next(records: StreamRecord[], signal: AbortSignal): Promise<void> {
    const { assembler, ctx } = this;
    const released: AssemblerItem[] = [];
    const changes = await decodeRecords(ctx, records, signal);
    if (changes === STOPPED) return;
    assembler.add(
      // What cannot be decoded is dead-lettered by applyBatch.
      records.map((record, i) => {
        const change = changes[i];
        return { record, change: change instanceof Error ? undefined : change };
      }),
      released,
    );
    if (assembler.barrierNeeded()) {
      const ends = await ctx.withRetry(() => ctx.options.endOffsets(), signal, 'reading stream end offsets');
      if (ends === STOPPED) return;
      assembler.setBarrier(ends);
    }
    assembler.release(released);
    if (released.length === 0) {
      if (records.length === 0 && assembler.heldRecords === 0) ctx.events.emit('apply:caught-up', {});
      else if (records.length > 0) ctx.log.debug({ held: assembler.heldRecords, waiting: assembler.waitingFor() }, 'transactional: waiting for a whole transaction');
      await this.giveUpIfIncomplete(signal);
      return;
    }
    this.incompleteSince = undefined;
    await this.applyReleased(
      released.map((i) => i.record),
      signal,
      this.assignedOnly(assembler.positions()),
      released.map((i) => i.change),
    );
  }

  /**
   * A transaction with a change that follows a dead-lettered row goes to the dead-letter
   * queue whole (moved from `items` to `letters`), so that the target never holds part of a
   * transaction.
   */
  keepWhole(items: Item[], letters: DeadLetter[]): void {
    const split = new Set(letters.flatMap((l) => (l.change ? [l.change.commit_lsn] : [])));
    if (split.size === 0) return;
    let kept = 0;
    for (const item of items) {
      if (split.has(item.change.commit_lsn)) {
        letters.push(letterOf(item.change, item.record, transactionError()));
        this.ctx.blocked.add(rowIdOf(item.change));
      } else items[kept++] = item;
    }
    items.length = kept;
  }

  /**
   * `positions` as the sink stores them: with the last commit LSN released (RELEASED_MARK),
   * in the same sink transaction.
   */
  forSink(positions: Map<number, bigint>): Map<number, bigint> {
    const released = this.assembler.releasedUpTo;
    if (released === undefined || positions.size === 0) return positions;
    return new Map(positions).set(RELEASED_MARK, released);
  }

  /** Positions of the partitions this apply reads now (a revoked one is its new owner's to store). */
  private assignedOnly(positions: Map<number, bigint>): Map<number, bigint> {
    const assigned = new Set(this.consumer()?.assignment() ?? []);
    return new Map([...positions].filter(([p]) => assigned.has(p)));
  }

  /**
   * The first transaction in line cannot become whole: a later one is whole, every partition
   * was read to its end, and it stopped growing (one of its changes was undecodable and
   * dead-lettered; it is the tail of a republished copy whose head was applied before a
   * restart; or a capture without `tx_last` published it). After `incompleteTransactionMs`
   * its changes are applied as they are — version-gated, so a copy of applied changes does
   * nothing — with an error in the log, and the line moves on.
   */
  private async giveUpIfIncomplete(signal: AbortSignal): Promise<void> {
    const { assembler, ctx } = this;
    const now = ctx.options.clock.now();
    if (!assembler.firstStuck()) {
      this.incompleteSince = undefined;
      return;
    }
    if (now < this.nextIncompleteCheck) return;
    this.nextIncompleteCheck = now + 1000;
    const ends = await ctx.withRetry(() => ctx.options.endOffsets(), signal, 'reading stream end offsets');
    if (ends === STOPPED) return;
    const assigned = this.consumer()?.assignment() ?? [];
    if (assigned.length < ends.size) {
      // Another member reads some partitions: the rest of the transaction may be there.
      if (now >= this.nextPartialWarning) {
        this.nextPartialWarning = now + 30_000;
        ctx.log.warn({ assigned, partitions: ends.size }, 'sink.consistency: transactional needs every partition in one apply: run one apply per consumer group');
      }
      this.incompleteSince = undefined;
      return;
    }
    if (!assembler.readTo(ends)) {
      this.incompleteSince = undefined; // still reading: the rest may come
      return;
    }
    // Still growing: not stuck.
    const progress = JSON.stringify(assembler.waitingFor());
    if (progress !== this.incompleteProgress) {
      this.incompleteProgress = progress;
      this.incompleteSince = now;
    }
    this.incompleteSince ??= now;
    if (now - this.incompleteSince < (ctx.options.incompleteTransactionMs ?? 60_000)) return;
    this.incompleteSince = undefined;
    const waiting = assembler.waitingFor();
    const released: AssemblerItem[] = [];
    assembler.releaseFirstAsIs(released);
    assembler.release(released);
    ctx.log.error({ waiting, changes: released.length }, 'transactional: a source transaction cannot become whole; applying the changes it has as they are');
    await this.applyReleased(
      released.map((i) => i.record),
      signal,
      this.assignedOnly(assembler.positions()),
      released.map((i) => i.change),
    );
  }
}

/** Consecutive items of the same source transaction (released transactions are contiguous). */
export function transactionsOf(items: readonly Item[]): Item[][] {
  const out: Item[][] = [];
  for (const item of items) {
    const last = out[out.length - 1];
    if (last && last[0]?.change.commit_lsn === item.change.commit_lsn) last.push(item);
    else out.push([item]);
  }
  return out;
}
