import type { ChangeEvent } from '../core/change.js';
import { errorMessage, PrerequisiteError, StructuralError, SynclineError } from '../core/errors.js';
import { STOPPED } from '../core/retry.js';
import { rowIdOf, type DeadLetter } from '../dlq/dead-letter-queue.js';
import type { ApplyOutcome } from '../sink/sink.js';
import type { StreamRecord } from '../stream/stream.js';
import { EMPTY_POSITIONS, type ApplyContext, type Item } from './apply-context.js';
import type { HeldTables } from './held-tables.js';
import { UnrecordedColumns } from './unrecorded-columns.js';

/**
 * Poison isolation: a batch that failed permanently is applied again in halves, until each
 * failing unit stands alone. A unit is one change, or in transactional mode one source
 * transaction; a unit that fails on its own becomes dead letters and blocks its rows, and a
 * later unit touching a blocked row follows it (a row's changes are never applied around a
 * gap, a transaction never in part).
 */
export class PoisonIsolation {
  private readonly unrecorded: UnrecordedColumns | undefined;

  constructor(
    private readonly ctx: ApplyContext,
    private readonly held: HeldTables,
    /** Units are source transactions (sink.consistency: transactional). */
    private readonly transactional: boolean,
  ) {
    const s = ctx.options.sourceDefinitions;
    this.unrecorded = s ? new UnrecordedColumns(s.definitions, s.source) : undefined;
  }

  /**
   * Applies `units` (without positions), bisecting on permanent failure; the poison is
   * added to `poison`, the outcome of what applied to `total`. Returns false if stopped meanwhile.
   */
  async isolate(units: Item[][], poison: DeadLetter[], total: ApplyOutcome, signal: AbortSignal): Promise<boolean> {
    const { ctx } = this;
    const runnable: Item[][] = [];
    for (const unit of units) {
      const follows = unit.map((i) => ctx.blocked.has(rowIdOf(i.change)));
      if (!follows.includes(true)) runnable.push(unit);
      // A change of a held row waits for that row; the rest of its transaction for the transaction.
      else if (this.transactional) unit.forEach((i, n) => this.park([i], poison, follows[n] ? blockedError() : transactionError()));
      else this.park(unit, poison, blockedError());
    }
    if (runnable.length === 0) return true;
    try {
      const o = await ctx.withRetry(() => ctx.sink.apply(runnable.flat().map((i) => i.change), EMPTY_POSITIONS, ctx.options.group), signal, 'applying part of a batch');
      if (o === STOPPED) return false;
      addOutcome(total, o);
      return true;
    } catch (err) {
      if (err instanceof StructuralError) {
        const rest = await this.parkUnrecorded(err.table, runnable, poison);
        if (rest !== runnable) return this.isolate(rest, poison, total, signal);
        if (this.held.hold(err, runnable)) return this.applyUnheld(runnable, poison, total, signal);
      }
      if (err instanceof PrerequisiteError) throw err;
      if (runnable.length === 1) {
        const unit = runnable[0] as Item[];
        this.park(unit, poison, err);
        const c = (unit[0] as Item).change;
        ctx.log.error({ table: c.table, key: c.key, commit_lsn: c.commit_lsn, changes: unit.length, err: errorMessage(err) }, this.transactional ? 'transaction dead-lettered' : 'change dead-lettered');
        return true;
      }
      const mid = runnable.length >> 1;
      if (!(await this.isolate(runnable.slice(0, mid), poison, total, signal))) return false;
      return this.isolate(runnable.slice(mid), poison, total, signal);
    }
  }

  /** Parks the units that touch a held table (a transaction whole) and applies the rest. */
  async applyUnheld(units: readonly Item[][], poison: DeadLetter[], total: ApplyOutcome, signal: AbortSignal): Promise<boolean> {
    const rest: Item[][] = [];
    for (const unit of units) {
      const held = unit.map((i) => this.held.reasonFor(i.change)).find((r) => r !== undefined);
      if (held !== undefined) this.park(unit, poison, tableBlockedError(held));
      else rest.push(unit);
    }
    return this.isolate(rest, poison, total, signal);
  }

  /**
   * `units` without those holding a change of `table` that names columns no recorded
   * definition of the table has (see UnrecordedColumns): such a change is parked alone as
   * EVENT_INVALID (in transactional mode its transaction with it) instead of holding the
   * table. `units` itself when there is none.
   */
  async parkUnrecorded(table: string, units: Item[][], poison: DeadLetter[]): Promise<Item[][]> {
    const found = this.unrecorded ? await this.unrecorded.find(table, units) : undefined;
    if (!found || found.size === 0) return units;
    const rest: Item[][] = [];
    for (const unit of units) {
      if (!unit.some((i) => found.has(i.change))) {
        rest.push(unit);
        continue;
      }
      for (const i of unit) {
        const lacking = found.get(i.change);
        this.park([i], poison, lacking ? unrecordedColumnsError(table, i.change, lacking) : transactionError());
        if (lacking) this.ctx.log.error({ table, key: i.change.key, commit_lsn: i.change.commit_lsn, columns: lacking }, 'change dead-lettered: it names columns capture never recorded for its table');
      }
    }
    return rest;
  }

  /** Turns a unit's changes into dead letters with `err` and blocks their rows. */
  park(unit: readonly Item[], poison: DeadLetter[], err: unknown): void {
    for (const i of unit) {
      poison.push(letterOf(i.change, i.record, err));
      this.ctx.blocked.add(rowIdOf(i.change));
    }
  }
}

/** A dead letter for `change` (undefined: the record could not be decoded, `raw` is kept). */
export function letterOf(change: ChangeEvent | undefined, record: StreamRecord, err: unknown, raw?: string): DeadLetter {
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

export const TABLE_BLOCKED = 'TABLE_BLOCKED';

export function tableBlockedError(reason: string): SynclineError {
  return new SynclineError(TABLE_BLOCKED, `the target table cannot take this table's changes; held in order until it is fixed: ${reason}`, { retriable: false });
}

export function blockedError(): SynclineError {
  return new SynclineError('BLOCKED_BY_EARLIER', 'an earlier change to this row is in the dead-letter queue; this one follows it to keep the row in order', { retriable: false });
}

export function maxDeliverError(deliveries: number): SynclineError {
  return new SynclineError(
    'MAX_DELIVER_EXCEEDED',
    `delivered ${deliveries} times and every apply process stopped (crashed or was killed) before getting past it (stream.max_deliver)`,
    { retriable: false },
  );
}

export function unrecordedColumnsError(table: string, change: ChangeEvent, lacking: readonly string[]): SynclineError {
  return new SynclineError(
    'EVENT_INVALID',
    `change of ${table} names column(s) ${lacking.join(', ')} that capture never recorded for the table (its _schema_version ${change._schema_version} is recorded without them): not a change capture wrote from this source.\n  fix: find what else writes to the stream (stream.topic, stream.path); purge the entry (syncline dlq purge), or replay it once it is right`,
    { retriable: false },
  );
}

export function transactionError(): SynclineError {
  return new SynclineError('TRANSACTION_DEAD_LETTERED', 'another change of this source transaction is in the dead-letter queue; sink.consistency: transactional keeps the transaction whole', { retriable: false });
}

export function truncateParked(): SynclineError {
  return new SynclineError('TRUNCATE_PARKED', 'TRUNCATE parked by sink.truncate: dead_letter; replay it to apply it', { retriable: false });
}

/** A snapshot row or a keyless table's reset: the row (table) whole as of its version. */
export function supersedesRow(change: ChangeEvent): boolean {
  return change.op === 'READ' || change.snapshot_reset === true;
}

export function emptyOutcome(): ApplyOutcome {
  return { applied: 0, stale: 0, superseded: 0, byTable: new Map() };
}

export function addOutcome(total: ApplyOutcome, o: ApplyOutcome): void {
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
