/**
 * PostgreSQL errors → what the apply loop does with them. Retriable or permanent by SQLSTATE
 * (`core/sqlstate.ts`, the table as data); class 42 (undefined table or column, syntax) means
 * the target's structure, not a row, is wrong, for every change of the table.
 */
import { PrerequisiteError, SynclineError, errorMessage } from '../../core/errors.js';
import { isRetriablePgError } from '../../core/sqlstate.js';

/** SQLSTATE class 42 (undefined table/column, syntax): the target's structure, not a row, is wrong. */
export function isStructuralPgError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof PrerequisiteError || (typeof code === 'string' && code.startsWith('42'));
}

/** Wraps any pg error as a SynclineError; a SynclineError passes through unchanged. */
export function classifyPgError(err: unknown, what: string): unknown {
  if (err instanceof SynclineError) return err;
  const code = (err as { code?: string } | null)?.code;
  if (isStructuralPgError(err)) {
    // Every change of the table would fail the same way: stop instead of dead-lettering them all.
    return new PrerequisiteError(`${what} failed: ${errorMessage(err)} (SQLSTATE ${code})`, 'fix the target table to match the source (columns, types, primary key), then restart');
  }
  // A server's error carries a SQLSTATE; a socket's (ECONNREFUSED) is named in its message already.
  const sqlstate = code !== undefined && typeof (err as { severity?: unknown }).severity === 'string' ? ` (SQLSTATE ${code})` : '';
  return new SynclineError(`SINK_${code ?? 'ERROR'}`, `${what} failed: ${errorMessage(err)}${sqlstate}`, {
    retriable: isRetriablePgError(err),
    cause: err,
  });
}
