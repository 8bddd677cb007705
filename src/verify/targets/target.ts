import { createHash } from 'node:crypto';
import type { Candidate } from '../checksum.js';
import { SOURCE_COLUMN } from '../../sink/sql/bookkeeping.js';
import type { TargetColumns, VerifyColumn, VerifyShape } from '../shape.js';
import type { VerifyResult } from '../verify-results.js';
import { sourceText, type TargetValue } from './source-text.js';

export type TargetType = 'postgres' | 'mysql' | 'sqlite';

/**
 * A target database as verify sees it. A postgres target computes range checksums in the
 * server (checksum.ts, fastest); a mysql or sqlite target is a RowTarget, whose rows verify
 * reads and turns back into source text (source-text.ts), because neither can print a
 * value as PostgreSQL does nor order keys as its collation does.
 */
export interface VerifyTarget {
  readonly type: TargetType;
  /** Declared column types of a target table (see readShape). */
  readonly columns: TargetColumns;
  /**
   * The live rows (soft-deleted ones count as absent) of `keys` (source key text): key JSON
   * → row digest in the shape's digest form. Rows whose key is only collation-equal to a
   * requested one ('A' for 'a') are not returned: keys match exactly.
   */
  readKeys(shape: VerifyShape, keys: readonly Candidate[]): Promise<Map<string, string>>;
  /**
   * Conflict tracking (`shape.writer`): those of `keys` whose delete by another writer the
   * sink recorded (its tombstone); absent where the target keeps no such record in a form
   * verify reads.
   */
  deletedByOthers?(shape: VerifyShape, keys: readonly Candidate[]): Promise<Set<string>>;
  /** Next stream offset per partition that the sink stored for consumer group `group`. */
  positions(stateSchema: string, group: string): Promise<Map<number, bigint>>;
  /** Stores the last verify's result per table, for sync_drift_rows (see verify-results.ts). */
  recordResults(stateSchema: string, results: readonly Omit<VerifyResult, 'verifiedAt'>[]): Promise<void>;
  readResults(stateSchema: string): Promise<VerifyResult[]>;
  close(): Promise<void>;
}

/** A target whose rows are compared in Node: mysql (MariaDB) and sqlite. */
export interface RowTarget extends VerifyTarget {
  readonly type: 'mysql' | 'sqlite';
  /** Every live key of the table, in source text, in pages, read in the target's own order (one scan). */
  keys(shape: VerifyShape, pageRows: number): AsyncIterable<Candidate[]>;
  /** Every live row as source text (shape.columns order), in pages (keyless tables). */
  rows(shape: VerifyShape, pageRows: number): AsyncIterable<(string | null)[][]>;
}

export function isRowTarget(t: VerifyTarget): t is RowTarget {
  return t.type !== 'postgres';
}

/** A target row's values (shape.columns order) as the source prints them. */
export function sourceTexts(shape: VerifyShape, values: readonly TargetValue[]): (string | null)[] {
  return shape.columns.map((c, i) => sourceText(c.type, values[i] ?? null));
}

/** The row digest of the `text-array` form: md5 of the JSON array, as the source computes it. */
export function rowDigest(texts: readonly (string | null)[]): string {
  return createHash('md5').update(JSON.stringify(texts)).digest('hex');
}

/** The key of a row given as source texts (`at`: keyIndexes): the key JSON and its values (see Candidate). */
export function keyOf(at: readonly number[], texts: readonly (string | null)[]): Candidate {
  const values = at.map((i) => texts[i] ?? '');
  return { key: JSON.stringify(values), values };
}

/** The positions of the columns of `shape.key` in `shape.columns`. */
export function keyIndexes(shape: VerifyShape): number[] {
  return shape.key.map((k) => shape.columns.indexOf(k));
}

/** Groups rows into pages of `size`, holding one page. */
async function* pagesOf<T>(rows: AsyncIterable<T> | Iterable<T>, size: number): AsyncGenerator<T[]> {
  let page: T[] = [];
  for await (const row of rows) {
    page.push(row);
    if (page.length >= size) {
      yield page;
      page = [];
    }
  }
  if (page.length > 0) yield page;
}

/**
 * A RowTarget's keys() and rows() from `scan`: one read of `columns` of the table's live rows
 * in the target's own order, pulled as the pages are consumed.
 */
export function scansOf(scan: (shape: VerifyShape, columns: readonly VerifyColumn[]) => AsyncIterable<TargetValue[]> | Iterable<TargetValue[]>): Pick<RowTarget, 'keys' | 'rows'> {
  return {
    keys: async function* (shape, pageRows) {
      const keyShape = { ...shape, columns: shape.key };
      const at = shape.key.map((_, i) => i);
      for await (const page of pagesOf(scan(shape, shape.key), pageRows)) yield page.map((row) => keyOf(at, sourceTexts(keyShape, row)));
    },
    rows: async function* (shape, pageRows) {
      for await (const page of pagesOf(scan(shape, shape.columns), pageRows)) yield page.map((row) => sourceTexts(shape, row));
    },
  };
}

/** A stored verify result row (table, differing, source rows, target rows, UTC `YYYY-MM-DD HH:MM:SS[.f]`). */
export function resultOf([table, differing, sourceRows, targetRows, at]: readonly [string, unknown, unknown, unknown, string]): VerifyResult {
  return { table, differing: Number(differing), sourceRows: Number(sourceRows), targetRows: Number(targetRows), verifiedAt: new Date(`${at.replace(' ', 'T')}Z`) };
}

/**
 * The WHERE condition of a mysql or sqlite target's live rows: soft-deleted ones count as
 * absent, and with `shape.writer` only the rows that writer wrote are compared (see
 * VerifyWriter). These sinks keep no writing transaction: a row syncline never wrote
 * (`_syncline_source` NULL) is the `local_source` writer's; a row changed at the target since
 * syncline wrote it is not told apart here and counts as its source's. `quote` and `literal`
 * are the dialect's identifier and string quoting.
 */
export function rowTargetLive(shape: VerifyShape, quote: (name: string) => string, literal: (value: string) => string): string {
  const parts = shape.softDeletes ? [`${quote('_deleted_at')} IS NULL`] : [];
  if (shape.writer) {
    const own = `${quote(SOURCE_COLUMN)} = ${literal(shape.writer.source)}`;
    parts.push(shape.writer.local ? `(${own} OR ${quote(SOURCE_COLUMN)} IS NULL)` : own);
  }
  return parts.length > 0 ? parts.join(' AND ') : '1 = 1';
}
