import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { rowKeyOf, type ChangeEvent, type Row } from '../../core/change.js';
import { PrerequisiteError, SynclineError, errorMessage } from '../../core/errors.js';
import { parseLsn, versionOf as changeVersion } from '../../core/lsn.js';
import { collapseBatch, type TableBatch } from '../collapse.js';
import { isPgByteaHex, pgBoolToDigit, pgByteaToBuffer, pgTextToJson, pgTimestampToUtc } from '../pg-text.js';
import type { ApplyOutcome, Sink } from '../sink.js';
import { maxVersion, onMissingRow, planMultiset, removesRow } from '../multiset.js';
import { forTableSync } from '../table-errors.js';
import { skippableWithoutStoredValues } from '../unchanged-values.js';

export interface SqliteSinkOptions {
  /**
   * The database file: a path (relative to the working directory), `sqlite:///abs/path`,
   * `sqlite:relative/path`, or `sqlite::memory:` (tests). The file and its directory are
   * created if missing.
   */
  url: string;
  /** Prefix of syncline's own tables: `<stateSchema>_positions`, `_tombstones`, `_truncations`. */
  stateSchema: string;
  versionGate: boolean;
  /**
   * hard (default): a delete removes the row. soft: the row stays with `_deleted_at` set to
   * the commit time (UTC text; the column is added when missing) and the delete's version,
   * so replays stay stale; a newer insert or update clears it. A tombstone is kept in both modes.
   */
  deleteMode?: 'hard' | 'soft';
  /** How long a write waits for another process's lock before failing retriably. */
  busyTimeoutMs?: number;
}

export const VERSION_LSN_COLUMN = '_syncline_lsn';
export const VERSION_SEQ_COLUMN = '_syncline_seq';
export const DELETED_AT_COLUMN = '_deleted_at';

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

const q = quoteSqliteIdent;
const V_LSN = q(VERSION_LSN_COLUMN);
const V_SEQ = q(VERSION_SEQ_COLUMN);
const DELETED_AT = q(DELETED_AT_COLUMN);
/** A row's stored version; rows written before syncline managed the table count as oldest. */
const ROW_VERSION = `(COALESCE(${V_LSN}, 0), COALESCE(${V_SEQ}, 0))`;
/** SQLite's INTEGER is signed 64-bit; LSNs are stored in it. */
const INT64_MAX = (1n << 63n) - 1n;
const MAX_LSN = INT64_MAX;

type ValueKind = 'text' | 'integer' | 'datetime' | 'binary' | 'json';
type SqlValue = string | bigint | Buffer | null;

interface SqliteTable {
  label: string;
  quoted: string;
  columns: Map<string, ValueKind>;
  primaryKey: string[];
}

type Counts = { applied: number; stale: number };

/**
 * SQLite target (better-sqlite3), the embedded single-machine sink. A batch is one
 * `BEGIN IMMEDIATE` transaction: per-row version-gated upserts
 *
 *   INSERT INTO t (...) SELECT ... WHERE NOT EXISTS (newer tombstone) AND NOT EXISTS (newer truncation)
 *   ON CONFLICT (pk) DO UPDATE SET ... WHERE (stored lsn, seq) < (excluded lsn, seq)   -- row values, SQLite ≥ 3.15
 *
 * whose `changes` (0 or 1) counts applied vs stale exactly, deletes with tombstones,
 * truncations as watermarks, keyless tables as multisets (see `multiset`), and the positions. Statements are prepared once and run per row:
 * in-process there is no round trip to save by batching. better-sqlite3 is synchronous, so a
 * batch never interleaves with another on the event loop; the Sink interface stays async.
 * The database runs in WAL mode: readers (verify, dashboards) do not block the writer.
 */
export class SqliteSink implements Sink {
  readonly storesPositions = true;
  private db: Database.Database | undefined;
  private readonly state: { positions: string; tombstones: string; truncations: string; multisetVersions: string };
  private readonly tables = new Map<string, SqliteTable>();
  private readonly statements = new Map<string, Database.Statement>();

  constructor(private readonly options: SqliteSinkOptions) {
    const s = options.stateSchema;
    this.state = {
      positions: q(`${s}_positions`),
      tombstones: q(`${s}_tombstones`),
      truncations: q(`${s}_truncations`),
      multisetVersions: q(`${s}_multiset_versions`),
    };
  }

  async prepare(): Promise<void> {
    this.run('preparing the SQLite sink', () => {
      const db = this.open();
      db.exec(`CREATE TABLE IF NOT EXISTS ${this.state.positions} (
        group_id TEXT NOT NULL, stream_partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')), PRIMARY KEY (group_id, stream_partition));
      CREATE TABLE IF NOT EXISTS ${this.state.tombstones} (
        table_name TEXT NOT NULL, row_key TEXT NOT NULL, lsn INTEGER NOT NULL, seq INTEGER NOT NULL,
        deleted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')), PRIMARY KEY (table_name, row_key));
      CREATE TABLE IF NOT EXISTS ${this.state.truncations} (
        table_name TEXT NOT NULL PRIMARY KEY, lsn INTEGER NOT NULL, seq INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS ${this.state.multisetVersions} (
        table_name TEXT NOT NULL PRIMARY KEY, lsn INTEGER NOT NULL, seq INTEGER NOT NULL, reset INTEGER NOT NULL DEFAULT 0);`);
    });
  }

  async positions(group: string): Promise<Map<number, bigint>> {
    return this.run('reading sink positions', () => {
      const rows = this.stmt(`SELECT stream_partition AS p, next_offset AS o FROM ${this.state.positions} WHERE group_id = ?`).all(group) as { p: bigint; o: bigint }[];
      return new Map(rows.map((r) => [Number(r.p), BigInt(r.o)]));
    });
  }

  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    const { tables, superseded } = collapseBatch(changes);
    const outcome: ApplyOutcome = { applied: 0, stale: 0, superseded, byTable: new Map() };
    this.run('applying to the SQLite sink', () => {
      const db = this.open();
      // Metadata (and adding the version columns) outside the batch transaction.
      const targets = new Map<TableBatch, SqliteTable>();
      for (const batch of tables) targets.set(batch, forTableSync(batch, isStructural, () => this.target(batch.schema, batch.table)));
      const body = (): void => {
        for (const batch of tables) {
          const target = targets.get(batch) as SqliteTable;
          const counts: Counts = { applied: 0, stale: 0 };
          forTableSync(batch, isStructural, () => {
            if (batch.truncate) this.truncate(target, batch.truncate, counts);
            this.upsert(target, batch, counts);
            this.delete(target, batch, counts);
            if (batch.multiset.length > 0 || batch.snapshotReset) this.multiset(target, batch.multiset, batch.snapshotReset, counts);
          });
          outcome.applied += counts.applied;
          outcome.stale += counts.stale;
          outcome.byTable.set(`${batch.schema}.${batch.table}`, counts);
        }
        const put = this.stmt(
          `INSERT INTO ${this.state.positions} (group_id, stream_partition, next_offset) VALUES (?, ?, ?)
           ON CONFLICT (group_id, stream_partition) DO UPDATE SET next_offset = excluded.next_offset,
             updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now')`,
        );
        for (const [p, o] of positions) put.run(group, p, o);
      };
      try {
        db.transaction(body).immediate();
      } catch (err) {
        // The target's structure may have changed (or be the problem): re-read it next time.
        if (isStructural(err)) {
          this.tables.clear();
          this.statements.clear();
        }
        throw err;
      }
    });
    return outcome;
  }

  async close(): Promise<void> {
    this.statements.clear();
    this.db?.close();
    this.db = undefined;
  }

  private open(): Database.Database {
    if (this.db) return this.db;
    const file = sqlitePathOf(this.options.url);
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file, { timeout: this.options.busyTimeoutMs ?? 5000 });
    try {
      db.pragma('journal_mode = WAL');
      // NORMAL is durable across a process crash in WAL mode (an OS crash may lose the last
      // commits, and then their positions with them: apply re-reads and re-applies them).
      db.pragma('synchronous = NORMAL');
      db.defaultSafeIntegers(true);
    } catch (err) {
      db.close();
      throw err;
    }
    this.db = db;
    return db;
  }

  private stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.open().prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  private run<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw classify(err, what);
    }
  }

  private target(schema: string, table: string): SqliteTable {
    const label = `${schema}.${table}`;
    let t = this.tables.get(label);
    if (!t) {
      const name = sqliteTableName(schema, table);
      t = this.readTable(label, name);
      if (!t) {
        throw new PrerequisiteError(
          `target table ${label} does not exist in the SQLite sink ${this.options.url}`,
          `create table ${q(name)} in the SQLite file with the source's columns and primary key (a keyless source table: its columns, without a unique key)`,
        );
      }
      const soft = this.options.deleteMode === 'soft';
      const missing = [VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, ...(soft ? [DELETED_AT_COLUMN] : [])].filter((c) => !t?.columns.has(c));
      if (missing.length > 0) {
        // _deleted_at holds UTC text like the datetime columns ('YYYY-MM-DD HH:MM:SS.ffffff').
        for (const c of missing) this.open().exec(`ALTER TABLE ${t.quoted} ADD COLUMN ${q(c)} ${c === DELETED_AT_COLUMN ? 'TEXT' : 'INTEGER'}`);
        t = this.readTable(label, name) as SqliteTable;
      }
      this.tables.set(label, t);
    }
    return t;
  }

  private readTable(label: string, name: string): SqliteTable | undefined {
    const rows = this.open().prepare('SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid').all(name) as { name: string; type: string; pk: bigint }[];
    if (rows.length === 0) return undefined;
    const columns = new Map<string, ValueKind>();
    const pk: { name: string; pos: number }[] = [];
    for (const r of rows) {
      columns.set(r.name, kindOf(r.type));
      if (Number(r.pk) > 0) pk.push({ name: r.name, pos: Number(r.pk) });
    }
    return { label, quoted: q(name), columns, primaryKey: pk.sort((a, b) => a.pos - b.pos).map((p) => p.name) };
  }

  private upsert(target: SqliteTable, batch: TableBatch, counts: Counts): void {
    for (const row of batch.rows) {
      if (row.op === 'DELETE' || !row.payload) continue;
      const columns = Object.keys(row.payload);
      const keyColumns = Object.keys(row.key);
      checkColumns(target, columns, keyColumns);
      if ((row.unchanged?.length ?? 0) > 0 && !this.hasStoredValues(target, keyColumns, row) && skippableWithoutStoredValues([row]).size > 0) {
        counts.stale++;
        continue;
      }
      const stmt = this.stmt(this.upsertSql(target, columns, keyColumns));
      const params: SqlValue[] = columns.map((c) => toSqliteValue(target.columns.get(c) ?? 'text', row.payload?.[c] ?? null));
      const { lsn, seq } = versionOf(row);
      params.push(lsn, seq);
      if (this.options.versionGate) params.push(target.label, rowKeyOf(row), target.label);
      const n = stmt.run(...params).changes;
      counts.applied += n;
      counts.stale += 1 - n;
    }
  }

  /**
   * Whether the target can supply the values `row` left unchanged: it has the row, or a newer
   * delete or truncation makes the change stale (see skippableWithoutStoredValues).
   */
  private hasStoredValues(target: SqliteTable, keyColumns: string[], row: ChangeEvent): boolean {
    const { lsn, seq } = versionOf(row);
    const supplied = this.stmt(
      `SELECT EXISTS (SELECT 1 FROM ${target.quoted} WHERE ${keyColumns.map((c) => `${q(c)} IS ?`).join(' AND ')})
           OR EXISTS (SELECT 1 FROM ${this.state.tombstones} WHERE table_name = ? AND row_key = ? AND (lsn, seq) >= (?, ?))
           OR EXISTS (SELECT 1 FROM ${this.state.truncations} WHERE table_name = ? AND (lsn, seq) >= (?, ?)) AS ok`,
    ).get(...keyColumns.map((c) => toSqliteValue(target.columns.get(c) ?? 'text', row.key[c] ?? null)), target.label, rowKeyOf(row), lsn, seq, target.label, lsn, seq) as { ok: bigint };
    return Number(supplied.ok) === 1;
  }

  private upsertSql(target: SqliteTable, columns: string[], keyColumns: string[]): string {
    const gate = this.options.versionGate;
    const soft = this.options.deleteMode === 'soft';
    const sets = [...columns.filter((c) => !keyColumns.includes(c)).map((c) => `${q(c)} = excluded.${q(c)}`), `${V_LSN} = excluded.${V_LSN}`, `${V_SEQ} = excluded.${V_SEQ}`];
    // A newer insert or update revives a soft-deleted row (the WHERE below gates it like the rest).
    if (soft) sets.push(`${DELETED_AT} = NULL`);
    // Parameters, in order: the columns, lsn, seq, then (gated) table label, row key, table label.
    const aliases = [...columns.map((_, i) => `c${i}`), 'l', 's'];
    // The WHERE after SELECT is needed anyway: without it SQLite would parse ON CONFLICT as a join's ON.
    const where = gate
      ? `WHERE NOT EXISTS (SELECT 1 FROM ${this.state.tombstones} tb WHERE tb.table_name = ? AND tb.row_key = ? AND (tb.lsn, tb.seq) >= (i.l, i.s))
           AND NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr WHERE tr.table_name = ? AND (tr.lsn, tr.seq) >= (i.l, i.s))`
      : 'WHERE true';
    return `INSERT INTO ${target.quoted} AS t (${[...columns.map(q), V_LSN, V_SEQ, ...(soft ? [DELETED_AT] : [])].join(', ')})
      SELECT ${[...aliases.map((a) => `i.${a}`), ...(soft ? ['NULL'] : [])].join(', ')} FROM (SELECT ${aliases.map((a) => `? AS ${a}`).join(', ')}) AS i
      ${where}
      ON CONFLICT (${keyColumns.map(q).join(', ')}) DO UPDATE SET ${sets.join(', ')}` +
      (gate ? `\n      WHERE (COALESCE(t.${V_LSN}, 0), COALESCE(t.${V_SEQ}, 0)) < (excluded.${V_LSN}, excluded.${V_SEQ})` : '');
  }

  private delete(target: SqliteTable, batch: TableBatch, counts: Counts): void {
    const gate = this.options.versionGate;
    for (const row of batch.rows) {
      if (row.op !== 'DELETE') continue;
      const keyColumns = Object.keys(row.key);
      checkColumns(target, [], keyColumns);
      const { lsn, seq } = versionOf(row);
      this.stmt(
        `INSERT INTO ${this.state.tombstones} AS tb (table_name, row_key, lsn, seq) VALUES (?, ?, ?, ?)
         ON CONFLICT (table_name, row_key) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq,
           deleted_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
         WHERE (tb.lsn, tb.seq) < (excluded.lsn, excluded.seq)`,
      ).run(target.label, rowKeyOf(row), lsn, seq);
      const match = keyColumns.map((c) => `${q(c)} IS ?`);
      if (gate) match.push(`${ROW_VERSION} < (?, ?)`);
      const params: SqlValue[] = keyColumns.map((c) => toSqliteValue(target.columns.get(c) ?? 'text', row.key[c] ?? null));
      if (gate) params.push(lsn, seq);
      // Soft: the row keeps its data and takes the delete's version, so a replay of this
      // delete (same version) or of anything older stays stale, and only a newer change revives it.
      const soft = this.options.deleteMode === 'soft';
      const removal = soft
        ? `UPDATE ${target.quoted} SET ${DELETED_AT} = ?, ${V_LSN} = ?, ${V_SEQ} = ? WHERE ${match.join(' AND ')}`
        : `DELETE FROM ${target.quoted} WHERE ${match.join(' AND ')}`;
      if (soft) params.unshift(pgTimestampToUtc(row.commit_ts.replace(/Z$/, '+00')), lsn, seq);
      // Applied means the row went away now, as in the postgres sink: a tombstone written for
      // a row that was already absent changes nothing visible and counts as stale.
      const n = this.stmt(removal).run(...params).changes;
      counts.applied += n;
      counts.stale += 1 - n;
    }
  }

  /**
   * A keyless table's changes (a multiset of whole rows; the rules are in `../multiset.ts`), in
   * stream order, after the batch's truncation. A row to remove is found by `rowid`: every
   * column `IS` the `before` value (NULL-safe, BINARY collation).
   */
  private multiset(target: SqliteTable, changes: readonly ChangeEvent[], sawReset: boolean, counts: Counts): void {
    const label = target.label;
    const high = this.stmt(`SELECT lsn, seq, reset FROM ${this.state.multisetVersions} WHERE table_name = ?`).get(label) as { lsn: bigint; seq: bigint; reset: bigint } | undefined;
    const trunc = this.stmt(`SELECT lsn, seq FROM ${this.state.truncations} WHERE table_name = ?`).get(label) as { lsn: bigint; seq: bigint } | undefined;
    const wasReset = high !== undefined && Number(high.reset) === 1;
    const reset = wasReset || sawReset;
    const floor = maxVersion(high ? changeVersion(BigInt(high.lsn), Number(high.seq)) : -1n, trunc && changeVersion(BigInt(trunc.lsn), Number(trunc.seq)));
    const plan = planMultiset(label, changes, floor, counts);
    for (const change of plan.changes) {
      if (removesRow(change)) {
        const before = change.before ?? {};
        const columns = Object.keys(before);
        checkColumns(target, columns, null);
        const match = columns.map((c) => `${q(c)} IS ? COLLATE BINARY`).join(' AND ') || 'true';
        const removed = this.stmt(`DELETE FROM ${target.quoted} WHERE rowid = (SELECT rowid FROM ${target.quoted} WHERE ${match} LIMIT 1)`)
          .run(...columns.map((c) => toSqliteValue(target.columns.get(c) ?? 'text', before[c] ?? null))).changes;
        if (removed === 0) {
          if (!onMissingRow(label, change, reset, counts)) continue;
        } else if (change.op === 'DELETE') {
          counts.applied++;
          continue;
        }
      }
      if (change.payload) counts.applied += this.insertRow(target, change.payload, change);
    }
    const newest = plan.newest;
    if (newest) {
      const { lsn, seq } = versionOf(newest);
      this.stmt(
        `INSERT INTO ${this.state.multisetVersions} AS v (table_name, lsn, seq, reset) VALUES (?, ?, ?, ?)
         ON CONFLICT (table_name) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq, reset = max(v.reset, excluded.reset)`,
      ).run(label, lsn, seq, reset ? 1n : 0n);
    } else if (reset && !wasReset) {
      this.stmt(
        `INSERT INTO ${this.state.multisetVersions} AS v (table_name, lsn, seq, reset) VALUES (?, 0, 0, 1)
         ON CONFLICT (table_name) DO UPDATE SET reset = 1`,
      ).run(label);
    }
  }

  /** Adds one row of a keyless table with its change's version; returns 1. */
  private insertRow(target: SqliteTable, payload: Row, change: ChangeEvent): number {
    const columns = Object.keys(payload);
    checkColumns(target, columns, null);
    const { lsn, seq } = versionOf(change);
    const params: SqlValue[] = columns.map((c) => toSqliteValue(target.columns.get(c) ?? 'text', payload[c] ?? null));
    params.push(lsn, seq);
    const sql = `INSERT INTO ${target.quoted} (${[...columns.map(q), V_LSN, V_SEQ].join(', ')}) VALUES (${params.map(() => '?').join(', ')})`;
    return this.stmt(sql).run(...params).changes;
  }

  private truncate(target: SqliteTable, change: ChangeEvent, counts: Counts): void {
    const { lsn, seq } = versionOf(change);
    const advanced = this.stmt(
      `INSERT INTO ${this.state.truncations} AS tr (table_name, lsn, seq) VALUES (?, ?, ?)
       ON CONFLICT (table_name) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq
       WHERE (tr.lsn, tr.seq) < (excluded.lsn, excluded.seq)`,
    ).run(target.label, lsn, seq).changes;
    if (advanced === 0) {
      counts.stale += 1;
      return;
    }
    // Rows older than the truncation go; newer ones (applied from other partitions) stay.
    this.stmt(`DELETE FROM ${target.quoted} WHERE ${ROW_VERSION} < (?, ?)`).run(lsn, seq);
    counts.applied += 1;
  }
}

function versionOf(change: ChangeEvent): { lsn: bigint; seq: bigint } {
  const lsn = parseLsn(change.commit_lsn);
  if (lsn > MAX_LSN) throw new SynclineError('SINK_VALUE', `commit LSN ${change.commit_lsn} exceeds SQLite's 64-bit signed INTEGER`, { retriable: false });
  return { lsn, seq: BigInt(change.seq) };
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

function toSqliteValue(kind: ValueKind, text: string | null): SqlValue {
  if (text === null) return null;
  switch (kind) {
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
      return /[+-]\d\d(:?\d\d)*$/.test(text) ? pgTimestampToUtc(text) : text;
    case 'text':
      return text;
  }
}

/** `keyColumns` null: a keyless table's row (no key to compare with the target's). */
function checkColumns(target: SqliteTable, columns: string[], keyColumns: string[] | null): void {
  const missing = [...new Set([...columns, ...(keyColumns ?? [])])].filter((c) => !target.columns.has(c));
  if (missing.length > 0) {
    throw new PrerequisiteError(
      `target table ${target.label} lacks column(s) ${missing.join(', ')}`,
      missing.map((m) => `ALTER TABLE ${target.quoted} ADD COLUMN ${q(m)} <type>`).join('; '),
    );
  }
  if (keyColumns !== null && [...target.primaryKey].sort().join(',') !== [...keyColumns].sort().join(',')) {
    throw new PrerequisiteError(
      `target table ${target.label} has primary key (${target.primaryKey.join(', ') || 'none'}) but the source key is (${keyColumns.join(', ')})`,
      `recreate ${target.quoted} with PRIMARY KEY (${keyColumns.map(q).join(', ')}) (SQLite cannot add a primary key to a table)`,
    );
  }
}

/** SQLite result codes (better-sqlite3's `code`) → retry policy, as data. */
const RETRIABLE_PREFIXES = ['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_PROTOCOL', 'SQLITE_NOMEM', 'SQLITE_INTERRUPT'];
/** Messages of SQLITE_ERROR that mean the table, not a row, is wrong. */
const STRUCTURAL_MESSAGES = /no such table|no such column|has no column named|table .* has \d+ columns/i;

function isStructural(err: unknown): boolean {
  return err instanceof PrerequisiteError || (err instanceof Error && (err as { code?: unknown }).code === 'SQLITE_ERROR' && STRUCTURAL_MESSAGES.test(err.message));
}

function classify(err: unknown, what: string): SynclineError {
  if (err instanceof SynclineError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const detail = `${what} failed: ${errorMessage(err)}${typeof code === 'string' ? ` (${code})` : ''}`;
  if (isStructural(err)) return new PrerequisiteError(detail, 'fix the SQLite target table to match the source (columns, primary key), then restart');
  const retriable = typeof code === 'string' && RETRIABLE_PREFIXES.some((p) => code.startsWith(p));
  return new SynclineError(`SINK_${typeof code === 'string' ? code : 'SQLITE_ERROR'}`, detail, { retriable, cause: err });
}
