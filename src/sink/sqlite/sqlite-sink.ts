import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { rowKeyOf, type ChangeEvent, type Row } from '../../core/change.js';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import { parseLsn, versionOf } from '../../core/lsn.js';
import { pgTimestampToUtc } from '../pg-text.js';
import { bookkeepingTables, DELETED_AT_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, type BookkeepingTables } from '../sql/bookkeeping.js';
import type { RecordedColumn, SchemaStep, TargetColumnShape } from '../../core/schema-evolution.js';
import type { SchemaEvolution } from '../sql/schema-evolver.js';
import type { MultisetVersions, SqlDialect } from '../sql/sql-dialect.js';
import { SqlSink } from '../sql/sql-sink.js';
import { classifySqliteError, isStructuralSqliteError } from './sqlite-errors.js';
import { INT64_MAX, loadSqliteTable, sqliteTableName, sqliteTypeFor, quoteSqliteIdent as q, sqlitePathOf, toSqliteValue, type SqliteTable, type SqlValue } from './sqlite-table.js';

export { quoteSqliteIdent, sqlitePathOf, sqliteTableName } from './sqlite-table.js';

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
  /** `sink.schema_evolution`: the target follows the source's definitions. */
  evolution?: SchemaEvolution;
}

const V_LSN = q(VERSION_LSN_COLUMN);
const V_SEQ = q(VERSION_SEQ_COLUMN);
const DELETED_AT = q(DELETED_AT_COLUMN);
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
 * truncations as watermarks, keyless tables as multisets, and the positions. Statements are
 * prepared once and run per row: in-process there is no round trip to save by batching.
 * better-sqlite3 is synchronous and the one connection is used by one batch at a time (see
 * `withConnection`), so batches never interleave. The database runs in WAL mode: readers
 * (verify, dashboards) do not block the writer.
 */
export class SqliteSink extends SqlSink<Database.Database, SqliteTable> {
  constructor(options: SqliteSinkOptions) {
    super(new SqliteDialect(options), undefined, options.evolution);
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
    return loadSqliteTable(db, schema, table, this.soft, this.options.url);
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

  /** One query per row: whether the target has it, or a newer delete or truncation. */
  async absentRows(_db: Database.Database, target: SqliteTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const supplied = this.stmt(
      `SELECT EXISTS (SELECT 1 FROM ${target.qualified} WHERE ${keyColumns.map((c) => `${q(c)} IS ?`).join(' AND ')})
           OR EXISTS (SELECT 1 FROM ${this.state.tombstones} WHERE table_name = ? AND row_key = ? AND (lsn, seq) >= (?, ?))
           OR EXISTS (SELECT 1 FROM ${this.state.truncations} WHERE table_name = ? AND (lsn, seq) >= (?, ?)) AS ok`,
    );
    return rows.filter((row) => {
      const { lsn, seq } = storedVersion(row);
      const key = keyColumns.map((c) => toSqliteValue(target, c, row.key[c] ?? null));
      return Number((supplied.get(...key, target.label, rowKeyOf(row), lsn, seq, target.label, lsn, seq) as { ok: bigint }).ok) !== 1;
    });
  }

  async upsert(_db: Database.Database, target: SqliteTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const stmt = this.stmt(this.upsertSql(target, columns, keyColumns));
    let written = 0;
    for (const row of rows) {
      const params: SqlValue[] = columns.map((c) => toSqliteValue(target, c, row.payload?.[c] ?? null));
      const { lsn, seq } = storedVersion(row);
      params.push(lsn, seq);
      if (this.options.versionGate) params.push(target.label, rowKeyOf(row), target.label);
      written += stmt.run(...params).changes;
    }
    return written;
  }

  private upsertSql(target: SqliteTable, columns: string[], keyColumns: string[]): string {
    const gate = this.options.versionGate;
    const soft = this.soft;
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
    return `INSERT INTO ${target.qualified} AS t (${[...columns.map(q), V_LSN, V_SEQ, ...(soft ? [DELETED_AT] : [])].join(', ')})
      SELECT ${[...aliases.map((a) => `i.${a}`), ...(soft ? ['NULL'] : [])].join(', ')} FROM (SELECT ${aliases.map((a) => `? AS ${a}`).join(', ')}) AS i
      ${where}
      ON CONFLICT (${keyColumns.map(q).join(', ')}) DO UPDATE SET ${sets.join(', ')}` +
      (gate ? `\n      WHERE (COALESCE(t.${V_LSN}, 0), COALESCE(t.${V_SEQ}, 0)) < (excluded.${V_LSN}, excluded.${V_SEQ})` : '');
  }

  async delete(_db: Database.Database, target: SqliteTable, keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const gate = this.options.versionGate;
    const soft = this.soft;
    const tombstone = this.stmt(
      `INSERT INTO ${this.state.tombstones} AS tb (table_name, row_key, lsn, seq) VALUES (?, ?, ?, ?)
       ON CONFLICT (table_name, row_key) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq,
         deleted_at = strftime('%Y-%m-%d %H:%M:%f', 'now')
       WHERE (tb.lsn, tb.seq) < (excluded.lsn, excluded.seq)`,
    );
    const match = keyColumns.map((c) => `${q(c)} IS ?`);
    if (gate) match.push(`${ROW_VERSION} < (?, ?)`);
    // Soft: the row keeps its data and takes the delete's version, so a replay of this
    // delete (same version) or of anything older stays stale, and only a newer change revives it.
    const removal = this.stmt(
      soft
        ? `UPDATE ${target.qualified} SET ${DELETED_AT} = ?, ${V_LSN} = ?, ${V_SEQ} = ? WHERE ${match.join(' AND ')}`
        : `DELETE FROM ${target.qualified} WHERE ${match.join(' AND ')}`,
    );
    let removed = 0;
    for (const row of rows) {
      const { lsn, seq } = storedVersion(row);
      tombstone.run(target.label, rowKeyOf(row), lsn, seq);
      const params: SqlValue[] = keyColumns.map((c) => toSqliteValue(target, c, row.key[c] ?? null));
      if (gate) params.push(lsn, seq);
      if (soft) params.unshift(pgTimestampToUtc(row.commit_ts.replace(/Z$/, '+00')), lsn, seq);
      removed += removal.run(...params).changes;
    }
    return removed;
  }

  async readMultisetVersions(_db: Database.Database, label: string): Promise<MultisetVersions> {
    const high = this.stmt(`SELECT lsn, seq, reset FROM ${this.state.multisetVersions} WHERE table_name = ?`).get(label) as { lsn: bigint; seq: bigint; reset: bigint } | undefined;
    const trunc = this.stmt(`SELECT lsn, seq FROM ${this.state.truncations} WHERE table_name = ?`).get(label) as { lsn: bigint; seq: bigint } | undefined;
    return {
      high: high && { version: versionOf(BigInt(high.lsn), Number(high.seq)), reset: Number(high.reset) === 1 },
      truncation: trunc && versionOf(BigInt(trunc.lsn), Number(trunc.seq)),
    };
  }

  async insertRows(_db: Database.Database, target: SqliteTable, columns: string[], changes: ChangeEvent[]): Promise<number> {
    const insert = this.stmt(`INSERT INTO ${target.qualified} (${[...columns.map(q), V_LSN, V_SEQ].join(', ')}) VALUES (${[...columns, V_LSN, V_SEQ].map(() => '?').join(', ')})`);
    let added = 0;
    for (const change of changes) {
      const payload = change.payload as Row;
      const { lsn, seq } = storedVersion(change);
      added += insert.run(...columns.map((c) => toSqliteValue(target, c, payload[c] ?? null)), lsn, seq).changes;
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

  async writeMultisetVersion(_db: Database.Database, label: string, newest: ChangeEvent | undefined, reset: boolean): Promise<void> {
    if (newest) {
      const { lsn, seq } = storedVersion(newest);
      this.stmt(
        `INSERT INTO ${this.state.multisetVersions} AS v (table_name, lsn, seq, reset) VALUES (?, ?, ?, ?)
         ON CONFLICT (table_name) DO UPDATE SET lsn = excluded.lsn, seq = excluded.seq, reset = max(v.reset, excluded.reset)`,
      ).run(label, lsn, seq, reset ? 1n : 0n);
    } else if (reset) {
      this.stmt(
        `INSERT INTO ${this.state.multisetVersions} AS v (table_name, lsn, seq, reset) VALUES (?, 0, 0, 1)
         ON CONFLICT (table_name) DO UPDATE SET reset = 1`,
      ).run(label);
    }
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

/** A change's version as SQLite stores it: two 64-bit signed INTEGERs. */
function storedVersion(change: ChangeEvent): { lsn: bigint; seq: bigint } {
  const lsn = parseLsn(change.commit_lsn);
  if (lsn > MAX_LSN) throw new SynclineError('SINK_VALUE', `commit LSN ${change.commit_lsn} exceeds SQLite's 64-bit signed INTEGER`, { retriable: false });
  return { lsn, seq: BigInt(change.seq) };
}
