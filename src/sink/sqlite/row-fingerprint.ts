import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import { BOOKKEEPING_COLUMNS } from '../sql/bookkeeping.js';
import { quoteSqliteIdent as q, type SqliteTable } from './sqlite-table.js';

/**
 * Telling a row syncline wrote from one the target changed since, without a trigger. SQLite
 * has no `xmin` (what the postgres sink compares): instead each write of a tracked row stores
 * a digest of the row's values as they are then stored (`_syncline_fp`), and a row whose
 * values no longer give that digest was changed at the target. The digest covers the table's
 * own columns by name, NULLs left out, so a column added later (NULL in every row) keeps the
 * rows intact; the sink re-digests intact rows around the DDL it runs (see
 * SqliteDialect.evolve). A target write that stores the same values is not seen, and needs
 * not be: nothing differs.
 */
export const FINGERPRINT_FUNCTION = 'syncline_fingerprint';

/** The digest of name/value pairs (`[name1, value1, name2, value2, ...]`), as the SQL function computes it. */
export function fingerprintOf(pairs: readonly unknown[]): string {
  const present: [string, string][] = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const value = pairs[i + 1];
    if (value === null || value === undefined) continue;
    present.push([String(pairs[i]), Buffer.isBuffer(value) ? `x${value.toString('hex')}` : `${typeof value === 'string' ? 's' : 'n'}${String(value)}`]);
  }
  present.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return createHash('sha1').update(JSON.stringify(present)).digest('base64');
}

/** Registers the digest as an SQL function of the connection (integers exact, as bigint). */
export function registerFingerprint(db: Database.Database): void {
  db.function(FINGERPRINT_FUNCTION, { deterministic: true, varargs: true, safeIntegers: true }, (...pairs: unknown[]) => fingerprintOf(pairs));
}

/** The table's own columns (syncline's left out), the ones the digest covers. */
export function dataColumns(columns: Iterable<string>): string[] {
  return [...columns].filter((c) => !BOOKKEEPING_COLUMNS.has(c));
}

/** SQL for the digest of the row's current values (`alias.` before each column when given). */
export function fingerprintSql(columns: readonly string[], alias?: string): string {
  const ref = alias ? `${alias}.` : '';
  return `${FINGERPRINT_FUNCTION}(${columns.map((c) => `${quoteSqliteLiteral(c)}, ${ref}${q(c)}`).join(', ')})`;
}

/** The digest of a row read with `SELECT *` (its values typed as the digest function receives them). */
export function fingerprintOfRow(target: SqliteTable, row: Record<string, unknown>): string {
  return fingerprintOf(dataColumns(target.columns.keys()).flatMap((c) => [c, row[c] ?? null]));
}

/** A single-quoted SQLite string literal (embedded quotes doubled). */
function quoteSqliteLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}
