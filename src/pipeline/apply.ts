import { type ChangeEvent, tableLabelOf } from '../core/change.js';
import type { Clock } from '../core/clock.js';
import type { PipelineEvents } from '../core/events.js';
import { errorMessage, isRetriable, PrerequisiteError, StructuralError, SynclineError } from '../core/errors.js';
import { retry, STOPPED, type RetryPolicy } from '../core/retry.js';
import type { DefinitionLookup } from '../core/schema-evolution.js';
import type { Dedup } from '../dedup/dedup.js';
import { rowIdOf, type DeadLetter, type DeadLetterQueue } from '../dlq/dead-letter-queue.js';
import { replayDeadLetters } from '../dlq/replay.js';
import type { Logger } from '../log/logger.js';
import type { ApplyOutcome, Sink } from '../sink/sink.js';
import type { ConsumerOptions, StreamConsumer, StreamRecord } from '../stream/stream.js';
import type { ApplyContext, Item } from './apply-context.js';
import { applyInLanes, type LanesFailed } from './apply-lanes.js';
import { startPositions } from './apply-start.js';
import { TransactionalApply, transactionsOf } from './apply-transactional.js';
import { decodeRecords, rawOf, type RecordDecoder } from './decode-records.js';
import { GroupOffsets } from './group-offsets.js';
import { HeldTables } from './held-tables.js';
import type { WriterBoundaries } from './writer-boundaries.js';
import { blockedError, emptyOutcome, letterOf, maxDeliverError, PoisonIsolation, supersedesRow, tableBlockedError, truncateParked } from './poison.js';

function isFailure(result: ApplyOutcome | typeof STOPPED | LanesFailed): result is LanesFailed {
  return result !== STOPPED && 'error' in result;
}

/** A polled batch with its changes decoded (or why not: STOPPED), or undefined when not decoded ahead. */
interface Polled {
  records: StreamRecord[];
  decoded: (ChangeEvent | Error)[] | typeof STOPPED | undefined;
}

/** At most this many orphaned dead-lettered changes are applied per dead-letter refresh (see releaseOrphans). */
const ORPHANS_PER_PASS = 1000;

/** A consumer session that ran this long before failing starts the backoff afresh. */
const HEALTHY_SESSION_MS = 60_000;

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
  /** A typed `stream.format` (avro, json_schema, protobuf): records are decoded by schema id; absent: JSON. */
  decode?: RecordDecoder;
  /** `sink.writers`: a change of a source that does not own its table is dead-lettered (NOT_OWNER). */
  writers?: WriterBoundaries;
  /**
   * The source's name and recorded definitions (by source table): before a table is held, its
   * changes from that source that name columns no definition of it has are dead-lettered alone
   * (UnrecordedColumns).
   */
  sourceDefinitions?: { source: string; definitions: DefinitionLookup };
}

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
  private consumer!: StreamConsumer;
  private readonly ctx: ApplyContext;
  private nextDeadLetterRefresh = 0;
  /** The dead-letter depth as last read, plus what was added since (see deadLetter); undefined before the first read. */
  private depth: { count: number; oldestAgeSeconds: number } | undefined;
  /** Next offset to apply per partition, as of the last committed batch (for consumer lag). */
  private readonly applied = new Map<number, bigint>();
  private readonly transactional: TransactionalApply | undefined;
  private readonly held: HeldTables;
  private readonly poison: PoisonIsolation;
  private readonly groupOffsets: GroupOffsets;

  constructor(
    private readonly openConsumer: (options: ConsumerOptions) => Promise<StreamConsumer>,
    private readonly sink: Sink,
    private readonly events: PipelineEvents,
    private readonly log: Logger,
    private readonly options: ApplyOptions,
  ) {
    this.ctx = {
      sink,
      events,
      log,
      options,
      blocked: new Set(),
      withRetry: (fn, signal, what) => this.withRetry(fn, signal, what),
      refreshDeadLetters: (signal) => this.refreshDeadLetters(signal),
    };
    this.transactional = options.transactional ? new TransactionalApply(this.ctx, () => this.consumer, (r, s, p, d) => this.applyBatch(r, s, p, d)) : undefined;
    this.held = new HeldTables(this.ctx);
    this.poison = new PoisonIsolation(this.ctx, this.held, this.transactional !== undefined);
    this.groupOffsets = new GroupOffsets(sink.storesPositions, options.clock, log);
  }

  async run(signal: AbortSignal): Promise<void> {
    await this.withRetry(() => this.sink.prepare(), signal, 'preparing the sink');
    const dlq = this.options.deadLetters;
    if (dlq) await this.withRetry(() => dlq.prepare(), signal, 'preparing the dead-letter queue');
    if (signal.aborted) return;
    await this.refreshDeadLetters(signal);
    await this.held.seed();
    // The group's offsets lag the sink's positions by up to a second of batches (GroupOffsets),
    // lost to a kill -9; a partition that gets no new record would keep them for good (status,
    // the embedded stream's retention, a broker's lag tools): they are brought up on assignment.
    const start = startPositions(this.ctx, signal, this.transactional?.assembler, (stored) => void this.groupOffsets.commit(stored));
    const options: ConsumerOptions = this.sink.storesPositions || this.options.from ? { startPositions: start } : {};
    if (this.transactional) {
      // One apply per group (it reads every partition): what else the group lists at a
      // (re)start is a dead earlier apply, whose session would otherwise hold the join.
      options.exclusive = true;
      options.onExclusive = (outcome) => {
        if ('removed' in outcome) this.log.info({ group: this.options.group, removed: outcome.removed }, 'removed members an earlier apply left in the consumer group');
        else this.log.warn({ group: this.options.group, err: errorMessage(outcome.error) }, 'could not remove the members an earlier apply left in the consumer group; joining waits for their sessions to expire');
      };
    }
    // A stream failure that passes (the broker restarting, no group coordinator yet) reopens
    // the consumer after a backoff instead of ending apply: it resumes from the sink's
    // positions (or the group's committed offsets), and what it reads twice is stale.
    await retry(() => this.consume(options, signal), this.options.retry, {
      signal,
      clock: this.options.clock,
      untilStopped: true,
      healthyAfterMs: HEALTHY_SESSION_MS,
      retriable: (err) => !signal.aborted && isRetriable(err),
      onRetry: ({ attempt, delayMs, error }) => {
        this.events.emit('apply:retry', { what: 'reading the stream', attempt, delayMs, error });
        this.log.warn({ attempt, delayMs, err: errorMessage(error) }, 'reading the stream failed; reopening the consumer');
      },
    });
  }

  /**
   * One consumer session: polls and applies until stopped or the stream fails. Outside
   * transactional mode the next batch is read and decoded while the current one is applied
   * (its classification, which depends on what the current batch dead-letters, waits).
   */
  private async consume(options: ConsumerOptions, signal: AbortSignal): Promise<void> {
    const consumer = await this.openConsumer(options);
    this.consumer = consumer;
    this.groupOffsets.opened(consumer);
    let next: Promise<Polled> | undefined;
    // sync_stream_consumer_lag is measured off the loop, once now and then on a timer: between
    // batches only, a batch waiting on the sink (a lock, an outage retried for as long as it
    // lasts) kept the value from before the stall while the records behind it piled up (150
    // for 20 s, then 13,270). The timer is its only periodic reading (the dead-letter refresh
    // read it too, on the same cadence: twice the end-offset requests).
    await this.refreshConsumerLag();
    const lagTimer = setInterval(() => void this.refreshConsumerLag(), this.options.deadLetterRefreshMs ?? 5000);
    lagTimer.unref();
    try {
      while (!signal.aborted) {
        const { records, decoded } = await (next ?? this.pollAndDecode(consumer, signal));
        next = undefined;
        if (decoded === STOPPED) break;
        if (this.options.clock.now() >= this.nextDeadLetterRefresh) {
          await this.refreshDeadLetters(signal);
          await this.releaseOrphans(signal);
        }
        if (this.held.retryDue()) await this.held.retry(signal);
        if (this.transactional) {
          await this.transactional.next(records, signal);
          continue;
        }
        if (records.length === 0) {
          this.events.emit('apply:caught-up', {});
          continue;
        }
        if (consumer.readAhead !== false) {
          next = this.pollAndDecode(consumer, signal, true);
          // Observed here so that a failed read-ahead is not an unhandled rejection while this batch applies; awaited above.
          next.catch(() => undefined);
        }
        await this.applyBatch(records, signal, undefined, decoded);
      }
    } finally {
      clearInterval(lagTimer);
      // The consumer is closed only once nothing reads from it or commits to it any more.
      await next?.catch(() => undefined);
      await this.groupOffsets.closing();
      await consumer.close().catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'closing the stream consumer failed'));
    }
  }

  /** The next batch and, outside transactional mode, its changes (decoded ahead). */
  private async pollAndDecode(consumer: StreamConsumer, signal: AbortSignal, ahead = false): Promise<Polled> {
    // With lanes, each lane's transaction gets about a batch's worth (per-transaction costs stay as they were).
    const records = await consumer.poll(this.options.batchSize * this.lanes(), this.options.batchWaitMs, ahead ? { ahead } : undefined);
    if (this.transactional || records.length === 0) return { records, decoded: undefined };
    return { records, decoded: await decodeRecords(this.ctx, records, signal) };
  }

  /**
   * `decoded`: the records' changes when already decoded (read ahead, or by transactional
   * mode); an undefined entry is decoded again here, for its reason.
   */
  private async applyBatch(records: StreamRecord[], signal: AbortSignal, storePositions?: Map<number, bigint>, decoded?: readonly (ChangeEvent | Error | undefined)[]): Promise<void> {
    const items: Item[] = [];
    const letters: DeadLetter[] = [];
    const healing: ChangeEvent[] = [];
    const positions = storePositions ?? new Map<number, bigint>();
    const fresh = decoded && !decoded.includes(undefined) ? undefined : await decodeRecords(this.ctx, records, signal);
    if (fresh === STOPPED) return;
    for (let i = 0; i < records.length; i++) {
      const record = records[i] as StreamRecord;
      if (!storePositions) {
        const next = record.offset + 1n;
        if ((positions.get(record.partition) ?? -1n) < next) positions.set(record.partition, next);
      }
      const change = decoded?.[i] ?? (fresh?.[i] as ChangeEvent | Error);
      if (change instanceof Error) {
        letters.push(letterOf(undefined, record, change, rawOf(record.value)));
        continue;
      }
      if (record.deliveries !== undefined) {
        // Every apply that got this change died before getting past it: park it.
        letters.push(letterOf(change, record, maxDeliverError(record.deliveries)));
        this.ctx.blocked.add(rowIdOf(change));
        continue;
      }
      // A keyless table's snapshot reset is not a source TRUNCATE: it always applies.
      if (change.op === 'TRUNCATE' && !change.snapshot_reset && this.options.truncate !== 'apply') {
        if (this.options.truncate === 'dead_letter') letters.push(letterOf(change, record, truncateParked()));
        continue; // ignored by configuration (sink.truncate: ignore)
      }
      const notOwner = this.options.writers?.refuse(change);
      if (notOwner) {
        letters.push(letterOf(change, record, notOwner));
        continue;
      }
      const held = this.held.reasonFor(change);
      if (held !== undefined) letters.push(letterOf(change, record, tableBlockedError(held)));
      // (No dead-lettered row: nothing to look up, the common case.)
      else if (this.ctx.blocked.size === 0 || !this.ctx.blocked.has(rowIdOf(change))) items.push({ change, record });
      else if (supersedesRow(change)) {
        // A snapshot row (or a keyless table's reset) is the whole row as of its version: it
        // may pass the row's dead-lettered changes, which it makes stale (see clearSuperseded).
        items.push({ change, record });
        healing.push(change);
      } else letters.push(letterOf(change, record, blockedError()));
    }
    this.transactional?.keepWhole(items, letters);
    if (this.events.listens('apply:batch:started')) this.events.emit('apply:batch:started', { records: records.length, changes: items.map((i) => i.change) });
    // Dead letters are stored before the position passes them; adding is idempotent.
    if (letters.length > 0 && !(await this.deadLetter(letters, signal))) return;

    // With a dedup backend, changes recorded as applied are left out (and counted) here.
    const duplicates = await this.skipDuplicates(items, signal);
    if (duplicates === STOPPED) return;

    const started = this.options.clock.now();
    let outcome: ApplyOutcome | typeof STOPPED;
    let applied = items;
    // Transactional: with the last released commit LSN (what the sink stores, not the stream).
    const sinkPositions = this.transactional?.forSink(positions) ?? positions;
    const result = await this.applyChanges(items, sinkPositions, storePositions === undefined, signal);
    if (isFailure(result)) {
      const err = result.error;
      // Without a dead-letter queue, or when the sink itself is misconfigured (no change
      // could be applied), stop: nothing is lost, the batch is re-read after the fix.
      if (!this.options.deadLetters || (err instanceof PrerequisiteError && !(err instanceof StructuralError))) throw err;
      const poison: DeadLetter[] = [];
      // Lanes that committed keep their outcome; the failed ones' changes are isolated.
      outcome = result.outcome;
      const units = this.transactional ? transactionsOf(result.items) : result.items.map((i) => [i]);
      const unheld = err instanceof StructuralError ? await this.poison.parkUnrecorded(err.table, units, poison) : units;
      if (unheld === units && err instanceof StructuralError && this.held.hold(err, units)) {
        if (!(await this.poison.applyUnheld(units, poison, outcome, signal))) return;
      } else {
        this.log.warn({ err: errorMessage(err), changes: result.items.length }, 'batch failed permanently; isolating the failing changes');
        if (!(await this.poison.isolate(unheld, poison, outcome, signal))) return;
      }
      if (!(await this.deadLetter(poison, signal))) return;
      const poisoned = new Set(poison.map((l) => l.change));
      applied = items.filter((i) => !poisoned.has(i.change));
      if ((await this.withRetry(() => this.sink.apply([], sinkPositions, this.options.group), signal, 'storing positions')) === STOPPED) return;
    } else outcome = result;
    if (outcome === STOPPED) return; // the batch will be re-read from the stored positions
    // Dedup records are written only after the sink applied the changes, never before: a
    // failed apply is retried instead of being skipped as a duplicate next time.
    const dedup = this.options.dedup;
    if (dedup && (await this.withRetry(() => dedup.mark(applied.map((i) => i.change)), signal, 'recording dedup keys')) === STOPPED) return;
    const seconds = (this.options.clock.now() - started) / 1000;
    if (healing.length > 0) {
      const done = new Set(applied.map((i) => i.change));
      await this.clearSuperseded(healing.filter((c) => done.has(c)), signal);
    }
    if (this.events.listens('apply:batch:applied')) {
      this.events.emit('apply:batch:applied', { changes: items.map((i) => i.change), outcome, records: records.length, duplicates, seconds, at: this.options.clock.now() });
    }
    for (const [p, o] of positions) this.applied.set(p, o);
    await this.groupOffsets.commit(positions);
  }

  /**
   * The batch's changes applied with the positions they reach, in one sink transaction or,
   * when the sink takes several at once, in lanes by stream partition (see applyInLanes). A
   * batch with a TRUNCATE (or a keyless table's reset) is applied whole: the truncation must
   * not race rows of the table another lane writes. A permanent failure is returned, with
   * the changes still to isolate.
   */
  private async applyChanges(items: Item[], positions: Map<number, bigint>, ownPositions: boolean, signal: AbortSignal): Promise<ApplyOutcome | typeof STOPPED | LanesFailed> {
    const lanes = this.lanes();
    if (lanes > 1 && ownPositions && !items.some((i) => i.change.op === 'TRUNCATE')) {
      return applyInLanes(this.ctx, items, positions, lanes, signal);
    }
    try {
      return await this.withRetry(() => this.sink.apply(items.map((i) => i.change), positions, this.options.group), signal, 'applying a batch');
    } catch (error) {
      return { error, items, outcome: emptyOutcome() };
    }
  }

  /** How many lanes a batch may be applied in (see applyChanges). */
  private lanes(): number {
    return !this.transactional && this.sink.storesPositions ? Math.max(1, this.sink.applyLanes ?? 1) : 1;
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
      if (seen[i] === true) this.events.emit('apply:duplicate', item.change);
      else items[kept++] = item;
    }
    const skipped = items.length - kept;
    items.length = kept;
    return skipped;
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
        for (const e of await dlq.list({ label: table, limit: 1_000_000 })) {
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

  /**
   * Applies the dead-lettered changes that no longer wait for an earlier entry (DeadLetterQueue.orphans):
   * an operator replayed or purged a row's entries while this apply still saw the row blocked
   * (its view is refreshed every few seconds), so the row's next change was dead-lettered
   * behind an entry that was gone. Nothing would ever release it: the row stayed behind the
   * source, and with a row changed during every replay no replay caught up. Here, between
   * batches, they are replayed in order like `syncline dlq replay` does (in transactional
   * mode a source transaction whole, and only with all its entries among them); one that
   * fails again keeps its real error (and with it its row's later entries) for a person. Rows
   * of a held table are left to its retry (HeldTables), which releases them when the target is
   * fixed.
   */
  private async releaseOrphans(signal: AbortSignal): Promise<void> {
    const dlq = this.options.deadLetters;
    if (!dlq || signal.aborted || this.ctx.blocked.size === 0) return;
    try {
      const entries = (await dlq.orphans(ORPHANS_PER_PASS)).filter((e) => e.change && this.held.reasonFor(e.change) === undefined);
      if (entries.length === 0) return;
      const result = await replayDeadLetters(entries, this.sink, dlq, this.options.group, { transactional: this.transactional !== undefined });
      // Held ones (a transaction with an entry of a row that still waits) changed nothing.
      if (result.replayed === 0 && result.failed.length === 0) return;
      this.log.info({ replayed: result.replayed, stale: result.stale, failed: result.failed.length }, 'dead-lettered changes whose earlier entries were replayed or purged applied in order');
      await this.refreshDeadLetters(signal);
    } catch (err) {
      // They stay in the queue; the next refresh tries again, or `syncline dlq replay` does.
      this.log.warn({ err: errorMessage(err) }, 'could not apply dead-lettered changes whose earlier entries are gone');
    }
  }

  private async deadLetter(letters: DeadLetter[], signal: AbortSignal): Promise<boolean> {
    if (letters.length === 0) return true;
    const dlq = this.options.deadLetters;
    if (!dlq) {
      const first = letters[0] as DeadLetter;
      throw new SynclineError('DEAD_LETTER_DISABLED', `a change cannot be applied and dead_letter.enabled is false: ${first.error}`, { retriable: false });
    }
    for (const l of letters) if (l.change) this.ctx.blocked.add(rowIdOf(l.change));
    if ((await this.withRetry(() => dlq.add(letters), signal, 'writing the dead-letter queue')) === STOPPED) return false;
    this.events.emit('apply:dead-lettered', { letters });
    // The depth moves by what was added, without re-reading the queue: the re-read (depth and
    // every blocked row) costs as much as the queue is long, and after each batch that
    // dead-letters it made a poison flood quadratic (a batch of 2,000 behind 200k entries waited
    // seconds for it). The rows are blocked above; the periodic refresh corrects the count (an
    // entry added again, another process's entries) and releases what an operator replayed.
    if (this.depth) {
      this.depth = { count: this.depth.count + letters.length, oldestAgeSeconds: this.depth.count === 0 ? 0 : this.depth.oldestAgeSeconds };
      this.events.emit('apply:dead-letters', this.depth);
    }
    return true;
  }

  private async refreshDeadLetters(signal: AbortSignal): Promise<void> {
    this.nextDeadLetterRefresh = this.options.clock.now() + (this.options.deadLetterRefreshMs ?? 5000);
    const dlq = this.options.deadLetters;
    if (!dlq || signal.aborted) return;
    try {
      const [depth, blocked] = await Promise.all([dlq.depth(), dlq.blockedRows()]);
      this.depth = depth;
      this.events.emit('apply:dead-letters', depth);
      // Rows replayed or purged by an operator are released here.
      this.ctx.blocked = blocked;
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
      this.events.emit('apply:consumer-lag', { records: Number(behind) });
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'could not read stream end offsets');
    }
  }

  /**
   * Retries retriable failures with jittered exponential backoff. After `maxAttempts` it
   * keeps trying at the maximum delay (a sink outage must stall the pipeline, not drop
   * changes); permanent failures propagate. Returns STOPPED when stopped meanwhile.
   */
  private withRetry<T>(fn: () => Promise<T>, signal: AbortSignal, what: string): Promise<T | typeof STOPPED> {
    return retry(fn, this.options.retry, {
      signal,
      clock: this.options.clock,
      untilStopped: true,
      onRetry: ({ attempt, delayMs, error }) => {
        this.events.emit('apply:retry', { what, attempt, delayMs, error });
        this.log.warn({ attempt, delayMs, err: errorMessage(error) }, `${what} failed; retrying`);
      },
    });
  }
}
