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
  /** Not tried because an earlier entry of the same row (or of its transaction) failed again or was not selected. */
  held: string[];
  /** Undecodable records: nothing to apply, purge them once understood. */
  undecodable: string[];
}

export interface ReplayOptions {
  /** Decodes the entries kept raw (a typed stream format). */
  decode?: RawDecoder | undefined;
  /**
   * `sink.consistency: transactional`: the entries of one source transaction are applied
   * together, in one sink transaction, or not at all.
   */
  transactional?: boolean | undefined;
}

type Decoded = DeadLetterEntry & { change: ChangeEvent };

/**
 * Replays dead letters through the normal sink path, oldest first. An entry leaves the
 * queue only when the sink accepted it (applied, or stale under the version gate); one that
 * fails again stays, with its attempts counted, and holds back later entries of its row.
 * In transactional mode the unit is the source transaction: replayed one change at a time,
 * a transaction with a change the target still refused was applied in part (a transfer's
 * credit without its debit), which transactional consistency promises never to show.
 */
export async function replayDeadLetters(entries: readonly DeadLetterEntry[], sink: Sink, dlq: DeadLetterQueue, group: string, options: ReplayOptions = {}): Promise<ReplayResult> {
  const result: ReplayResult = { replayed: 0, stale: 0, failed: [], held: [], undecodable: [] };
  const transactional = options.transactional === true;
  const failedRows = new Set<string>();
  const behind = await behindUnselected(entries, dlq, transactional);
  const decoded: Decoded[] = [];
  for (const entry of entries) {
    // A record kept raw (e.g. SCHEMA_UNKNOWN) is decoded again: its schema may be known now.
    const change = entry.change ?? (entry.raw !== undefined && options.decode ? await options.decode(entry.raw).catch(() => undefined) : undefined);
    if (change) decoded.push({ ...entry, change });
    else result.undecodable.push(entry.id);
  }
  for (const unit of unitsOf(decoded, transactional)) {
    const rows = unit.map(rowOf);
    const ids = unit.map((e) => e.id);
    if (unit.some((e) => failedRows.has(rowOf(e)) || behind.has(e.id))) {
      for (const r of rows) failedRows.add(r);
      result.held.push(...ids);
      continue;
    }
    try {
      const outcome = await retry(() => sink.apply(unit.map((e) => e.change), new Map(), group), REPLAY_RETRY);
      await dlq.remove(ids);
      result.replayed += unit.length;
      result.stale += outcome.stale;
    } catch (err) {
      for (const r of rows) failedRows.add(r);
      for (const id of ids) {
        await dlq.recordFailure(id, errorMessage(err), err instanceof SynclineError ? err.code : undefined);
        result.failed.push({ id, error: errorMessage(err) });
      }
    }
  }
  return result;
}

function rowOf(e: DeadLetterEntry): string {
  return `${e.table}\u0000${e.rowKey}`;
}

/** A source transaction's identity; undefined for a snapshot row, which belongs to none. */
function transactionOf(change: ChangeEvent | undefined): string | undefined {
  return change && change.op !== 'READ' && change.commit_lsn ? `${change.source}\u0000${change.commit_lsn}` : undefined;
}

/** The entries in replay units, oldest first: one entry each, or in transactional mode one source transaction each. */
function unitsOf(entries: readonly Decoded[], transactional: boolean): Decoded[][] {
  if (!transactional) return entries.map((e) => [e]);
  const units = new Map<string, Decoded[]>();
  for (const e of entries) {
    const key = transactionOf(e.change) ?? `entry\u0000${e.id}`;
    const unit = units.get(key);
    if (unit) unit.push(e);
    else units.set(key, [e]);
  }
  return [...units.values()];
}

/**
 * The ids among `selected` that an older entry of their row, not selected, still precedes
 * in the queue — or, in transactional mode, whose source transaction has an entry not
 * selected. A replay by filter (`--id`, `--error`, `--older-than`, the dashboard's
 * selection) took the later changes of a row without its poison: the later one applied
 * around the gap and won the version gate, so the poison, replayed after its fix, was stale
 * and its values never arrived (a TOASTed value it set and the later change left unchanged
 * stayed old at the target; `verify` reported the row). They are held instead, as behind a
 * failed entry.
 */
async function behindUnselected(selected: readonly DeadLetterEntry[], dlq: DeadLetterQueue, transactional: boolean): Promise<Set<string>> {
  const chosen = new Set(selected.map((e) => e.id));
  const behind = new Set<string>();
  // Entries without a change (undecodable records) have no row to keep in order.
  const tables = new Set(selected.filter((e) => e.table !== '').map((e) => e.table));
  if (tables.size === 0) return behind;
  // A transaction may span tables: then the whole queue is read, else the selection's tables.
  const queued = transactional
    ? await dlq.list({ limit: Number.MAX_SAFE_INTEGER })
    : (await Promise.all([...tables].map((table) => dlq.list({ label: table, limit: Number.MAX_SAFE_INTEGER })))).flat();
  const partial = new Set<string>();
  if (transactional) {
    for (const e of queued) {
      const tx = chosen.has(e.id) ? undefined : transactionOf(e.change);
      if (tx) partial.add(tx);
    }
  }
  const waiting = new Set<string>();
  // Oldest first per table, so an unselected entry is met before the selected ones behind it.
  for (const e of queued) {
    if (!tables.has(e.table)) continue;
    if (!chosen.has(e.id)) waiting.add(rowOf(e));
    else if (waiting.has(rowOf(e)) || partial.has(transactionOf(e.change) ?? '')) behind.add(e.id);
  }
  return behind;
}

/** The change of a dead letter's raw record (`DeadLetter.raw`), or undefined when it has none. */
export type RawDecoder = (raw: string) => Promise<ChangeEvent | undefined>;

/** A replayed entry gets three tries, 200 and 400 ms apart: a blip passes, an outage is reported. */
const REPLAY_RETRY: RetryPolicy = { maxAttempts: 3, baseMs: 200, maxMs: 400, jitter: false };
