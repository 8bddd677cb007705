/**
 * SQLite errors → what the apply loop does with them, as data. Result codes not listed are
 * permanent: retrying the same batch would fail the same way, so the batch is split and the
 * offending change goes to the dead-letter queue.
 */
import { PrerequisiteError, SynclineError, errorMessage } from '../../core/errors.js';

/** SQLite result codes (better-sqlite3's `code`, extended codes included by prefix) worth retrying. */
const RETRIABLE_PREFIXES = ['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_PROTOCOL', 'SQLITE_NOMEM', 'SQLITE_INTERRUPT'];
/** Messages of SQLITE_ERROR that mean the table, not a row, is wrong. */
const STRUCTURAL_MESSAGES = /no such table|no such column|has no column named|table .* has \d+ columns/i;

/** The table's structure is wrong, not one row. */
export function isStructuralSqliteError(err: unknown): boolean {
  return err instanceof PrerequisiteError || (err instanceof Error && (err as { code?: unknown }).code === 'SQLITE_ERROR' && STRUCTURAL_MESSAGES.test(err.message));
}

/** Wraps any better-sqlite3 error as a SynclineError; a SynclineError passes through unchanged. */
export function classifySqliteError(err: unknown, what: string): SynclineError {
  if (err instanceof SynclineError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const detail = `${what} failed: ${errorMessage(err)}${typeof code === 'string' ? ` (${code})` : ''}`;
  if (isStructuralSqliteError(err)) return new PrerequisiteError(detail, 'fix the SQLite target table to match the source (columns, primary key), then restart');
  const retriable = typeof code === 'string' && RETRIABLE_PREFIXES.some((p) => code.startsWith(p));
  return new SynclineError(`SINK_${typeof code === 'string' ? code : 'SQLITE_ERROR'}`, detail, { retriable, cause: err });
}
