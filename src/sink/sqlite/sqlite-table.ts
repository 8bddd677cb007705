import path from 'node:path';
import type Database from 'better-sqlite3';
import { tableLabelOf } from '../../core/change.js';
import { PrerequisiteError } from '../../core/errors.js';
import { isPgByteaHex, pgBoolToDigit, pgByteaToBuffer, pgTextToJson, pgTimestampToUtc } from '../pg-text.js';
import { CLOCK_COLUMN, DELETED_AT_COLUMN, FINGERPRINT_COLUMN, SOURCE_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN } from '../sql/bookkeeping.js';

/** The file path a sink URL names (see SqliteSinkOptions.url). */
export function sqlitePathOf(url: string, cwd = process.cwd()): string {
  if (url === 'sqlite::memory:' || url === ':memory:') return ':memory:';
  let p = url;
  if (url.startsWith('sqlite://')) {
    p = decodeURIComponent(url.slice('sqlite://'.length));
    if (!p.startsWith('/')) throw new PrerequisiteError(`sink.url ${url} is not an absolute sqlite URL`, 'use sqlite:///absolute/path.db or sqlite:relative/path.db');
  } else if (url.startsWith('sqlite:')) {
    p = decodeURIComponent(url.slice('sqlite:'.length));
  }
  if (p === '') throw new PrerequisiteError('sink.url names no SQLite file', 'set sink.url to a file path, sqlite:///absolute/path.db or sqlite:relative/path.db');
  return path.resolve(cwd, p);
}

/** Double-quotes an SQLite identifier (embedded quotes doubled). */
export function quoteSqliteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The target table of a source table: `public` tables by name, others as `"<schema>.<table>"`. */
export function sqliteTableName(schema: string, table: string): string {
  return schema === 'public' ? table : `${schema}.${table}`;
}

/** SQLite's INTEGER is signed 64-bit; LSNs are stored in it. */
export const INT64_MAX = (1n << 63n) - 1n;

/** How a change event value (PostgreSQL text output) is bound, by the column's declared type. */
export type ValueKind = 'text' | 'integer' | 'datetime' | 'binary' | 'json';
export type SqlValue = string | bigint | Buffer | null;

export interface SqliteTable {
  /** `schema.table` of the source, for bookkeeping rows and messages. */
  label: string;
  /** The quoted target name (see sqliteTableName). */
  qualified: string;
  /** The target name, unquoted. */
  name: string;
  columns: Map<string, ValueKind>;
  primaryKey: string[];
}

/**
 * Reads a target table's columns and primary key, adding syncline's version columns (and
 * `_deleted_at` for soft deletes, the writer columns for conflict tracking) when missing.
 * Runs outside the batch transaction.
 */
export function loadSqliteTable(db: Database.Database, schema: string, table: string, softDelete: boolean, url: string, writerColumns = false): SqliteTable {
  const label = tableLabelOf({ schema, table });
  const name = sqliteTableName(schema, table);
  let t = readTable(db, label, name);
  if (!t) {
    throw new PrerequisiteError(
      `target table ${label} does not exist in the SQLite sink ${url}`,
      `create table ${quoteSqliteIdent(name)} in the SQLite file with the source's columns and primary key (a keyless source table: its columns, without a unique key)`,
    );
  }
  const wanted = [VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, ...(softDelete ? [DELETED_AT_COLUMN] : []), ...(writerColumns ? [SOURCE_COLUMN, CLOCK_COLUMN, FINGERPRINT_COLUMN] : [])];
  if (wanted.some((c) => !t?.columns.has(c))) {
    // Several processes may load the table at once (fan-in: a pipeline per source): the check
    // and the ALTERs run under the database's write lock, so each column is added once.
    underWriteLock(db, () => {
      const now = readTable(db, label, name) as SqliteTable;
      // _deleted_at and _syncline_ts hold UTC text like the datetime columns ('YYYY-MM-DD HH:MM:SS.ffffff').
      for (const c of wanted.filter((w) => !now.columns.has(w))) {
        db.exec(`ALTER TABLE ${now.qualified} ADD COLUMN ${quoteSqliteIdent(c)} ${c === VERSION_LSN_COLUMN || c === VERSION_SEQ_COLUMN ? 'INTEGER' : 'TEXT'}`);
      }
    });
    t = readTable(db, label, name) as SqliteTable;
  }
  return t;
}

/** Runs `fn` in a `BEGIN IMMEDIATE` transaction, or in the one already open (which holds the lock). */
export function underWriteLock(db: Database.Database, fn: () => void): void {
  if (db.inTransaction) fn();
  else db.transaction(fn).immediate();
}

function readTable(db: Database.Database, label: string, name: string): SqliteTable | undefined {
  const rows = db.prepare('SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid').all(name) as { name: string; type: string; pk: bigint }[];
  if (rows.length === 0) return undefined;
  const columns = new Map<string, ValueKind>();
  const pk: { name: string; pos: number }[] = [];
  for (const r of rows) {
    columns.set(r.name, kindOf(r.type));
    if (Number(r.pk) > 0) pk.push({ name: r.name, pos: Number(r.pk) });
  }
  return { label, qualified: quoteSqliteIdent(name), name, columns, primaryKey: pk.sort((a, b) => a.pos - b.pos).map((p) => p.name) };
}

/**
 * By the column's declared type (SQLite's type affinity rules, plus the names PostgreSQL
 * users write): booleans as 1/0 in integer columns, bytea as BLOB, timestamps as UTC text,
 * json/arrays as JSON text. Everything else is stored as the text PostgreSQL sent (numeric
 * affinity columns convert numbers themselves, exactly for integers).
 */
function kindOf(declared: string): ValueKind {
  const t = declared.toUpperCase();
  if (t.includes('INT') || t.includes('BOOL')) return 'integer';
  if (t.includes('BLOB') || t.includes('BYTEA')) return 'binary';
  if (t.includes('JSON')) return 'json';
  if (t.includes('TIMESTAMP') || t.includes('DATETIME')) return 'datetime';
  return 'text';
}

/** The value to bind for `text` in a column of `target` (see kindOf). */
export function toSqliteValue(target: SqliteTable, column: string, text: string | null): SqlValue {
  if (text === null) return null;
  switch (target.columns.get(column) ?? 'text') {
    case 'integer': {
      const digits = pgBoolToDigit(text);
      // Integer literals bind as 64-bit integers; anything else (NUMERIC text) as text.
      if (!/^-?\d+$/.test(digits)) return digits;
      const n = BigInt(digits);
      return n <= INT64_MAX && n >= -INT64_MAX - 1n ? n : digits;
    }
    case 'binary':
      return isPgByteaHex(text) ? pgByteaToBuffer(text) : Buffer.from(text, 'utf8');
    case 'json':
      return pgTextToJson(text);
    case 'datetime':
      return /[+-]\d\d(:?\d\d)*$/.test(text) ? pgTimestampToUtc(text, column) : text;
    case 'text':
      return text;
  }
}

/**
 * The declared type of a column syncline adds for a source column (`format_type` text): one
 * that kindOf reads back as the value's kind. Widenings keep it (INTEGER, TEXT, NUMERIC).
 * A numeric is NUMERIC only when at most 15 digits: SQLite turns text in a NUMERIC column
 * into a REAL, which keeps 15 significant digits (`12345678901234567890.5` became
 * 1.2345678901234567e19); a wider or unbounded numeric is kept as its text.
 */
export function sqliteTypeFor(pgType: string): string {
  if (/^(smallint|integer|bigint|boolean)$/.test(pgType)) return 'INTEGER';
  if (pgType === 'real' || pgType === 'double precision') return 'REAL';
  const numeric = /^numeric(?:\((\d+)(?:,-?\d+)?\))?$/.exec(pgType);
  if (numeric) return numeric[1] !== undefined && Number(numeric[1]) <= 15 ? 'NUMERIC' : 'TEXT';
  if (pgType === 'bytea') return 'BLOB';
  if (pgType === 'json' || pgType === 'jsonb' || pgType.endsWith('[]')) return 'JSON';
  if (pgType.startsWith('timestamp')) return 'TIMESTAMP';
  return 'TEXT';
}
