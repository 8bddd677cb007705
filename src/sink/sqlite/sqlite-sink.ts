import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { rowKeyOf, type ChangeEvent, type Row } from '../../core/change.js';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import { formatLsn, parseLsn, versionOf } from '../../core/lsn.js';
import { pgTimestampToUtc } from '../pg-text.js';
import { bookkeepingTables, CLOCK_COLUMN, DELETED_AT_COLUMN, FINGERPRINT_COLUMN, SOURCE_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, type BookkeepingTables } from '../sql/bookkeeping.js';
import type { RecordedColumn, SchemaStep, TargetColumnShape } from '../../core/schema-evolution.js';
import type { SchemaEvolution } from '../sql/schema-evolver.js';
import { conflictIdOf, type ConflictRecord, type Deletion, type MultisetVersions, type SqlDialect, type StoredRow } from '../sql/sql-dialect.js';
import { SqlSink, type ConflictOptions } from '../sql/sql-sink.js';
import { dataColumns, fingerprintOfRow, fingerprintSql, registerFingerprint } from './row-fingerprint.js';
import { classifySqliteError, isStructuralSqliteError } from './sqlite-errors.js';
import { INT64_MAX, loadSqliteTable, underWriteLock, sqliteTableName, sqliteTypeFor, quoteSqliteIdent as q, sqlitePathOf, toSqliteValue, type SqliteTable, type SqlValue } from './sqlite-table.js';

export { quoteSqliteIdent, sqlitePathOf, sqliteTableName } from './sqlite-table.js';

export interface SqliteSinkOptions {
  /**
   * The database file: a path (relative to the working directory), `sqlite:///abs/path`,
   * `sqlite:relative/path`, or `sqlite::memory:` (tests). The file and its directory are
   * created if missing.
   */
  url: string;
  /** Prefix of syncline's own tables: `<stateSchema>_positions`, `_tombstones`, `_truncations` (and `_conflicts`, tracking). */
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
  /** `sink.schema_evolution`: the target follows the source's definitions. */
  evolution?: SchemaEvolution;
  /**
   * Conflict tracking between writers (fan-in): rows record their writing source, its commit
   * time and a digest of their values (see row-fingerprint.ts), conflicts go to
   * `<stateSchema>_conflicts` (see ConflictOptions).
   */
  conflicts?: ConflictOptions;
}

const V_LSN = q(VERSION_LSN_COLUMN);
const V_SEQ = q(VERSION_SEQ_COLUMN);
const DELETED_AT = q(DELETED_AT_COLUMN);
const W_SOURCE = q(SOURCE_COLUMN);
const W_CLOCK = q(CLOCK_COLUMN);
const W_FP = q(FINGERPRINT_COLUMN);
/** Marks, during DDL, the rows whose digest matched before it (see evolve); never a digest (base64 of 20 bytes). */
const INTACT = 'intact';
/** A row's stored version; rows written before syncline managed the table count as oldest. */
const ROW_VERSION = `(COALESCE(${V_LSN}, 0), COALESCE(${V_SEQ}, 0))`;
const MAX_LSN = INT64_MAX;

/**
 * SQLite target (better-sqlite3), the embedded single-machine sink. A batch is one
 * `BEGIN IMMEDIATE` transaction (see SqlSink): per-row version-gated upserts
 *
 *   INSERT INTO t (...) SELECT ... WHERE NOT EXISTS (newer tombstone) AND NOT EXISTS (newer truncation)
 *   ON CONFLICT (pk) DO UPDATE SET ... WHERE (stored lsn, seq) < (excluded lsn, seq)   -- row values, SQLite ≥ 3.15
 *
 * whose `changes` (0 or 1) counts applied vs stale exactly, deletes with tombstones,
 * truncations as watermarks, keyless tables as multisets, and the positions. With conflict
 * tracking (fan-in) rows also name their writing source (and carry a digest of their values,
 * which tells a row the target changed since), and writes of another writer are decided by
 * SqlSink's resolver and recorded in `<stateSchema>_conflicts`. Statements are
 * prepared once and run per row: in-process there is no round trip to save by batching.
 * better-sqlite3 is synchronous and the one connection is used by one batch at a time (see
 * `withConnection`), so batches never interleave. The database runs in WAL mode: readers
 * (verify, dashboards) do not block the writer.
 */
export class SqliteSink extends SqlSink<Database.Database, SqliteTable> {
  constructor(options: SqliteSinkOptions) {
    super(new SqliteDialect(options), options.conflicts, options.evolution);
  }
}

class SqliteDialect implements SqlDialect<Database.Database, SqliteTable> {
  readonly name = 'the SQLite sink';
  private db: Database.Database | undefined;
  private readonly state: BookkeepingTables;
  private readonly statements = new Map<string, Database.Statement>();
  /** The tail of the calls waiting for the connection. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: SqliteSinkOptions) {
    const s = options.stateSchema;
    this.state = bookkeepingTables((t) => q(`${s}_${t}`));
  }

  /** Conflict tracking is on: rows name their writing source (see SqliteSinkOptions.conflicts). */
  private get tracked(): boolean {
    return this.options.conflicts !== undefined;
  }

  /**
   * One connection, one caller at a time: a batch's transaction must not interleave with
   * another call's statements between its awaits.
   */
  withConnection<R>(what: string, fn: (db: Database.Database) => Promise<R>): Promise<R> {
    const run = this.queue.then(async () => {
      try {
        return await fn(this.open());
      } catch (err) {
        throw classifySqliteError(err, what);
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
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
      registerFingerprint(db);
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

  async createBookkeeping(db: Database.Database): Promise<void> {
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
    // Under the write lock: another process (another source's pipeline) may prepare at once.
    if (this.tracked) underWriteLock(db, () => this.createConflictTables(db));
  }

  /**
   * Conflict tracking's bookkeeping: tombstones per source (`<state>_source_tombstones`: one
   * source's delete never replaces another's; each gates its own source's replays, another
   * source's write is decided against it, see readDeletions), with the delete's commit time;
   * `<state>_conflicts` records each decided conflict. LSNs are INTEGERs there too, so the
   * gates compare them as the version columns.
   */
  private createConflictTables(db: Database.Database): void {
    db.exec(`CREATE TABLE IF NOT EXISTS ${this.state.sourceTombstones} (
      table_name TEXT NOT NULL, row_key TEXT NOT NULL, source TEXT NOT NULL, lsn INTEGER NOT NULL, seq INTEGER NOT NULL, clock TEXT,
      deleted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')), PRIMARY KEY (table_name, row_key, source))`);
    const s = this.options.stateSchema;
    // AUTOINCREMENT: ids never reused, so `conflicts list` orders by id as detected.
    db.exec(`CREATE TABLE IF NOT EXISTS ${this.state.conflicts} (
      id INTEGER PRIMARY KEY AUTOINCREMENT, detected_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
      table_name TEXT NOT NULL, row_key TEXT NOT NULL, strategy TEXT NOT NULL, winner TEXT NOT NULL,
      incoming_source TEXT NOT NULL, stored_source TEXT NOT NULL,
      incoming_lsn INTEGER NOT NULL, incoming_seq INTEGER NOT NULL, incoming_commit_ts TEXT,
      incoming_clock TEXT, stored_clock TEXT, incoming_version TEXT, stored_version TEXT, written TEXT,
      stored_lsn INTEGER, stored_seq INTEGER);
    CREATE UNIQUE INDEX IF NOT EXISTS ${q(`${s}_conflicts_change`)} ON ${this.state.conflicts} (table_name, row_key, incoming_source, incoming_lsn, incoming_seq);
    CREATE INDEX IF NOT EXISTS ${q(`${s}_conflicts_replaced`)} ON ${this.state.conflicts} (table_name, row_key, stored_source) WHERE winner = 'incoming' AND stored_lsn IS NOT NULL;
    CREATE TABLE IF NOT EXISTS ${this.state.sourceTruncations} (
      table_name TEXT NOT NULL, source TEXT NOT NULL, lsn INTEGER NOT NULL, seq INTEGER NOT NULL, clock TEXT, PRIMARY KEY (table_name, source));
    CREATE TABLE IF NOT EXISTS ${this.state.sourceMultisetVersions} (
      table_name TEXT NOT NULL, source TEXT NOT NULL, lsn INTEGER NOT NULL, seq INTEGER NOT NULL, reset INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (table_name, source));`);
    // `clock` (the source's own newest truncation's commit time, see readTruncations) came after the table.
    if (db.prepare('SELECT 1 FROM pragma_table_info(?) WHERE name = ?').get(`${s}_source_truncations`, 'clock') === undefined) {
      db.exec(`ALTER TABLE ${this.state.sourceTruncations} ADD COLUMN clock TEXT`);
    }
  }

  async readPositions(_db: Database.Database, group: string): Promise<Map<number, bigint>> {
    const rows = this.stmt(`SELECT stream_partition AS p, next_offset AS o FROM ${this.state.positions} WHERE group_id = ?`).all(group) as { p: bigint; o: bigint }[];
    return new Map(rows.map((r) => [Number(r.p), BigInt(r.o)]));
  }

  async writePositions(_db: Database.Database, group: string, positions: ReadonlyMap<number, bigint>): Promise<void> {
    const put = this.stmt(
      `INSERT INTO ${this.state.positions} (group_id, stream_partition, next_offset) VALUES (?, ?, ?)
       ON CONFLICT (group_id, stream_partition) DO UPDATE SET next_offset = excluded.next_offset,
         updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now')`,
    );
    for (const [p, o] of positions) put.run(group, p, o);
  }

  async loadTable(db: Database.Database, schema: string, table: string): Promise<SqliteTable> {
    return loadSqliteTable(db, schema, table, this.soft, this.options.url, this.tracked);
  }

  async begin(db: Database.Database): Promise<void> {
    db.exec('BEGIN IMMEDIATE');
  }

  async commit(db: Database.Database): Promise<void> {
    db.exec('COMMIT');
  }

  async rollback(db: Database.Database): Promise<void> {
    // SQLite may have rolled back already (some errors end the transaction themselves).
    if (db.inTransaction) db.exec('ROLLBACK');
  }

  private get soft(): boolean {
    return this.options.deleteMode === 'soft';
  }

  async truncate(_db: Database.Database, target: SqliteTable, change: ChangeEvent): Promise<boolean> {
    if (this.tracked) return this.truncateTracked(target, change);
    const { lsn, seq } = storedVersion(change);
    const advanced = this.stmt(
      `INSERT INTO ${this.state.truncations} AS tr (table_name, lsn, seq) VALUES (?, ?, ?)
       ON CONFLICT (table_name) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq
       WHERE (tr.lsn, tr.seq) < (excluded.lsn, excluded.seq)`,
    ).run(target.label, lsn, seq).changes;
    if (advanced === 0) return false;
    // Rows older than the truncation go; newer ones (applied from other partitions) stay.
    this.stmt(`DELETE FROM ${target.qualified} WHERE ${ROW_VERSION} < (?, ?)`).run(lsn, seq);
    return true;
  }

  /**
   * Conflict tracking: the watermark is the source's own and gates that source's older
   * changes only; the table is emptied as at the source, except the rows written after the
   * truncation: the source's own newer versions, other writers' rows with a later commit time
   * (a row syncline never wrote has none: it goes). As the postgres sink's truncateTracked.
   */
  private truncateTracked(target: SqliteTable, change: ChangeEvent): boolean {
    const { lsn, seq } = storedVersion(change);
    const advanced = this.stmt(
      `INSERT INTO ${this.state.sourceTruncations} AS tr (table_name, source, lsn, seq, clock) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (table_name, source) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq, clock = excluded.clock
       WHERE (tr.lsn, tr.seq) < (excluded.lsn, excluded.seq)`,
    ).run(target.label, change.source, lsn, seq, utcText(change.commit_ts)).changes;
    if (advanced === 0) return false;
    const removes = `CASE WHEN ${W_SOURCE} IS :source THEN ${ROW_VERSION} < (:lsn, :seq) ELSE coalesce(${W_CLOCK} <= :clock, 1) END`;
    const named = { source: change.source, lsn, seq, clock: utcText(change.commit_ts), label: target.label };
    // The versions of other sources it removes become their watermarks too: republished, those
    // changes must not bring the rows back (their later changes have later versions).
    this.stmt(
      `INSERT INTO ${this.state.sourceTruncations} AS tr (table_name, source, lsn, seq)
       SELECT :label, source, lsn, seq FROM (
         SELECT ${W_SOURCE} AS source, ${V_LSN} AS lsn, ${V_SEQ} AS seq,
                row_number() OVER (PARTITION BY ${W_SOURCE} ORDER BY ${V_LSN} DESC, ${V_SEQ} DESC) AS n
           FROM ${target.qualified} WHERE ${removes} AND ${W_SOURCE} IS NOT NULL AND ${W_SOURCE} IS NOT :source AND ${V_LSN} IS NOT NULL)
        WHERE n = 1
       ON CONFLICT (table_name, source) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq
       WHERE (tr.lsn, tr.seq) < (excluded.lsn, excluded.seq)`,
    ).run(named);
    this.stmt(`DELETE FROM ${target.qualified} WHERE ${removes}`).run({ source: named.source, lsn, seq, clock: named.clock });
    return true;
  }

  /** The truncation gate of one change, whose table, version and source are the SQL `table`, `version` and `source`. */
  private truncationGate(table: string, version: string, source: string): string {
    if (this.tracked) return `NOT EXISTS (SELECT 1 FROM ${this.state.sourceTruncations} tr WHERE tr.table_name = ${table} AND tr.source = ${source} AND (tr.lsn, tr.seq) >= ${version})`;
    return `NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr WHERE tr.table_name = ${table} AND (tr.lsn, tr.seq) >= ${version})`;
  }

  /** One query per row: whether the target has it, or a newer delete or truncation. */
  async absentRows(_db: Database.Database, target: SqliteTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const tracked = this.tracked;
    const supplied = this.stmt(
      `SELECT EXISTS (SELECT 1 FROM ${target.qualified} WHERE ${keyColumns.map((c) => `${q(c)} IS ?`).join(' AND ')})
           OR EXISTS (SELECT 1 FROM ${tracked ? this.state.sourceTombstones : this.state.tombstones} WHERE table_name = :label AND row_key = :key AND (lsn, seq) >= (:lsn, :seq)${tracked ? ' AND source = :source' : ''})
           OR NOT ${this.truncationGate(':label', '(:lsn, :seq)', ':source')} AS ok`,
    );
    return rows.filter((row) => {
      const { lsn, seq } = storedVersion(row);
      const key = keyColumns.map((c) => toSqliteValue(target, c, row.key[c] ?? null));
      const named = { label: target.label, key: rowKeyOf(row), lsn, seq, ...(tracked ? { source: row.source } : {}) };
      return Number((supplied.get(...key, named) as { ok: bigint }).ok) !== 1;
    });
  }

  async upsert(_db: Database.Database, target: SqliteTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const stmt = this.stmt(this.insertSql(target, columns, keyColumns, 'upsert'));
    const digest = this.tracked ? this.digestStatement(target, keyColumns) : undefined;
    let written = 0;
    for (const row of rows) {
      const n = stmt.run(...this.insertParams(target, columns, row)).changes;
      if (n > 0) digest?.run(...keyValues(target, keyColumns, row));
      written += n;
    }
    return written;
  }

  async olderStored(_db: Database.Database, target: SqliteTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    // A soft-deleted row is deleted: the upsert revives it.
    const older = this.stmt(
      `SELECT EXISTS (SELECT 1 FROM ${target.qualified} WHERE ${keyColumns.map((c) => `${q(c)} IS ?`).join(' AND ')}
                        AND ${ROW_VERSION} < (?, ?)${this.soft ? ` AND ${DELETED_AT} IS NULL` : ''}) AS older`,
    );
    return rows.filter((row) => {
      const { lsn, seq } = storedVersion(row);
      return Number((older.get(...keyValues(target, keyColumns, row), lsn, seq) as { older: bigint | number }).older) === 1;
    });
  }

  /**
   * Conflict tracking: stores the digest of a row syncline just wrote (keyed by `keyColumns`'
   * values), so a later change of it at the target shows (see row-fingerprint.ts).
   */
  private digestStatement(target: SqliteTable, keyColumns: string[]): Database.Statement {
    return this.stmt(`UPDATE ${target.qualified} SET ${W_FP} = ${fingerprintSql(dataColumns(target.columns.keys()))} WHERE ${keyColumns.map((c) => `${q(c)} IS ?`).join(' AND ')}`);
  }

  /**
   * Conflict tracking: the insert of keys readStored found absent, never over a row (ON
   * CONFLICT DO NOTHING; `changes` 0: refused). The batch's `BEGIN IMMEDIATE` holds the
   * database's write lock, so no other writer can have inserted the key since: a refusal here
   * is the version gate's (a newer delete, truncation or replaced version).
   */
  async insertAbsent(_db: Database.Database, target: SqliteTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const stmt = this.stmt(this.insertSql(target, columns, keyColumns, 'absent'));
    const digest = this.digestStatement(target, keyColumns);
    return rows.filter((row) => {
      const refused = stmt.run(...this.insertParams(target, columns, row)).changes === 0;
      if (!refused) digest.run(...keyValues(target, keyColumns, row));
      return refused;
    });
  }

  /** Parameters of insertSql, in order: the columns, lsn, seq, (tracked) source and commit time, then the table label and row key. */
  private insertParams(target: SqliteTable, columns: string[], row: ChangeEvent): SqlValue[] {
    const params: SqlValue[] = columns.map((c) => toSqliteValue(target, c, row.payload?.[c] ?? null));
    const { lsn, seq } = storedVersion(row);
    params.push(lsn, seq);
    if (this.tracked) params.push(row.source, utcText(row.commit_ts));
    params.push(target.label, rowKeyOf(row));
    return params;
  }

  /**
   * The version-gated upsert of one row (`upsert`), or conflict tracking's insert that never
   * writes over a row (`absent`). Gated, the row goes in only without a newer tombstone or
   * truncation; tracked, only tombstones of its own source count, and a version another
   * writer's winning write replaced stays replaced (a change of it republished after a
   * capture restart must not bring the row back).
   */
  private insertSql(target: SqliteTable, columns: string[], keyColumns: string[], mode: 'upsert' | 'absent'): string {
    const gate = this.options.versionGate;
    const soft = this.soft;
    const tracked = this.tracked;
    const insertCols = [...columns.map(q), V_LSN, V_SEQ, ...(soft ? [DELETED_AT] : []), ...(tracked ? [W_SOURCE, W_CLOCK] : [])];
    const values = [...columns.map((_, i) => `i.c${i}`), 'i.l', 'i.s', ...(soft ? ['NULL'] : []), ...(tracked ? ['i.w', 'i.ts'] : [])];
    // In the order of insertParams.
    const aliases = [...columns.map((_, i) => `c${i}`), 'l', 's', ...(tracked ? ['w', 'ts'] : []), 'tl', 'rk'];
    // The WHERE after SELECT is needed anyway: without it SQLite would parse ON CONFLICT as a join's ON.
    const where = gate
      ? `WHERE NOT EXISTS (SELECT 1 FROM ${tracked ? this.state.sourceTombstones : this.state.tombstones} tb WHERE tb.table_name = i.tl AND tb.row_key = i.rk AND (tb.lsn, tb.seq) >= (i.l, i.s)${tracked ? ' AND tb.source = i.w' : ''})
           AND ${this.truncationGate('i.tl', '(i.l, i.s)', 'i.w')}` +
        (tracked
          ? `
           AND NOT EXISTS (SELECT 1 FROM ${this.state.conflicts} cf WHERE cf.table_name = i.tl AND cf.row_key = i.rk AND cf.stored_source = i.w AND cf.winner = 'incoming'
                             AND cf.stored_lsn IS NOT NULL AND (cf.stored_lsn, cf.stored_seq) >= (i.l, i.s))`
          : '')
      : 'WHERE true';
    const insert = `INSERT INTO ${target.qualified} AS t (${insertCols.join(', ')})
      SELECT ${values.join(', ')} FROM (SELECT ${aliases.map((a) => `? AS ${a}`).join(', ')}) AS i
      ${where}
      ON CONFLICT (${keyColumns.map(q).join(', ')}) `;
    if (mode === 'absent') return `${insert}DO NOTHING`;
    // Key columns too: under a NOCASE (or RTRIM) key a key respelled at the source is a DELETE
    // of the old spelling and an INSERT of the new one in different stream partitions; the
    // INSERT may meet the old row first, which kept the old spelling for good without this.
    const sets = [...columns.map((c) => `${q(c)} = excluded.${q(c)}`), `${V_LSN} = excluded.${V_LSN}`, `${V_SEQ} = excluded.${V_SEQ}`];
    // A newer insert or update revives a soft-deleted row (the WHERE below gates it like the rest).
    if (soft) sets.push(`${DELETED_AT} = NULL`);
    if (tracked) sets.push(`${W_SOURCE} = excluded.${W_SOURCE}`, `${W_CLOCK} = excluded.${W_CLOCK}`);
    const newer = `(COALESCE(t.${V_LSN}, 0), COALESCE(t.${V_SEQ}, 0)) < (excluded.${V_LSN}, excluded.${V_SEQ})`;
    // Tracked: a row of another writer (another source, or never written by syncline) reaches
    // the upsert only when the resolver let the change win (SqlSink.resolveConflicts, in this
    // transaction); versions of different writers are not comparable, so only a row of the
    // same source is gated on its version.
    const rowGate = tracked ? `(t.${W_SOURCE} IS NOT excluded.${W_SOURCE} OR t.${W_SOURCE} IS NULL OR ${newer})` : newer;
    return `${insert}DO UPDATE SET ${sets.join(', ')}` + (gate ? `\n      WHERE ${rowGate}` : '');
  }

  async delete(_db: Database.Database, target: SqliteTable, keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const gate = this.options.versionGate;
    const soft = this.soft;
    const tracked = this.tracked;
    // Tracked: each source keeps its own tombstone of the key (advanced only by its newer deletes).
    const tombstone = this.stmt(
      `INSERT INTO ${tracked ? this.state.sourceTombstones : this.state.tombstones} AS tb (table_name, row_key, lsn, seq${tracked ? ', source, clock' : ''}) VALUES (?, ?, ?, ?${tracked ? ', ?, ?' : ''})
       ON CONFLICT (table_name, row_key${tracked ? ', source' : ''}) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq,
         deleted_at = strftime('%Y-%m-%d %H:%M:%f', 'now')${tracked ? ', clock = excluded.clock' : ''}
       WHERE (tb.lsn, tb.seq) < (excluded.lsn, excluded.seq)`,
    );
    const match = keyColumns.map((c) => `${q(c)} IS ?`);
    // Tracked: the resolver already let a delete of another writer's row win (see insertSql).
    if (gate) match.push(tracked ? `(${W_SOURCE} IS NOT ? OR ${W_SOURCE} IS NULL OR ${ROW_VERSION} < (?, ?))` : `${ROW_VERSION} < (?, ?)`);
    // Soft: the row keeps its data and takes the delete's version, so a replay of this
    // delete (same version) or of anything older stays stale, and only a newer change revives it.
    const removal = this.stmt(
      soft
        ? `UPDATE ${target.qualified} SET ${DELETED_AT} = ?, ${V_LSN} = ?, ${V_SEQ} = ?${tracked ? `, ${W_SOURCE} = ?, ${W_CLOCK} = ?` : ''} WHERE ${match.join(' AND ')}`
        : `DELETE FROM ${target.qualified} WHERE ${match.join(' AND ')}`,
    );
    // A delete that removed nothing still applied when it advanced the tombstone of a key the
    // target holds no row of and is newer than the table's truncation; else the gate refused it.
    const absentAfterTruncation = this.stmt(
      `SELECT NOT EXISTS (SELECT 1 FROM ${target.qualified} WHERE ${keyColumns.map((c) => `${q(c)} IS ?`).join(' AND ')})
          AND ${this.truncationGate(':label', '(:lsn, :seq)', ':source')} AS ok`,
    );
    let removed = 0;
    for (const row of rows) {
      const { lsn, seq } = storedVersion(row);
      const advanced = tombstone.run(target.label, rowKeyOf(row), lsn, seq, ...(tracked ? [row.source, utcText(row.commit_ts)] : [])).changes > 0;
      const params: SqlValue[] = keyColumns.map((c) => toSqliteValue(target, c, row.key[c] ?? null));
      if (gate) params.push(...(tracked ? [row.source] : []), lsn, seq);
      if (soft) {
        const at = utcText(row.commit_ts);
        params.unshift(at, lsn, seq, ...(tracked ? [row.source, at] : []));
      }
      const n = removal.run(...params).changes;
      // Soft and tracked: the row stays, now syncline's (the delete may have won it from the target).
      if (n > 0 && soft && tracked) this.digestStatement(target, keyColumns).run(...keyValues(target, keyColumns, row));
      if (n > 0) removed += n;
      else if (advanced) {
        const key = keyColumns.map((c) => toSqliteValue(target, c, row.key[c] ?? null));
        if (Number((absentAfterTruncation.get(...key, { label: target.label, lsn, seq, ...(tracked ? { source: row.source } : {}) }) as { ok: bigint | number }).ok) === 1) removed += 1;
      }
    }
    return removed;
  }

  /** A keyless table's version rows: per table, or (tracking conflicts) per table and source. */
  private multisetScope(label: string, source: string): { versions: string; truncations: string; where: string; params: string[]; columns: string } {
    if (this.tracked) return { versions: this.state.sourceMultisetVersions, truncations: this.state.sourceTruncations, where: 'table_name = ? AND source = ?', params: [label, source], columns: 'table_name, source' };
    return { versions: this.state.multisetVersions, truncations: this.state.truncations, where: 'table_name = ?', params: [label], columns: 'table_name' };
  }

  async readMultisetVersions(_db: Database.Database, label: string, source: string): Promise<MultisetVersions> {
    const scope = this.multisetScope(label, source);
    const high = this.stmt(`SELECT lsn, seq, reset FROM ${scope.versions} WHERE ${scope.where}`).get(...scope.params) as { lsn: bigint; seq: bigint; reset: bigint } | undefined;
    const trunc = this.stmt(`SELECT lsn, seq FROM ${scope.truncations} WHERE ${scope.where}`).get(...scope.params) as { lsn: bigint; seq: bigint } | undefined;
    return {
      high: high && { version: versionOf(BigInt(high.lsn), Number(high.seq)), reset: Number(high.reset) === 1 },
      truncation: trunc && versionOf(BigInt(trunc.lsn), Number(trunc.seq)),
    };
  }

  async insertRows(_db: Database.Database, target: SqliteTable, columns: string[], changes: ChangeEvent[]): Promise<number> {
    // Tracked: a keyless row names its writer and time too (a truncation of another source keeps it when newer).
    const writer = this.tracked ? [W_SOURCE, W_CLOCK] : [];
    const insert = this.stmt(`INSERT INTO ${target.qualified} (${[...columns.map(q), V_LSN, V_SEQ, ...writer].join(', ')}) VALUES (${[...columns, V_LSN, V_SEQ, ...writer].map(() => '?').join(', ')})`);
    let added = 0;
    for (const change of changes) {
      const payload = change.payload as Row;
      const { lsn, seq } = storedVersion(change);
      added += insert.run(...columns.map((c) => toSqliteValue(target, c, payload[c] ?? null)), lsn, seq, ...(this.tracked ? [change.source, utcText(change.commit_ts)] : [])).changes;
    }
    return added;
  }

  /** Found by `rowid`: every column `IS` the `before` value (NULL-safe, BINARY collation). */
  async removeOne(_db: Database.Database, target: SqliteTable, before: Row): Promise<boolean> {
    const columns = Object.keys(before);
    const match = columns.map((c) => `${q(c)} IS ? COLLATE BINARY`).join(' AND ') || 'true';
    const removed = this.stmt(`DELETE FROM ${target.qualified} WHERE rowid = (SELECT rowid FROM ${target.qualified} WHERE ${match} LIMIT 1)`)
      .run(...columns.map((c) => toSqliteValue(target, c, before[c] ?? null))).changes;
    return removed > 0;
  }

  async writeMultisetVersion(_db: Database.Database, label: string, newest: ChangeEvent | undefined, reset: boolean, source: string): Promise<void> {
    const scope = this.multisetScope(label, source);
    const keys = scope.params.map(() => '?').join(', ');
    if (newest) {
      const { lsn, seq } = storedVersion(newest);
      this.stmt(
        `INSERT INTO ${scope.versions} AS v (${scope.columns}, lsn, seq, reset) VALUES (${keys}, ?, ?, ?)
         ON CONFLICT (${scope.columns}) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq, reset = max(v.reset, excluded.reset)`,
      ).run(...scope.params, lsn, seq, reset ? 1n : 0n);
    } else if (reset) {
      this.stmt(
        `INSERT INTO ${scope.versions} AS v (${scope.columns}, lsn, seq, reset) VALUES (${keys}, 0, 0, 1)
         ON CONFLICT (${scope.columns}) DO UPDATE SET reset = 1`,
      ).run(...scope.params);
    }
  }

  /**
   * Conflict tracking: the stored rows of `rows`' keys, every column as text. No row lock is
   * needed: the batch's `BEGIN IMMEDIATE` holds the whole database's write lock, so no other
   * writer (another apply process, the application) changes a row between this read and the
   * writes. A row syncline never wrote (`_syncline_source` NULL), or whose values no longer
   * give the digest syncline stored with its last write (changed at the target since, see
   * row-fingerprint.ts), is the target's own (`local`), of unknown time.
   */
  async readStored(_db: Database.Database, target: SqliteTable, keyColumns: string[], rows: ChangeEvent[]): Promise<Map<string, StoredRow>> {
    const read = this.stmt(`SELECT * FROM ${target.qualified} WHERE ${keyColumns.map((c) => `${q(c)} IS ?`).join(' AND ')}`);
    const out = new Map<string, StoredRow>();
    for (const r of rows) {
      const found = read.get(...keyColumns.map((c) => toSqliteValue(target, c, r.key[c] ?? null))) as Record<string, unknown> | undefined;
      if (!found) continue;
      const row: Row = {};
      for (const [k, v] of Object.entries(found)) row[k] = storedText(v);
      const source = row[SOURCE_COLUMN] ?? null;
      const local = source === null || found[FINGERPRINT_COLUMN] !== fingerprintOfRow(target, found);
      const lsn = found[VERSION_LSN_COLUMN];
      const seq = found[VERSION_SEQ_COLUMN];
      out.set(rowKeyOf(r), {
        row,
        source,
        local,
        clock: local ? null : (row[CLOCK_COLUMN] ?? null),
        lsn: typeof lsn === 'bigint' ? formatLsn(lsn) : null,
        seq: typeof seq === 'bigint' ? Number(seq) : null,
      });
    }
    return out;
  }

  async writeColumns(_db: Database.Database, target: SqliteTable, keyColumns: string[], change: ChangeEvent, values: Row): Promise<void> {
    const columns = Object.keys(values).filter((c) => !keyColumns.includes(c));
    if (columns.length === 0) return;
    const key = keyValues(target, keyColumns, change);
    const match = keyColumns.map((c) => `${q(c)} IS ?`).join(' AND ');
    // A version the target changed stays the target's: only a row that was intact is digested anew.
    const intact = this.stmt(`SELECT ${W_FP} IS ${fingerprintSql(dataColumns(target.columns.keys()))} AS intact FROM ${target.qualified} WHERE ${match}`).get(...key) as { intact: bigint } | undefined;
    this.stmt(`UPDATE ${target.qualified} SET ${columns.map((c) => `${q(c)} = ?`).join(', ')} WHERE ${match}`).run(...columns.map((c) => toSqliteValue(target, c, values[c] ?? null)), ...key);
    if (intact !== undefined && Number(intact.intact) === 1) this.digestStatement(target, keyColumns).run(...key);
  }

  /** One entry per change of each run; a change recorded before (a replayed batch) is kept as it was. */
  async recordConflicts(_db: Database.Database, conflicts: ConflictRecord[]): Promise<void> {
    const insert = this.stmt(
      `INSERT INTO ${this.state.conflicts} (table_name, row_key, strategy, winner, incoming_source, stored_source, incoming_lsn, incoming_seq,
                                            incoming_commit_ts, incoming_clock, stored_clock, incoming_version, stored_version, written, stored_lsn, stored_seq)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (table_name, row_key, incoming_source, incoming_lsn, incoming_seq) DO NOTHING`,
    );
    for (const r of conflicts) {
      for (const change of r.run) {
        const { lsn, seq } = storedVersion(change);
        insert.run(
          r.table, rowKeyOf(change), r.strategy, r.winner, change.source, r.storedWriter, lsn, seq,
          utcText(change.commit_ts), change === r.incoming ? r.incomingClock : null, r.storedClock,
          JSON.stringify(change.payload), JSON.stringify(r.stored), r.written ? JSON.stringify(r.written) : null,
          r.storedLsn === null ? null : parseLsn(r.storedLsn), r.storedSeq === null ? null : BigInt(r.storedSeq),
        );
      }
    }
  }

  async decidedBefore(_db: Database.Database, label: string, changes: readonly ChangeEvent[]): Promise<Set<string>> {
    // See the interface: decided, replaced, truncated, or (a delete) applied.
    const find = this.stmt(
      `SELECT EXISTS (SELECT 1 FROM ${this.state.conflicts} WHERE table_name = :label AND row_key = :key AND incoming_source = :source AND incoming_lsn = :lsn AND incoming_seq = :seq)
           OR EXISTS (SELECT 1 FROM ${this.state.conflicts} WHERE table_name = :label AND row_key = :key AND stored_source = :source AND winner = 'incoming'
                       AND stored_lsn IS NOT NULL AND (stored_lsn, stored_seq) >= (:lsn, :seq))
           OR EXISTS (SELECT 1 FROM ${this.state.sourceTruncations} WHERE table_name = :label AND source = :source AND (lsn, seq) >= (:lsn, :seq))
           OR (:del = 1 AND EXISTS (SELECT 1 FROM ${this.state.sourceTombstones} WHERE table_name = :label AND row_key = :key AND source = :source AND (lsn, seq) >= (:lsn, :seq))) AS settled`,
    );
    const out = new Set<string>();
    for (const ch of changes) {
      const { lsn, seq } = storedVersion(ch);
      const settled = find.get({ label, key: rowKeyOf(ch), source: ch.source, lsn, seq, del: ch.op === 'DELETE' ? 1 : 0 }) as { settled: bigint | number };
      if (Number(settled.settled) === 1) out.add(conflictIdOf(ch));
    }
    return out;
  }

  async readTruncations(_db: Database.Database, label: string): Promise<Deletion[]> {
    const rows = this.stmt(`SELECT source, lsn, seq, clock FROM ${this.state.sourceTruncations} WHERE table_name = ? AND clock IS NOT NULL`).all(label) as { source: string; lsn: bigint; seq: bigint; clock: string }[];
    return rows.map((r) => ({ source: r.source, lsn: formatLsn(BigInt(r.lsn)), seq: Number(r.seq), clock: r.clock, truncation: true }));
  }

  async readDeletions(_db: Database.Database, target: SqliteTable, _keyColumns: string[], rows: ChangeEvent[]): Promise<Map<string, Deletion[]>> {
    const find = this.stmt(`SELECT source, lsn, seq, clock FROM ${this.state.sourceTombstones} WHERE table_name = ? AND row_key = ? ORDER BY clock IS NULL, clock DESC, source`);
    const out = new Map<string, Deletion[]>();
    for (const r of rows) {
      const key = rowKeyOf(r);
      const found = find.all(target.label, key) as { source: string; lsn: bigint; seq: bigint; clock: string | null }[];
      if (found.length > 0) out.set(key, found.map((t) => ({ source: t.source, lsn: formatLsn(BigInt(t.lsn)), seq: Number(t.seq), clock: t.clock })));
    }
    return out;
  }

  isStructural(err: unknown): boolean {
    return isStructuralSqliteError(err);
  }

  /** Prepared statements name the tables' columns: prepare them again from the new metadata. */
  invalidate(): void {
    this.statements.clear();
  }

  readonly transactionalDdl = true;

  async describeColumns(db: Database.Database, target: SqliteTable): Promise<Map<string, TargetColumnShape>> {
    const rows = db.prepare('SELECT name, type, "notnull" AS not_null FROM pragma_table_info(?)').all(target.name) as { name: string; type: string; not_null: bigint }[];
    return new Map(rows.map((r) => [r.name, { type: r.type.toUpperCase(), notNull: Number(r.not_null) === 1 }]));
  }

  typeFor(column: RecordedColumn): string {
    return sqliteTypeFor(column.type);
  }

  async createTable(db: Database.Database, schema: string, table: string, columns: readonly RecordedColumn[]): Promise<void> {
    const defs = columns.map((col) => `${q(col.name)} ${sqliteTypeFor(col.type)}${col.not_null ? ' NOT NULL' : ''}`);
    const key = columns.filter((col) => col.key).map((col) => q(col.name));
    if (key.length > 0) defs.push(`PRIMARY KEY (${key.join(', ')})`);
    db.exec(`CREATE TABLE IF NOT EXISTS ${q(sqliteTableName(schema, table))} (${defs.join(', ')})`);
  }

  async evolve(db: Database.Database, target: SqliteTable, steps: readonly SchemaStep[]): Promise<void> {
    const t = target.qualified;
    // Tracked: a dropped or renamed column changes every row's digest. The rows that were
    // intact before the DDL are marked, and digested again after it.
    const digests = this.tracked && target.columns.has(FINGERPRINT_COLUMN) && steps.length > 0;
    if (digests) db.prepare(`UPDATE ${t} SET ${W_FP} = ? WHERE ${W_FP} IS ${fingerprintSql(dataColumns(target.columns.keys()))}`).run(INTACT);
    this.runSteps(db, target, steps);
    if (digests) {
      const columns = (db.prepare('SELECT name FROM pragma_table_info(?) ORDER BY cid').all(target.name) as { name: string }[]).map((r) => r.name);
      db.prepare(`UPDATE ${t} SET ${W_FP} = ${fingerprintSql(dataColumns(columns))} WHERE ${W_FP} = ?`).run(INTACT);
    }
  }

  private runSteps(db: Database.Database, target: SqliteTable, steps: readonly SchemaStep[]): void {
    const t = target.qualified;
    for (const step of steps) {
      switch (step.kind) {
        case 'add':
          db.exec(`ALTER TABLE ${t} ADD COLUMN ${q(step.column.name)} ${sqliteTypeFor(step.column.type)}`);
          break;
        case 'rename':
          db.exec(`ALTER TABLE ${t} RENAME COLUMN ${q(step.from)} TO ${q(step.to)}`);
          break;
        case 'widen':
          // Never planned: a widening keeps the SQLite type (INTEGER, TEXT, NUMERIC, REAL).
          break;
        case 'drop':
          db.exec(`ALTER TABLE ${t} DROP COLUMN ${q(step.name)}`);
          break;
        case 'nullable':
          throw new PrerequisiteError(
            `target table ${target.label}: column ${step.name} was dropped at the source and is NOT NULL here; SQLite cannot drop a NOT NULL constraint`,
            `recreate ${t} without NOT NULL on ${q(step.name)}, or set sink.schema_evolution: full with sink.drop_columns: drop`,
          );
      }
    }
  }

  addColumnsFix(target: SqliteTable, missing: string[]): string {
    return missing.map((m) => `ALTER TABLE ${target.qualified} ADD COLUMN ${q(m)} <type>`).join('; ');
  }

  primaryKeyFix(target: SqliteTable, keyColumns: string[]): string {
    return `recreate ${target.qualified} with PRIMARY KEY (${keyColumns.map(q).join(', ')}) (SQLite cannot add a primary key to a table)`;
  }

  async close(): Promise<void> {
    this.statements.clear();
    this.db?.close();
    this.db = undefined;
  }
}

/** The values of `change`'s key, bound as `keyColumns` are stored. */
function keyValues(target: SqliteTable, keyColumns: readonly string[], change: ChangeEvent): SqlValue[] {
  return keyColumns.map((c) => toSqliteValue(target, c, change.key[c] ?? null));
}

/** A commit time as syncline's UTC text ('YYYY-MM-DD HH:MM:SS.ffffff', as `_deleted_at` and datetime columns). */
function utcText(commitTs: string): string {
  return pgTimestampToUtc(commitTs.replace(/Z$/, '+00'));
}

/**
 * A stored value as text, as a change event carries it: integers and reals in decimal,
 * BLOBs as bytea hex (`\x...`), text as is.
 */
function storedText(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return `\\x${v.toString('hex')}`;
  return String(v);
}

/** A change's version as SQLite stores it: two 64-bit signed INTEGERs. */
function storedVersion(change: ChangeEvent): { lsn: bigint; seq: bigint } {
  const lsn = parseLsn(change.commit_lsn);
  if (lsn > MAX_LSN) throw new SynclineError('SINK_VALUE', `commit LSN ${change.commit_lsn} exceeds SQLite's 64-bit signed INTEGER`, { retriable: false });
  return { lsn, seq: BigInt(change.seq) };
}
