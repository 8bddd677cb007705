import { errorMessage, SynclineError } from '../core/errors.js';
import { retry, type RetryPolicy } from '../core/retry.js';
import type { ChangeEvent } from '../core/change.js';
import type { Sink } from '../sink/sink.js';
import type { DeadLetterEntry, DeadLetterQueue } from './dead-letter-queue.js';

export interface ReplayResult {
  replayed: number;
  /** Applied but skipped by the version gate: a newer change had already reached the row. */
  stale: number;
  failed: { id: string; error: string }[];
  /** Not tried because an earlier entry of the same row failed again. */
  held: string[];
  /** Undecodable records: nothing to apply, purge them once understood. */
  undecodable: string[];
}

/**
 * Replays dead letters through the normal sink path, oldest first. An entry leaves the
 * queue only when the sink accepted it (applied, or stale under the version gate); one that
 * fails again stays, with its attempts counted, and holds back later entries of its row.
 */
export async function replayDeadLetters(entries: readonly DeadLetterEntry[], sink: Sink, dlq: DeadLetterQueue, group: string, decode?: RawDecoder): Promise<ReplayResult> {
  const result: ReplayResult = { replayed: 0, stale: 0, failed: [], held: [], undecodable: [] };
  const failedRows = new Set<string>();
  const behind = await behindUnselected(entries, dlq);
  for (const entry of entries) {
    // A record kept raw (e.g. SCHEMA_UNKNOWN) is decoded again: its schema may be known now.
    const change = entry.change ?? (entry.raw !== undefined && decode ? await decode(entry.raw).catch(() => undefined) : undefined);
    if (!change) {
      result.undecodable.push(entry.id);
      continue;
    }
    const e = { ...entry, change };
    const row = `${e.table}\u0000${e.rowKey}`;
    if (failedRows.has(row) || behind.has(e.id)) {
      failedRows.add(row);
      result.held.push(e.id);
      continue;
    }
    try {
      const outcome = await applyWithRetry(sink, e, group);
      await dlq.remove([e.id]);
      result.replayed++;
      result.stale += outcome.stale;
    } catch (err) {
      failedRows.add(row);
      await dlq.recordFailure(e.id, errorMessage(err), err instanceof SynclineError ? err.code : undefined);
      result.failed.push({ id: e.id, error: errorMessage(err) });
    }
  }
  return result;
}

/**
 * The ids among `selected` that an older entry of their row, not selected, still precedes
 * in the queue. A replay by filter (`--id`, `--error`, `--older-than`, the dashboard's
 * selection) took the later changes of a row without its poison: the later one applied
 * around the gap and won the version gate, so the poison, replayed after its fix, was stale
 * and its values never arrived (a TOASTed value it set and the later change left unchanged
 * stayed old at the target; `verify` reported the row). They are held instead, as behind a
 * failed entry.
 */
async function behindUnselected(selected: readonly DeadLetterEntry[], dlq: DeadLetterQueue): Promise<Set<string>> {
  const chosen = new Set(selected.map((e) => e.id));
  const behind = new Set<string>();
  // Entries without a change (undecodable records) have no row to keep in order.
  for (const table of new Set(selected.filter((e) => e.table !== '').map((e) => e.table))) {
    const waiting = new Set<string>();
    // Oldest first, so an unselected entry is met before the selected ones behind it.
    for (const e of await dlq.list({ table, limit: Number.MAX_SAFE_INTEGER })) {
      if (e.table !== table) continue;
      const row = e.rowKey;
      if (!chosen.has(e.id)) waiting.add(row);
      else if (waiting.has(row)) behind.add(e.id);
    }
  }
  return behind;
}

/** The change of a dead letter's raw record (`DeadLetter.raw`), or undefined when it has none. */
export type RawDecoder = (raw: string) => Promise<ChangeEvent | undefined>;

/** A replayed entry gets three tries, 200 and 400 ms apart: a blip passes, an outage is reported. */
const REPLAY_RETRY: RetryPolicy = { maxAttempts: 3, baseMs: 200, maxMs: 400, jitter: false };

function applyWithRetry(sink: Sink, e: DeadLetterEntry, group: string): Promise<{ stale: number }> {
  return retry(() => sink.apply([e.change as NonNullable<DeadLetterEntry['change']>], new Map(), group), REPLAY_RETRY);
}
