import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import { errorMessage, PrerequisiteError, type StructuralError } from '../core/errors.js';
import { STOPPED } from '../core/retry.js';
import { rowIdOf, type DeadLetterEntry } from '../dlq/dead-letter-queue.js';
import { replayDeadLetters } from '../dlq/replay.js';
import { EMPTY_POSITIONS, type ApplyContext, type Item } from './apply-context.js';
import { TABLE_BLOCKED } from './poison.js';

/** Held changes applied again per statement batch when a held table is retried. */
const HELD_REPLAY_BATCH = 1000;

/**
 * Held tables: a table whose target does not fit its changes (a StructuralError from the
 * sink: missing table or column, another key) is held. Its changes go to the dead-letter
 * queue in order (TABLE_BLOCKED) while every other table keeps flowing, and every
 * `heldTableRetryMs` the held changes are applied again, oldest first; once they apply, the
 * table flows again.
 */
export class HeldTables {
  /** Held tables (`schema.table`) and why. */
  private readonly tables = new Map<string, string>();
  private nextRetry = 0;

  constructor(private readonly ctx: ApplyContext) {}

  /** Why the table of `change` is held; undefined when it flows. */
  reasonFor(change: ChangeEvent): string | undefined {
    return this.tables.size === 0 ? undefined : this.tables.get(tableLabelOf(change));
  }

  /** Some table is held and its retry is due. */
  retryDue(): boolean {
    return this.tables.size > 0 && this.ctx.options.clock.now() >= this.nextRetry;
  }

  /**
   * Holds the table `err` names, if `units` have changes of it (else the error is not about
   * these changes: false, and the caller treats it as any error).
   */
  hold(err: StructuralError, units: readonly Item[][]): boolean {
    const { ctx } = this;
    if (!units.some((u) => u.some((i) => tableLabelOf(i.change) === err.table))) return false;
    if (!this.tables.has(err.table)) {
      ctx.log.error({ table: err.table, err: err.message }, 'table held: its changes wait in the dead-letter queue, in order, while the other tables flow; fix the target and they apply by themselves');
    }
    this.tables.set(err.table, err.message);
    ctx.events.emit('apply:table:held', { table: err.table });
    this.nextRetry = ctx.options.clock.now() + (ctx.options.heldTableRetryMs ?? 10_000);
    return true;
  }

  /** After a restart: the tables whose changes wait in the dead-letter queue as held. */
  async seed(): Promise<void> {
    const { ctx } = this;
    const dlq = ctx.options.deadLetters;
    if (!dlq) return;
    try {
      for (const e of await dlq.list({ error: TABLE_BLOCKED, limit: 10_000 })) {
        if (e.errorCode === TABLE_BLOCKED && !this.tables.has(e.table)) {
          this.tables.set(e.table, e.error);
          ctx.events.emit('apply:table:held', { table: e.table });
        }
      }
    } catch (err) {
      ctx.log.warn({ err: errorMessage(err) }, 'could not read held tables from the dead-letter queue');
    }
  }

  /**
   * Applies each held table's waiting changes again, oldest first, in batches. A row whose
   * entry is a real poison (any code but TABLE_BLOCKED / BLOCKED_BY_EARLIER) keeps its later
   * entries waiting for a person. When nothing of the table could be replayed any more
   * without error, the table flows again.
   */
  async retry(signal: AbortSignal): Promise<void> {
    const { ctx } = this;
    const dlq = ctx.options.deadLetters;
    this.nextRetry = ctx.options.clock.now() + (ctx.options.heldTableRetryMs ?? 10_000);
    if (!dlq) return;
    // Every held table is tried: one that still does not apply must not keep a fixed one held.
    tables: for (const table of [...this.tables.keys()]) {
      let replayed = 0;
      // Entries of rows waiting for a person stay in the queue, ahead of the others: each
      // listing reads past them (the oldest 1,000 may all be theirs, and then "nothing ready"
      // is not "all applied": the table was released with its later entries left queued).
      let parked = 0;
      for (;;) {
        if (signal.aborted) return;
        const limit = parked + HELD_REPLAY_BATCH;
        const entries = await dlq.list({ label: table, limit });
        const waiting = new Set<string>();
        const ready: DeadLetterEntry[] = [];
        for (const e of entries) {
          if (!e.change || e.table !== table) continue;
          const row = rowIdOf(e.change);
          if (waiting.has(row)) continue;
          if (e.errorCode === TABLE_BLOCKED || e.errorCode === 'BLOCKED_BY_EARLIER') ready.push(e);
          else waiting.add(row);
        }
        // What stays queued of this listing (waiting rows', undecodable): the next one reads past it.
        parked = entries.length - ready.length;
        if (ready.length === 0) {
          if (entries.length < limit) break; // every entry of the table read: only waiting rows' are left
          continue;
        }
        try {
          const o = await ctx.withRetry(() => ctx.sink.apply(ready.map((e) => e.change as ChangeEvent), EMPTY_POSITIONS, ctx.options.group), signal, 'applying a held table');
          if (o === STOPPED) return;
          ctx.events.emit('apply:held:applied', { outcome: o });
        } catch (err) {
          if (err instanceof PrerequisiteError) {
            // A new reason (the first fixed, another found) is news for the operator.
            if (this.tables.get(table) !== err.message) ctx.log.warn({ table, err: err.message }, 'held table: still does not apply, for another reason');
            else ctx.log.debug({ table, err: err.message }, 'held table still does not apply');
            this.tables.set(table, err.message);
            if (replayed > 0) ctx.log.info({ table, replayed }, 'held table: part of its changes applied');
            continue tables;
          }
          // A poison among them: the one-by-one replay parks it and applies the rest.
          const result = await replayDeadLetters(ready, ctx.sink, dlq, ctx.options.group);
          replayed += result.replayed;
          // Failures now wait for a person (the next listing reads past them). Nothing applied
          // and nothing failed: the table stays held and is tried again at the next retry.
          if (result.replayed === 0 && result.failed.length === 0) continue tables;
          continue;
        }
        await dlq.remove(ready.map((e) => e.id));
        replayed += ready.length;
      }
      this.tables.delete(table);
      ctx.events.emit('apply:table:released', { table });
      ctx.log.info({ table, replayed }, 'held table released: its waiting changes applied in order, it flows again');
    }
    await ctx.refreshDeadLetters(signal);
  }
}
