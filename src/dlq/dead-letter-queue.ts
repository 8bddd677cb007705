import { redactUrl } from '../core/redact.js';
import { rowKeyOf, tableLabelOf, type ChangeEvent } from '../core/change.js';
import type { DeadLetterSummary } from './summary.js';

/** A change that could not be decoded, validated or applied, with why and where it came from. */
export interface DeadLetter {
  /** The change, or undefined when the stream record could not even be decoded. */
  change: ChangeEvent | undefined;
  /** The raw stream record when `change` is undefined. */
  raw?: string;
  error: string;
  errorCode: string;
  attempts: number;
  partition: number;
  offset: bigint;
}

export interface DeadLetterEntry extends DeadLetter {
  id: string;
  table: string;
  rowKey: string;
  commitLsn: string | null;
  firstFailedAt: Date;
  lastFailedAt: Date;
}

export interface DeadLetterFilter {
  ids?: string[];
  /** A table as the command line takes it: as printed (`schema.table`, `table` for schema public) or as SQL (see parseTableArg). */
  table?: string;
  /**
   * A table's stored label (`schema.table`, as entries carry it), matched exactly: for callers
   * holding a label, not a person's argument. Through `table` a label with a double quote read
   * as SQL (`not a table name`) and one with a dot in its schema as another table.
   */
  label?: string;
  /** Substring of the error message or code. */
  error?: string;
  /** Only entries whose first failure is older than this many ms. */
  olderThanMs?: number;
  limit?: number;
}

/**
 * Where poison changes wait for a person. Adding is idempotent per change (source, commit
 * LSN, seq), so a crash between dead-lettering and committing the stream position adds
 * nothing twice.
 */
export interface DeadLetterQueue {
  prepare(): Promise<void>;
  add(letters: readonly DeadLetter[]): Promise<void>;
  list(filter: DeadLetterFilter): Promise<DeadLetterEntry[]>;
  /** Removes entries; returns how many. */
  remove(ids: readonly string[]): Promise<number>;
  /** Records another failed attempt (replay that failed again), with its code when known. */
  recordFailure(id: string, error: string, errorCode?: string): Promise<void>;
  depth(): Promise<{ count: number; oldestAgeSeconds: number }>;
  /** `schema.table` + row key of every waiting change: later changes to these rows follow them. */
  blockedRows(): Promise<Set<string>>;
  /**
   * The entries (oldest first, at most `limit`) of rows whose oldest entry only followed
   * another (FOLLOWER_CODES) that is gone — replayed or purged while an apply, whose view of
   * the blocked rows is refreshed every few seconds, dead-lettered the row's next change
   * behind it. Nothing is wrong with them; apply applies them (see Apply.releaseOrphans), a
   * transaction only with all its entries.
   */
  orphans(limit: number): Promise<DeadLetterEntry[]>;
  close(): Promise<void>;
}

/**
 * Codes that say a change is waiting (behind an earlier entry of its row, or in a held table),
 * not why it failed. See keepFirstError.
 */
export const WAITING_CODES: readonly string[] = ['BLOCKED_BY_EARLIER', 'TABLE_BLOCKED'];

/** The code of a change that follows an earlier entry of its row (see DeadLetterQueue.orphans). */
export const BLOCKED_BY_EARLIER = 'BLOCKED_BY_EARLIER';

/**
 * The codes of entries that only follow others: an earlier entry of their row
 * (BLOCKED_BY_EARLIER), or, with sink.consistency: transactional, another change of their
 * source transaction (TRANSACTION_DEAD_LETTERED). A row whose oldest entry has one of them
 * waits for nothing of its own (see DeadLetterQueue.orphans).
 */
export const FOLLOWER_CODES: readonly string[] = [BLOCKED_BY_EARLIER, 'TRANSACTION_DEAD_LETTERED'];

/**
 * A change that already has an entry failed again: the entry keeps its first real diagnosis
 * when the new code only says it waits, or is another real error (the operator needs the
 * cause, not its echo). The same code updates the message; a waiting code is replaced by
 * anything. The table store applies the same rule in SQL.
 */
export function keepFirstError(oldCode: string, newCode: string): boolean {
  return !WAITING_CODES.includes(oldCode) && (WAITING_CODES.includes(newCode) || oldCode !== newCode);
}

/**
 * The identity of a row across the pipeline: `schema.table` + its canonical key. Every
 * change of a keyless table shares one (`[]`): a dead-lettered change there holds the
 * table's later changes, which are only meaningful in order.
 */
export function rowIdOf(change: Pick<ChangeEvent, 'schema' | 'table' | 'key'>): string {
  return `${tableLabelOf(change)}\u0000${rowKeyOf(change)}`;
}

/** The JSON shape of an entry in `syncline dlq list --json` and the dashboard's API (errors redacted). */
export function deadLetterSummary(e: DeadLetterEntry): DeadLetterSummary {
  return {
    id: e.id,
    table: e.table,
    key: e.rowKey,
    op: e.change?.op ?? null,
    commit_lsn: e.commitLsn,
    seq: e.change?.seq ?? null,
    error_code: e.errorCode,
    error: redactUrl(e.error),
    attempts: e.attempts,
    first_failed_at: e.firstFailedAt.toISOString(),
    last_failed_at: e.lastFailedAt.toISOString(),
    stream_partition: e.partition,
    stream_offset: e.offset.toString(),
  };
}
