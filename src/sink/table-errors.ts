import { tableLabelOf } from '../core/change.js';
import { errorMessage, PrerequisiteError, StructuralError } from '../core/errors.js';
import type { TableBatch } from './collapse.js';

/**
 * One table's part of a batch failed because of the target's structure (`isStructural`):
 * the error becomes a StructuralError naming the table (`schema.table` as the changes name
 * it), so apply holds that table alone while the others flow. Other errors pass through.
 */
export function asTableError(batch: Pick<TableBatch, 'schema' | 'table'>, err: unknown, isStructural: (err: unknown) => boolean): unknown {
  if (err instanceof StructuralError || !isStructural(err)) return err;
  const label = tableLabelOf(batch);
  if (err instanceof PrerequisiteError) return new StructuralError(label, err.detail, err.fix);
  const code = (err as { code?: unknown } | null)?.code;
  const detail = `applying ${label} to the sink failed: ${errorMessage(err)}${typeof code === 'string' || typeof code === 'number' ? ` (${String(code)})` : ''}`;
  return new StructuralError(label, detail, 'fix the target table to match the source (columns, types, primary key)');
}

/** Runs `fn` for one table of a batch, naming the table in a structural error (see asTableError). */
export async function forTable<T>(batch: Pick<TableBatch, 'schema' | 'table'>, isStructural: (err: unknown) => boolean, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw asTableError(batch, err, isStructural);
  }
}

/** The synchronous form of forTable (SQLite). */
export function forTableSync<T>(batch: Pick<TableBatch, 'schema' | 'table'>, isStructural: (err: unknown) => boolean, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw asTableError(batch, err, isStructural);
  }
}
