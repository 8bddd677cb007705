import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import type { Clock } from '../core/clock.js';
import type { Dedup } from '../dedup/dedup.js';
import { errorMessage, isRetriable, PrerequisiteError, StructuralError, SynclineError } from '../core/errors.js';
import { parseLsn } from '../core/lsn.js';
import { backoffDelay, type RetryPolicy } from '../core/retry.js';
import { rowIdOf, type DeadLetter, type DeadLetterEntry, type DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import { replayDeadLetters } from '../dlq/replay.js';
import type { Logger } from '../log/logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ApplyOutcome, Sink } from '../sink/sink.js';
import type { ConsumerOptions, StreamConsumer, StreamRecord } from '../stream/stream.js';
import { decodeChange } from './decode-change.js';
import { TransactionAssembler, type AssemblerItem } from './transaction-assembler.js';
import type { WriterBoundaries } from './writer-boundaries.js';

export interface ApplyOptions {
  group: string;
  batchSize: number;
  batchWaitMs: number;
  retry: RetryPolicy;
  clock: Clock;
  /** Where poison changes go; without one, a permanent failure stops apply (nothing is lost). */
  deadLetters: DeadLetterQueue | undefined;
  /** How often the dead-letter depth and blocked rows are re-read. */
  deadLetterRefreshMs?: number;
  /** What to do with TRUNCATE changes. */
  truncate: 'apply' | 'ignore' | 'dead_letter';
  /**
   * Replay: where to start instead of the sink's positions, on the first assignment only
   * (`syncline apply --from`). The version gate makes the replay harmless.
   */
  from?: (partitions: readonly number[]) => Promise<Map<number, bigint>>;
  /** The stream's end offsets, to refuse sink positions beyond them (a recreated stream). */
  endOffsets: () => Promise<Map<number, bigint>>;
  /** External dedup records (`consumer.deduplication.backend: redis`); absent: the sink's version gate. */
  dedup?: Dedup;
  /**
   * `sink.consistency: transactional`: apply whole source transactions, in commit order, each
   * inside one sink transaction (several may share one). Needs a sink that stores positions
   * and one apply per group (it reads every partition).
   */
  transactional?: boolean;
  /** Transactional mode: how long a transaction that cannot become whole may hold the line once everything was read and it stopped growing. Default 60000. */
  incompleteTransactionMs?: number;
  /** How often a held table (see Apply) is tried again. Default 10000. */
  heldTableRetryMs?: number;
  /** `sink.writers`: a change of a source that does not own its table is dead-lettered (NOT_OWNER). */
  writers?: WriterBoundaries;
}

interface Item {
  change: ChangeEvent;
  record: StreamRecord;
}

const EMPTY_POSITIONS: ReadonlyMap<number, bigint> = new Map();

/** What `withRetry` returns when the pipeline is stopping (distinct from any result, even undefined). */
const STOPPED: unique symbol = Symbol('stopped');

/**
 * Apply: stream → sink. Each polled batch is applied in one sink transaction together with
 * the stream positions it reaches; the stream's own group offsets are committed after that,
 * for monitoring. On restart the sink's stored positions win, so a crash between the two
 * commits replays at most one batch, which the version gate turns into no-ops.
 *
 * A batch that fails permanently is bisected until the poison changes are isolated: the
 * rest is applied, the poison goes to the dead-letter queue, and later changes to a
 * dead-lettered row follow it there (so a row's changes are never applied around a gap).
 *
 * A table whose target does not fit its changes (a StructuralError from the sink: missing
 * table or column, another key) is held: its changes go to the dead-letter queue in order
 * (TABLE_BLOCKED) while every other table keeps flowing, and every `heldTableRetryMs` the held
 * changes are applied again, oldest first; once they apply, the table flows again. Only a
 * problem no table could get past (the sink refuses the connection) stops apply.
 */
export class Apply {
  private readonly tablesSeen = new Set<string>();
  private consumer!: StreamConsumer;
  private blocked = new Set<string>();
  private nextDeadLetterRefresh = 0;
  /** Next offset to apply per partition, as of the last committed batch (for consumer lag). */
  private readonly applied = new Map<number, bigint>();
  private readonly assembler: TransactionAssembler | undefined;
  /** Since when the first transaction in line has been stuck (see giveUpIfIncomplete). */
  private incompleteSince: number | undefined;
  private nextIncompleteCheck = 0;
  private nextPartialWarning = 0;
  private incompleteProgress = '';
  /** Held tables (`schema.table`) and why. */
  private readonly heldTables = new Map<string, string>();
  private nextHeldRetry = 0;

  constructor(
    private readonly openConsumer: (options: ConsumerOptions) => Promise<StreamConsumer>,
    private readonly sink: Sink,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly options: ApplyOptions,
  ) {
    this.assembler = options.transactional ? new TransactionAssembler() : undefined;
  }

  async run(signal: AbortSignal): Promise<void> {
    await this.withRetry(() => this.sink.prepare(), signal, 'preparing the sink');
    const dlq = this.options.deadLetters;
    if (dlq) await this.withRetry(() => dlq.prepare(), signal, 'preparing the dead-letter queue');
    if (signal.aborted) return;
    await this.refreshDeadLetters(signal);
    await this.seedHeldTables();
    const group = this.options.group;
    let replayFrom = this.options.from;
    const startPositions = async (partitions: readonly number[]): Promise<Map<number, bigint>> => {
      if (replayFrom) {
        const from = await replayFrom(partitions);
        replayFrom = undefined;
        for (const [p, o] of from) this.assembler?.startAt(p, o);
        this.log.info({ group, from: Object.fromEntries([...from].map(([p, o]) => [p, o.toString()])) }, 'replaying from the requested position');
        return from;
      }
      // Sinks without stored positions resume from the stream's committed group offsets.
      if (!this.sink.storesPositions) return new Map();
      const read = await this.withRetry(() => this.sink.positions(group), signal, 'reading sink positions');
      const stored = read === STOPPED ? new Map<number, bigint>() : read;
      const ends = await this.options.endOffsets();
      for (const p of partitions) {
        const at = stored.get(p);
        const end = ends.get(p);
        if (at !== undefined && end !== undefined && at > end) {
          // Resuming there would silently skip the records the new stream gets up to that offset.
          throw new PrerequisiteError(
            `the sink's position for stream partition ${p} (${at}) is past the stream's end (${end}): the stream was recreated or truncated`,
            `if the target should be rebuilt from the new stream, delete the group's positions at the sink (DELETE FROM <state_schema>.positions WHERE group_id = '${group}') and run syncline snapshot; otherwise restore the stream directory`,
          );
        }
      }
      // A partition the sink never recorded was never applied: start at its beginning.
      const start = new Map(partitions.map((p) => [p, stored.get(p) ?? 0n]));
      for (const [p, o] of start) this.assembler?.startAt(p, o);
      this.log.info({ group, positions: Object.fromEntries([...start].map(([p, o]) => [p, o.toString()])) }, 'partitions assigned');
      return start;
    };
    this.consumer = await this.openConsumer(this.sink.storesPositions || replayFrom ? { startPositions } : {});
    try {
      while (!signal.aborted) {
        const records = await this.consumer.poll(this.options.batchSize, this.options.batchWaitMs);
        if (this.options.clock.now() >= this.nextDeadLetterRefresh) await this.refreshDeadLetters(signal);
        if (this.heldTables.size > 0 && this.options.clock.now() >= this.nextHeldRetry) await this.retryHeldTables(signal);
        if (this.assembler) {
          await this.applyTransactions(this.assembler, records, signal);
          continue;
        }
        if (records.length === 0) {
          this.markCaughtUp();
          continue;
        }
        await this.applyBatch(records, signal);
      }
    } finally {
      await this.consumer.close();
    }
  }

  /**
   * Transaction-consistent mode: records go through the assembler, and only whole source
   * transactions, in commit order, reach applyBatch, with positions that never pass a
   * record still held.
   */
  private async applyTransactions(assembler: TransactionAssembler, records: StreamRecord[], signal: AbortSignal): Promise<void> {
    const released: AssemblerItem[] = [];
    assembler.add(
      records.map((record) => {
        try {
          return { record, change: decodeChange(record.value) };
        } catch {
          return { record, change: undefined }; // dead-lettered by applyBatch
        }
      }),
      released,
    );
    if (assembler.barrierNeeded()) {
      const ends = await this.withRetry(() => this.options.endOffsets(), signal, 'reading stream end offsets');
      if (ends === STOPPED) return;
      assembler.setBarrier(ends);
    }
    assembler.release(released);
    if (released.length === 0) {
      if (records.length === 0 && assembler.heldRecords === 0) this.markCaughtUp();
      else if (records.length > 0) this.log.debug({ held: assembler.heldRecords, waiting: assembler.waitingFor() }, 'transactional: waiting for a whole transaction');
      await this.giveUpIfIncomplete(assembler, signal);
      return;
    }
    this.incompleteSince = undefined;
    await this.applyBatch(
      released.map((i) => i.record),
      signal,
      this.assignedOnly(assembler.positions()),
      released.map((i) => i.change),
    );
  }

  /** Positions of the partitions this apply reads now (a revoked one is its new owner's to store). */
  private assignedOnly(positions: Map<number, bigint>): Map<number, bigint> {
    const assigned = new Set(this.consumer?.assignment() ?? []);
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
  private async giveUpIfIncomplete(assembler: TransactionAssembler, signal: AbortSignal): Promise<void> {
    const now = this.options.clock.now();
    if (!assembler.firstStuck()) {
      this.incompleteSince = undefined;
      return;
    }
    if (now < this.nextIncompleteCheck) return;
    this.nextIncompleteCheck = now + 1000;
    const ends = await this.withRetry(() => this.options.endOffsets(), signal, 'reading stream end offsets');
    if (ends === STOPPED) return;
    const assigned = this.consumer?.assignment() ?? [];
    if (assigned.length < ends.size) {
      // Another member reads some partitions: the rest of the transaction may be there.
      if (now >= this.nextPartialWarning) {
        this.nextPartialWarning = now + 30_000;
        this.log.warn({ assigned, partitions: ends.size }, 'sink.consistency: transactional needs every partition in one apply: run one apply per consumer group');
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
    if (now - this.incompleteSince < (this.options.incompleteTransactionMs ?? 60_000)) return;
    this.incompleteSince = undefined;
    const waiting = assembler.waitingFor();
    const released: AssemblerItem[] = [];
    assembler.releaseFirstAsIs(released);
    assembler.release(released);
    this.log.error({ waiting, changes: released.length }, 'transactional: a source transaction cannot become whole; applying the changes it has as they are');
    await this.applyBatch(
      released.map((i) => i.record),
      signal,
      this.assignedOnly(assembler.positions()),
      released.map((i) => i.change),
    );
  }

  private async applyBatch(records: StreamRecord[], signal: AbortSignal, storePositions?: Map<number, bigint>, decoded?: (ChangeEvent | undefined)[]): Promise<void> {
    const items: Item[] = [];
    const letters: DeadLetter[] = [];
    const healing: ChangeEvent[] = [];
    const positions = storePositions ?? new Map<number, bigint>();
    for (const [i, record] of records.entries()) {
      if (!storePositions) {
        const next = record.offset + 1n;
        if ((positions.get(record.partition) ?? -1n) < next) positions.set(record.partition, next);
      }
      let change: ChangeEvent;
      try {
        change = decoded?.[i] ?? decodeChange(record.value);
      } catch (err) {
        letters.push(this.letter(undefined, record, err, record.value.toString('utf8')));
        continue;
      }
      if (record.deliveries !== undefined) {
        // Every apply that got this change died before getting past it: park it.
        letters.push(this.letter(change, record, maxDeliverError(record.deliveries)));
        this.blocked.add(rowIdOf(change));
        continue;
      }
      // A keyless table's snapshot reset is not a source TRUNCATE: it always applies.
      if (change.op === 'TRUNCATE' && !change.snapshot_reset && this.options.truncate !== 'apply') {
        if (this.options.truncate === 'dead_letter') letters.push(this.letter(change, record, truncateParked()));
        continue; // ignored by configuration (sink.truncate: ignore)
      }
      const notOwner = this.options.writers?.refuse(change);
      if (notOwner) {
        letters.push(this.letter(change, record, notOwner));
        continue;
      }
      const held = this.heldTables.get(tableLabelOf(change));
      if (held !== undefined) letters.push(this.letter(change, record, tableBlockedError(held)));
      else if (!this.blocked.has(rowIdOf(change))) items.push({ change, record });
      else if (supersedesRow(change)) {
        // A snapshot row (or a keyless table's reset) is the whole row as of its version: it
        // may pass the row's dead-lettered changes, which it makes stale (see clearSuperseded).
        items.push({ change, record });
        healing.push(change);
      } else letters.push(this.letter(change, record, blockedError()));
    }
    if (this.assembler) this.keepTransactionsWhole(items, letters);
    this.metrics.consumed.inc(records.length);
    // Until this batch commits, every scrape reports the age of its oldest change per table:
    // lag grows while apply is slow, retrying or stuck rather than showing the last batch.
    const oldest = new Map<string, number>();
    for (const { change: c } of items) {
      const table = `${c.schema}.${c.table}`;
      const ts = Date.parse(c.commit_ts);
      if (ts < (oldest.get(table) ?? Infinity)) oldest.set(table, ts); // false for an unparsable time
      this.tablesSeen.add(table);
    }
    this.metrics.lagApplying(oldest);
    // Dead letters are stored before the position passes them; adding is idempotent.
    if (letters.length > 0 && !(await this.deadLetter(letters, signal))) return;

    // With a dedup backend, changes recorded as applied are left out (and counted) here.
    const duplicates = await this.skipDuplicates(items, signal);
    if (duplicates === STOPPED) return;

    const started = this.options.clock.now();
    let outcome: ApplyOutcome | typeof STOPPED;
    let applied = items;
    try {
      outcome = await this.withRetry(() => this.sink.apply(items.map((i) => i.change), positions, this.options.group), signal, 'applying a batch');
    } catch (err) {
      // Without a dead-letter queue, or when the sink itself is misconfigured (no change
      // could be applied), stop: nothing is lost, the batch is re-read after the fix.
      if (!this.options.deadLetters || (err instanceof PrerequisiteError && !(err instanceof StructuralError))) throw err;
      const poison: DeadLetter[] = [];
      outcome = emptyOutcome();
      const units = this.assembler ? transactionsOf(items) : items.map((i) => [i]);
      if (err instanceof StructuralError && this.hold(err, units)) {
        if (!(await this.applyUnheld(units, poison, outcome, signal))) return;
      } else {
        this.log.warn({ err: errorMessage(err), changes: items.length }, 'batch failed permanently; isolating the failing changes');
        if (!(await this.isolate(units, poison, outcome, signal))) return;
      }
      if (!(await this.deadLetter(poison, signal))) return;
      const poisoned = new Set(poison.map((l) => l.change));
      applied = items.filter((i) => !poisoned.has(i.change));
      if ((await this.withRetry(() => this.sink.apply([], positions, this.options.group), signal, 'storing positions')) === STOPPED) return;
    }
    if (outcome === STOPPED) return; // the batch will be re-read from the stored positions
    // Dedup records are written only after the sink applied the changes, never before: a
    // failed apply is retried instead of being skipped as a duplicate next time.
    const dedup = this.options.dedup;
    if (dedup && (await this.withRetry(() => dedup.mark(applied.map((i) => i.change)), signal, 'recording dedup keys')) === STOPPED) return;
    this.metrics.applyBatchSeconds.observe((this.options.clock.now() - started) / 1000);
    if (healing.length > 0) {
      const done = new Set(applied.map((i) => i.change));
      await this.clearSuperseded(healing.filter((c) => done.has(c)), signal);
    }
    this.record(items, outcome, records.length, duplicates);
    for (const [p, o] of positions) this.applied.set(p, o);
    await this.consumer.commit(positions).catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'stream offset commit failed (sink positions are authoritative)'));
  }

  /**
   * Transactional mode: a transaction with a change that follows a dead-lettered row goes to
   * the dead-letter queue whole, so that the target never holds part of a transaction.
   */
  private keepTransactionsWhole(items: Item[], letters: DeadLetter[]): void {
    const split = new Set(letters.flatMap((l) => (l.change ? [l.change.commit_lsn] : [])));
    if (split.size === 0) return;
    let kept = 0;
    for (const item of items) {
      if (split.has(item.change.commit_lsn)) {
        letters.push(this.letter(item.change, item.record, transactionError()));
        this.blocked.add(rowIdOf(item.change));
      } else items[kept++] = item;
    }
    items.length = kept;
  }

  /**
   * Removes from `items` (in place) the changes the dedup backend has recorded as applied and
   * counts them as duplicates. Returns how many, or STOPPED.
   */
  private async skipDuplicates(items: Item[], signal: AbortSignal): Promise<number | typeof STOPPED> {
    const dedup = this.options.dedup;
    if (!dedup || items.length === 0) return 0;
    const seen = await this.withRetry(() => dedup.seen(items.map((i) => i.change)), signal, 'reading dedup keys');
    if (seen === STOPPED) return STOPPED;
    let kept = 0;
    for (const [i, item] of items.entries()) {
      if (seen[i] === true) this.metrics.duplicate.inc({ table: `${item.change.schema}.${item.change.table}` });
      else items[kept++] = item;
    }
    const skipped = items.length - kept;
    items.length = kept;
    return skipped;
  }

  /**
   * Applies `units` (without positions), bisecting on permanent failure. A unit is one change,
   * or in transactional mode one source transaction; a unit that fails on its own becomes
   * dead letters and blocks its rows, and a later unit touching a blocked row follows it
   * (a row's changes are never applied around a gap, a transaction never in part). Returns
   * false if stopped meanwhile.
   */
  private async isolate(units: Item[][], poison: DeadLetter[], total: ApplyOutcome, signal: AbortSignal): Promise<boolean> {
    const runnable: Item[][] = [];
    for (const unit of units) {
      if (unit.some((i) => this.blocked.has(rowIdOf(i.change)))) this.park(unit, poison, this.assembler ? transactionError() : blockedError());
      else runnable.push(unit);
    }
    if (runnable.length === 0) return true;
    try {
      const o = await this.withRetry(() => this.sink.apply(runnable.flat().map((i) => i.change), EMPTY_POSITIONS, this.options.group), signal, 'applying part of a batch');
      if (o === STOPPED) return false;
      addOutcome(total, o);
      return true;
    } catch (err) {
      if (err instanceof StructuralError && this.hold(err, runnable)) return this.applyUnheld(runnable, poison, total, signal);
      if (err instanceof PrerequisiteError) throw err;
      if (runnable.length === 1) {
        const unit = runnable[0] as Item[];
        this.park(unit, poison, err);
        const c = (unit[0] as Item).change;
        this.log.error({ table: c.table, key: c.key, commit_lsn: c.commit_lsn, changes: unit.length, err: errorMessage(err) }, this.assembler ? 'transaction dead-lettered' : 'change dead-lettered');
        return true;
      }
      const mid = runnable.length >> 1;
      if (!(await this.isolate(runnable.slice(0, mid), poison, total, signal))) return false;
      return this.isolate(runnable.slice(mid), poison, total, signal);
    }
  }

  /** Turns a unit's changes into dead letters with `err` and blocks their rows. */
  private park(unit: readonly Item[], poison: DeadLetter[], err: unknown): void {
    for (const i of unit) {
      poison.push(this.letter(i.change, i.record, err));
      this.blocked.add(rowIdOf(i.change));
    }
  }

  /**
   * Holds the table `err` names, if `units` have changes of it (else the error is not about
   * these changes: false, and the caller treats it as any error).
   */
  private hold(err: StructuralError, units: readonly Item[][]): boolean {
    if (!units.some((u) => u.some((i) => tableLabelOf(i.change) === err.table))) return false;
    if (!this.heldTables.has(err.table)) {
      this.log.error({ table: err.table, err: err.message }, 'table held: its changes wait in the dead-letter queue, in order, while the other tables flow; fix the target and they apply by themselves');
    }
    this.heldTables.set(err.table, err.message);
    this.metrics.tableBlocked.set({ table: err.table }, 1);
    this.nextHeldRetry = this.options.clock.now() + (this.options.heldTableRetryMs ?? 10_000);
    return true;
  }

  /** Parks the units that touch a held table (a transaction whole) and applies the rest. */
  private async applyUnheld(units: readonly Item[][], poison: DeadLetter[], total: ApplyOutcome, signal: AbortSignal): Promise<boolean> {
    const rest: Item[][] = [];
    for (const unit of units) {
      const held = unit.map((i) => this.heldTables.get(tableLabelOf(i.change))).find((r) => r !== undefined);
      if (held !== undefined) this.park(unit, poison, tableBlockedError(held));
      else rest.push(unit);
    }
    return this.isolate(rest, poison, total, signal);
  }

  /**
   * Snapshot rows (and keyless resets) applied past dead-lettered changes of their row: those
   * older entries are stale now (the row is whole as of the newer version), so they leave the
   * queue and stop holding the row's later changes. This is how `syncline snapshot` and
   * `repair` heal a dead-lettered row. A keyless table's rows share one identity, so its reset
   * clears every older entry of the table.
   */
  private async clearSuperseded(healed: readonly ChangeEvent[], signal: AbortSignal): Promise<void> {
    const dlq = this.options.deadLetters;
    if (!dlq || healed.length === 0) return;
    const newest = new Map<string, bigint>();
    for (const c of healed) {
      const id = rowIdOf(c);
      const v = BigInt(c._version);
      if (v > (newest.get(id) ?? -1n)) newest.set(id, v);
    }
    try {
      const ids: string[] = [];
      for (const table of new Set(healed.map(tableLabelOf))) {
        for (const e of await dlq.list({ table, limit: 1_000_000 })) {
          if (!e.change || tableLabelOf(e.change) !== table) continue;
          const v = newest.get(rowIdOf(e.change));
          if (v !== undefined && BigInt(e.change._version) < v) ids.push(e.id);
        }
      }
      if (ids.length === 0) return;
      await dlq.remove(ids);
      this.log.info({ entries: ids.length, rows: newest.size }, 'dead-lettered changes superseded by snapshot rows left the queue');
      await this.refreshDeadLetters(signal);
    } catch (err) {
      // They stay: replaying them later is stale, and harmless.
      this.log.warn({ err: errorMessage(err) }, 'could not clear dead-lettered changes superseded by snapshot rows');
    }
  }

  /** After a restart: the tables whose changes wait in the dead-letter queue as held. */
  private async seedHeldTables(): Promise<void> {
    const dlq = this.options.deadLetters;
    if (!dlq) return;
    try {
      for (const e of await dlq.list({ error: TABLE_BLOCKED, limit: 10_000 })) {
        if (e.errorCode === TABLE_BLOCKED && !this.heldTables.has(e.table)) {
          this.heldTables.set(e.table, e.error);
          this.metrics.tableBlocked.set({ table: e.table }, 1);
        }
      }
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not read held tables from the dead-letter queue');
    }
  }

  /**
   * Applies each held table's waiting changes again, oldest first, in batches. A row whose
   * entry is a real poison (any code but TABLE_BLOCKED / BLOCKED_BY_EARLIER) keeps its later
   * entries waiting for a person. When nothing of the table could be replayed any more
   * without error, the table flows again.
   */
  private async retryHeldTables(signal: AbortSignal): Promise<void> {
    const dlq = this.options.deadLetters;
    this.nextHeldRetry = this.options.clock.now() + (this.options.heldTableRetryMs ?? 10_000);
    if (!dlq) return;
    for (const table of [...this.heldTables.keys()]) {
      let replayed = 0;
      for (;;) {
        if (signal.aborted) return;
        const entries = await dlq.list({ table, limit: HELD_REPLAY_BATCH });
        const waiting = new Set<string>();
        const ready: DeadLetterEntry[] = [];
        for (const e of entries) {
          if (!e.change || e.table !== table) continue;
          const row = rowIdOf(e.change);
          if (waiting.has(row)) continue;
          if (e.errorCode === TABLE_BLOCKED || e.errorCode === 'BLOCKED_BY_EARLIER') ready.push(e);
          else waiting.add(row);
        }
        if (ready.length === 0) break;
        try {
          const o = await this.withRetry(() => this.sink.apply(ready.map((e) => e.change as ChangeEvent), EMPTY_POSITIONS, this.options.group), signal, 'applying a held table');
          if (o === STOPPED) return;
          for (const [t, counts] of o.byTable) {
            this.metrics.applied.inc({ table: t }, counts.applied);
            if (counts.stale > 0) this.metrics.stale.inc({ table: t }, counts.stale);
          }
        } catch (err) {
          if (err instanceof PrerequisiteError) {
            this.heldTables.set(table, err.message);
            this.log.debug({ table, err: err.message }, 'held table still does not apply');
            if (replayed > 0) this.log.info({ table, replayed }, 'held table: part of its changes applied');
            return this.refreshDeadLetters(signal);
          }
          // A poison among them: the one-by-one replay parks it and applies the rest.
          const result = await replayDeadLetters(ready, this.sink, dlq, this.options.group);
          replayed += result.replayed;
          if (result.replayed === 0) break;
          continue;
        }
        await dlq.remove(ready.map((e) => e.id));
        replayed += ready.length;
      }
      this.heldTables.delete(table);
      this.metrics.tableBlocked.set({ table }, 0);
      this.log.info({ table, replayed }, 'held table released: its waiting changes applied in order, it flows again');
    }
    await this.refreshDeadLetters(signal);
  }

  private async deadLetter(letters: DeadLetter[], signal: AbortSignal): Promise<boolean> {
    if (letters.length === 0) return true;
    const dlq = this.options.deadLetters;
    if (!dlq) {
      const first = letters[0] as DeadLetter;
      throw new SynclineError('DEAD_LETTER_DISABLED', `a change cannot be applied and dead_letter.enabled is false: ${first.error}`, { retriable: false });
    }
    for (const l of letters) if (l.change) this.blocked.add(rowIdOf(l.change));
    if ((await this.withRetry(() => dlq.add(letters), signal, 'writing the dead-letter queue')) === STOPPED) return false;
    this.metrics.deadlettered.inc(letters.length);
    await this.refreshDeadLetters(signal);
    return true;
  }

  private async refreshDeadLetters(signal: AbortSignal): Promise<void> {
    this.nextDeadLetterRefresh = this.options.clock.now() + (this.options.deadLetterRefreshMs ?? 5000);
    await this.refreshConsumerLag();
    const dlq = this.options.deadLetters;
    if (!dlq || signal.aborted) return;
    try {
      const [depth, blocked] = await Promise.all([dlq.depth(), dlq.blockedRows()]);
      this.metrics.deadletterCount.set(depth.count);
      this.metrics.deadletterOldestAge.set(depth.oldestAgeSeconds);
      // Rows replayed or purged by an operator are released here.
      this.blocked = blocked;
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not read the dead-letter queue depth');
    }
  }

  /** `sync_stream_consumer_lag`: records in the assigned partitions not applied yet. */
  private async refreshConsumerLag(): Promise<void> {
    if (!this.consumer) return;
    try {
      const ends = await this.options.endOffsets();
      let behind = 0n;
      for (const p of this.consumer.assignment()) {
        const end = ends.get(p) ?? 0n;
        const at = this.applied.get(p);
        if (at !== undefined && end > at) behind += end - at;
      }
      this.metrics.consumerLag.set(Number(behind));
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'could not read stream end offsets');
    }
  }

  private letter(change: ChangeEvent | undefined, record: StreamRecord, err: unknown, raw?: string): DeadLetter {
    const letter: DeadLetter = {
      change,
      error: errorMessage(err),
      errorCode: err instanceof SynclineError ? err.code : 'UNKNOWN',
      attempts: 1,
      partition: record.partition,
      offset: record.offset,
    };
    if (raw !== undefined) letter.raw = raw;
    return letter;
  }

  private record(items: Item[], outcome: ApplyOutcome, consumed: number, duplicates: number): void {
    for (const [table, counts] of outcome.byTable) {
      this.metrics.applied.inc({ table }, counts.applied);
      if (counts.stale > 0) this.metrics.stale.inc({ table }, counts.stale);
    }
    for (const k of outcome.conflicts ?? []) this.metrics.conflicts.inc({ table: k.table, strategy: k.strategy }, k.count);
    const now = this.options.clock.now();
    // Changes folded into a newer change to the same key never reach the version gate. In a
    // replayed batch they are duplicates as much as the stale row that absorbed them, so they
    // are attributed in the proportion stale / (applied + stale): exact for the usual all-new
    // or all-replayed batch (without it a pure replay showed ~0.6 instead of 1).
    const gated = outcome.applied + outcome.stale;
    const skipped = duplicates + (gated === 0 ? 0 : outcome.stale + (outcome.superseded * outcome.stale) / gated);
    this.metrics.recordConsumed(consumed, skipped, now);
    // The lag of the batch's oldest change at its commit (no longer growing).
    this.metrics.lagApplied(now);
    // The highest commit LSN, not the last item's: a batch interleaves partitions.
    let newest = 0n;
    for (const { change: c } of items) {
      const lsn = parseLsn(c.commit_lsn);
      if (lsn > newest) newest = lsn;
    }
    if (newest > 0n) this.metrics.applyLsn.set(Number(newest));
  }

  private markCaughtUp(): void {
    this.metrics.lagCaughtUp(this.tablesSeen);
  }

  /**
   * Retries retriable failures with jittered exponential backoff. After `maxAttempts` it
   * keeps trying at the maximum delay (a sink outage must stall the pipeline, not drop
   * changes); permanent failures propagate. Returns STOPPED when stopped meanwhile.
   */
  private async withRetry<T>(fn: () => Promise<T>, signal: AbortSignal, what: string): Promise<T | typeof STOPPED> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isRetriable(err)) throw err;
        this.metrics.retried.inc();
        const policy = this.options.retry;
        const delay = attempt < policy.maxAttempts ? backoffDelay(policy, attempt) : policy.maxMs;
        this.log.warn({ attempt, delayMs: delay, err: errorMessage(err) }, `${what} failed; retrying`);
        await this.options.clock.sleep(delay, signal);
        if (signal.aborted) return STOPPED;
      }
    }
  }
}

const TABLE_BLOCKED = 'TABLE_BLOCKED';
/** Held changes applied again per statement batch when a held table is retried. */
const HELD_REPLAY_BATCH = 1000;

function tableBlockedError(reason: string): SynclineError {
  return new SynclineError(TABLE_BLOCKED, `the target table cannot take this table's changes; held in order until it is fixed: ${reason}`, { retriable: false });
}

/** A snapshot row or a keyless table's reset: the row (table) whole as of its version. */
function supersedesRow(change: ChangeEvent): boolean {
  return change.op === 'READ' || change.snapshot_reset === true;
}

function blockedError(): SynclineError {
  return new SynclineError('BLOCKED_BY_EARLIER', 'an earlier change to this row is in the dead-letter queue; this one follows it to keep the row in order', { retriable: false });
}

function maxDeliverError(deliveries: number): SynclineError {
  return new SynclineError(
    'MAX_DELIVER_EXCEEDED',
    `delivered ${deliveries} times and every apply process stopped (crashed or was killed) before getting past it (stream.max_deliver)`,
    { retriable: false },
  );
}

function transactionError(): SynclineError {
  return new SynclineError('TRANSACTION_DEAD_LETTERED', 'another change of this source transaction is in the dead-letter queue; sink.consistency: transactional keeps the transaction whole', { retriable: false });
}

/** Consecutive items of the same source transaction (released transactions are contiguous). */
function transactionsOf(items: readonly Item[]): Item[][] {
  const out: Item[][] = [];
  for (const item of items) {
    const last = out[out.length - 1];
    if (last && last[0]?.change.commit_lsn === item.change.commit_lsn) last.push(item);
    else out.push([item]);
  }
  return out;
}

function truncateParked(): SynclineError {
  return new SynclineError('TRUNCATE_PARKED', 'TRUNCATE parked by sink.truncate: dead_letter; replay it to apply it', { retriable: false });
}

function emptyOutcome(): ApplyOutcome {
  return { applied: 0, stale: 0, superseded: 0, byTable: new Map() };
}

function addOutcome(total: ApplyOutcome, o: ApplyOutcome): void {
  total.applied += o.applied;
  total.stale += o.stale;
  total.superseded += o.superseded;
  for (const [table, c] of o.byTable) {
    const t = total.byTable.get(table) ?? { applied: 0, stale: 0 };
    t.applied += c.applied;
    t.stale += c.stale;
    total.byTable.set(table, t);
  }
  if (o.conflicts) total.conflicts = [...(total.conflicts ?? []), ...o.conflicts];
}
