import { createHash } from 'node:crypto';
import mysql, { type Pool, type PoolConnection, type ResultSetHeader, type RowDataPacket, type TypeCastField } from 'mysql2/promise';
import { rowKeyOf, tableLabelOf, type ChangeEvent, type Row } from '../../core/change.js';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import { formatLsn, parseLsn, versionOf } from '../../core/lsn.js';
import { pgTimestampToUtc } from '../pg-text.js';
import { bookkeepingTables, CLOCK_COLUMN, DELETED_AT_COLUMN, SOURCE_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, type BookkeepingTables } from '../sql/bookkeeping.js';
import type { RecordedColumn, SchemaStep, TargetColumnShape } from '../../core/schema-evolution.js';
import type { SchemaEvolution } from '../sql/schema-evolver.js';
import { conflictIdOf, type ConflictRecord, type Deletion, type MultisetVersions, type SqlDialect, type StoredRow } from '../sql/sql-dialect.js';
import { SqlSink, type ConflictOptions } from '../sql/sql-sink.js';
import { classifyMysqlError, isFatalMysqlError, isStructuralMysqlError } from './mysql-errors.js';
import { assertMysqlTableName, keyMatch, loadMysqlTable, mysqlColumnTypes, targetDatabase, mysqlTypeFor, normalizeMysqlType, quoteMysqlIdent as q, rowMatch, toMysqlParam, type MysqlColumn, type MysqlTable } from './mysql-table.js';

export interface MysqlSinkOptions {
  /** `mysql://user:password@host:port/database`; the database is required. */
  url: string;
  /**
   * Prefix of syncline's own tables in the URL's database: `<stateSchema>_positions`,
   * `<stateSchema>_tombstones`, `<stateSchema>_truncations`. (Tables in the target database
   * rather than a separate database: the apply user needs no CREATE DATABASE grant, and the
   * positions commit in the same InnoDB transaction as the rows either way.)
   */
  stateSchema: string;
  versionGate: boolean;
  /**
   * hard (default): a delete removes the row. soft: the row stays with `_deleted_at` set to
   * the commit time (added to the table when missing) and the delete's version, so replays
   * stay stale; a newer insert or update clears it. A tombstone is kept in both modes.
   */
  deleteMode?: 'hard' | 'soft';
  poolSize?: number;
  /** `sink.schema_evolution`: the target follows the source's definitions. */
  evolution?: SchemaEvolution;
  /**
   * Conflict tracking between writers (fan-in): rows record their writing source and its
   * commit time, tombstones their source, decided conflicts go to `<stateSchema>_conflicts`.
   */
  conflicts?: ConflictOptions;
}

const V_LSN = q(VERSION_LSN_COLUMN);
const V_SEQ = q(VERSION_SEQ_COLUMN);
const DELETED_AT = q(DELETED_AT_COLUMN);
/** A row's stored version; rows written before syncline managed the table count as oldest. */
const ROW_VERSION = `(COALESCE(${V_LSN}, 0), COALESCE(${V_SEQ}, 0))`;
/** The version gate inside ON DUPLICATE KEY UPDATE: the stored row is older than the incoming one. */
const NEWER = `${ROW_VERSION} < (VALUES(${V_LSN}), VALUES(${V_SEQ}))`;
/** Aliases of the derived input table; odd names so they never collide with target columns. */
const IN = (i: number): string => q(`__syncline_c${i}`);
const IN_LSN = q('__syncline_lsn');
const IN_SEQ = q('__syncline_seq');
const IN_KEY = q('__syncline_key');
const IN_SOURCE = q('__syncline_source');
const IN_CLOCK = q('__syncline_ts');
/**
 * The rows an INSERT ... SELECT reads (MysqlDialect.inputRows): its FROM, and the SQL of each
 * sent column (by index), the key's hash, the version, the writer and its commit time.
 */
interface InputRows {
  from: string;
  column: (i: number) => string;
  key: string;
  lsn: string;
  seq: string;
  source: string;
  clock: string;
}
const W_SOURCE = q(SOURCE_COLUMN);
const W_CLOCK = q(CLOCK_COLUMN);
/**
 * Conflict tracking's row gate inside ON DUPLICATE KEY UPDATE: a row of another writer (or
 * one syncline never wrote: its source is NULL) reaches the upsert only when the resolver let
 * the change win (SqlSink.resolveConflicts, under the rows' locks); versions of different
 * writers are not comparable, so only a row of the same source is gated on its version.
 */
const TRACKED_NEWER = `(NOT (${W_SOURCE} <=> VALUES(${W_SOURCE})) OR ${NEWER})`;

/** readStored's own result columns (odd names, so they never collide with target columns). */
const STORED_IDX_NAME = '__syncline_idx';
const STORED_CLOCK_NAME = '__syncline_clock';
const STORED_IDX = q(STORED_IDX_NAME);
const STORED_CLOCK = q(STORED_CLOCK_NAME);
/** Conflict entries per INSERT (each holds both versions as JSON). */
const CONFLICTS_PER_STATEMENT = 200;

/** Statements stay well under max_allowed_packet (16 MiB by default) and the parser's comfort. */
const MAX_ROWS_PER_STATEMENT = 500;
const MAX_BYTES_PER_STATEMENT = 4 << 20;

/**
 * MySQL / MariaDB target. Each batch is one InnoDB transaction (see SqlSink): version-gated
 * upserts per table (INSERT ... SELECT ... ON DUPLICATE KEY UPDATE), deletes with tombstones
 * (soft deletes: see `softDelete`), truncations as watermarks, keyless tables as multisets
 * (a row to remove is matched by `rowMatch`), and the consumer positions.
 *
 * The version gate, in one statement per group of rows:
 *
 *   INSERT INTO t (cols..., _syncline_lsn, _syncline_seq)
 *   SELECT ... FROM (<the rows>) i
 *    WHERE NOT EXISTS (newer tombstone of the key) AND NOT EXISTS (newer truncation of the table)
 *   ON DUPLICATE KEY UPDATE
 *     col           = IF(G, VALUES(col), col), ...        -- every data column, then
 *     _syncline_seq = IF(G, VALUES(_syncline_seq), _syncline_seq),
 *     _syncline_lsn = GREATEST(COALESCE(_syncline_lsn, 0), VALUES(_syncline_lsn))
 *   with G = (COALESCE(_syncline_lsn, 0), COALESCE(_syncline_seq, 0)) < (VALUES(_syncline_lsn), VALUES(_syncline_seq))
 *
 * MySQL evaluates ODKU assignments left to right and each sees the columns already assigned,
 * so G must only ever read the *old* version: the data columns come first, then
 * `_syncline_seq` (G still reads the old seq and lsn), and `_syncline_lsn` last with an
 * expression that does not depend on seq at all: if G holds, the new lsn is >= the old one,
 * and if G fails, the new lsn is <= the old one, so GREATEST picks exactly what G would. The
 * same statement is also correct under MariaDB's SIMULTANEOUS_ASSIGNMENT sql_mode, where all
 * assignments read the old row. A stale row is "updated" to its own values, which MySQL
 * reports as not changed; that is how applied and stale are counted (see `appliedRows`).
 *
 * Conflict tracking (`conflicts`, fan-in): rows also record their writer (`_syncline_source`)
 * and its commit time (`_syncline_ts`); SqlSink decides writes to rows of other writers (read
 * by `readStored`), and G becomes "another source, or an older version of the same one"
 * (TRACKED_NEWER; the assignment order for it is in `upsertUpdates`). Rows syncline never
 * wrote are the target's own; MySQL has no xmin, so a target-side change of a row syncline
 * wrote is not seen (README "Many writers", limits).
 */
export class MysqlSink extends SqlSink<PoolConnection, MysqlTable> {
  constructor(options: MysqlSinkOptions) {
    super(new MysqlDialect(options), options.conflicts, options.evolution);
  }
}

class MysqlDialect implements SqlDialect<PoolConnection, MysqlTable> {
  readonly name = 'the MySQL sink';
  private readonly pool: Pool;
  private readonly state: BookkeepingTables;
  private readonly sessionReady = new WeakSet<object>();

  constructor(private readonly options: MysqlSinkOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new PrerequisiteError('sink.url is not a URL', 'set sink.url to mysql://user:password@host:3306/database');
    }
    if (url.pathname.replace(/^\//, '') === '') {
      throw new PrerequisiteError(`sink.url ${url.protocol}//${url.host} names no database`, 'add the target database to sink.url: mysql://user:password@host:3306/database');
    }
    this.pool = mysql.createPool({
      uri: options.url,
      connectionLimit: options.poolSize ?? 2,
      // Positions and versions are 64-bit: never round them through a JavaScript number.
      supportBigNumbers: true,
      bigNumberStrings: true,
      dateStrings: true,
      charset: 'utf8mb4',
      connectTimeout: 10_000,
      // Without FOUND_ROWS, an ON DUPLICATE KEY UPDATE that changes nothing (a stale row)
      // counts 0 affected rows, which `appliedRows` relies on.
      flags: ['-FOUND_ROWS'],
    });
    const s = options.stateSchema;
    this.state = bookkeepingTables((t) => q(`${s}_${t}`));
  }

  async withConnection<R>(what: string, fn: (c: PoolConnection) => Promise<R>): Promise<R> {
    let c: PoolConnection;
    try {
      c = await this.pool.getConnection();
      if (!this.sessionReady.has(c.connection)) {
        await this.initSession(c);
        this.sessionReady.add(c.connection);
      }
    } catch (err) {
      throw classifyMysqlError(err, `connecting to the MySQL sink (${what})`);
    }
    let broken = false;
    try {
      return await fn(c);
    } catch (err) {
      broken = isFatalMysqlError(err);
      throw classifyMysqlError(err, what);
    } finally {
      if (broken) c.destroy();
      else c.release();
    }
  }

  /**
   * Session settings syncline relies on: UTC for TIMESTAMP columns (values arrive converted
   * to UTC), strict mode (an over-long or invalid value is an error, never a silent
   * truncation, i.e. drift), and backslash escapes (mysql2 escapes parameters with them).
   */
  private async initSession(c: PoolConnection): Promise<void> {
    const [rows] = await c.query<(RowDataPacket & { mode: string })[]>('SELECT @@SESSION.sql_mode AS mode');
    const modes = new Set((rows[0]?.mode ?? '').split(',').filter((m) => m !== '' && m !== 'NO_BACKSLASH_ESCAPES'));
    modes.add('STRICT_ALL_TABLES');
    await c.query("SET SESSION time_zone = '+00:00', SESSION sql_mode = ?", [[...modes].join(',')]);
  }

  async createBookkeeping(c: PoolConnection): Promise<void> {
    // utf8mb4_bin: group ids and table names compare exactly, as in PostgreSQL.
    const opts = 'ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin';
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.positions} (
      group_id VARCHAR(255) NOT NULL, stream_partition INT NOT NULL, next_offset BIGINT NOT NULL,
      updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (group_id, stream_partition)) ${opts}`);
    // Keys are found by a SHA-256 of the key's JSON text: keys of any length fit the index.
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.tombstones} (
      table_name VARCHAR(255) NOT NULL, key_hash BINARY(32) NOT NULL, row_key LONGTEXT NOT NULL,
      lsn BIGINT UNSIGNED NOT NULL, seq INT NOT NULL, deleted_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
      PRIMARY KEY (table_name, key_hash)) ${opts}`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.truncations} (
      table_name VARCHAR(255) NOT NULL PRIMARY KEY, lsn BIGINT UNSIGNED NOT NULL, seq INT NOT NULL) ${opts}`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.multisetVersions} (
      table_name VARCHAR(255) NOT NULL PRIMARY KEY, lsn BIGINT UNSIGNED NOT NULL, seq INT NOT NULL,
      reset TINYINT(1) NOT NULL DEFAULT 0) ${opts}`);
    if (this.tracked) await this.createConflictTables(c, opts);
  }

  private get tracked(): boolean {
    return this.options.conflicts !== undefined;
  }

  /**
   * Conflict tracking: tombstones per source (`<stateSchema>_source_tombstones`: one
   * source's delete never replaces another's; each gates its own source's replays, another
   * source's write is decided against it, see readDeletions), with the delete's commit time;
   * `<stateSchema>_conflicts` records each decided conflict. Row keys are found by a SHA-256
   * (`key_hash`): a key of any length fits the unique index (under InnoDB's 3072-byte limit).
   */
  private async createConflictTables(c: PoolConnection, opts: string): Promise<void> {
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.sourceTombstones} (
      table_name VARCHAR(255) NOT NULL, key_hash BINARY(32) NOT NULL, source VARCHAR(255) NOT NULL, row_key LONGTEXT NOT NULL,
      lsn BIGINT UNSIGNED NOT NULL, seq INT NOT NULL, clock DATETIME(6) NULL, deleted_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
      PRIMARY KEY (table_name, key_hash, source)) ${opts}`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.conflicts} (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, detected_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
      table_name VARCHAR(255) NOT NULL, key_hash BINARY(32) NOT NULL, row_key LONGTEXT NOT NULL, strategy VARCHAR(64) NOT NULL, winner VARCHAR(16) NOT NULL,
      incoming_source VARCHAR(255) NOT NULL, stored_source VARCHAR(255) NOT NULL,
      incoming_lsn BIGINT UNSIGNED NOT NULL, incoming_seq INT NOT NULL, incoming_commit_ts DATETIME(6) NULL,
      incoming_clock TEXT NULL, stored_clock TEXT NULL, incoming_version LONGTEXT NULL, stored_version LONGTEXT NULL, written LONGTEXT NULL,
      stored_lsn BIGINT UNSIGNED NULL, stored_seq INT NULL,
      UNIQUE KEY conflicts_change (table_name, key_hash, incoming_source, incoming_lsn, incoming_seq),
      KEY conflicts_replaced (table_name, key_hash, stored_source)) ${opts}`);
    // Watermarks per source: LSNs of different sources do not compare (see truncateTracked).
    // `clock`: the commit time of the source's own newest truncation (readTruncations); NULL
    // while the row only holds what other sources' truncations removed of it.
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.sourceTruncations} (
      table_name VARCHAR(255) NOT NULL, source VARCHAR(255) NOT NULL, lsn BIGINT UNSIGNED NOT NULL, seq INT NOT NULL, clock DATETIME(6) NULL,
      PRIMARY KEY (table_name, source)) ${opts}`);
    try {
      await c.query(`ALTER TABLE ${this.state.sourceTruncations} ADD COLUMN clock DATETIME(6) NULL`);
    } catch (err) {
      // 1060 duplicate column: there already (MySQL 8 has no ADD COLUMN IF NOT EXISTS).
      if ((err as { errno?: unknown }).errno !== 1060) throw err;
    }
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.sourceMultisetVersions} (
      table_name VARCHAR(255) NOT NULL, source VARCHAR(255) NOT NULL, lsn BIGINT UNSIGNED NOT NULL, seq INT NOT NULL,
      reset TINYINT(1) NOT NULL DEFAULT 0, PRIMARY KEY (table_name, source)) ${opts}`);
  }

  async readPositions(c: PoolConnection, group: string): Promise<Map<number, bigint>> {
    const [rows] = await c.query<(RowDataPacket & { p: number; o: string })[]>(`SELECT stream_partition AS p, CAST(next_offset AS CHAR) AS o FROM ${this.state.positions} WHERE group_id = ?`, [group]);
    return new Map(rows.map((r) => [Number(r.p), BigInt(r.o)]));
  }

  async writePositions(c: PoolConnection, group: string, positions: ReadonlyMap<number, bigint>): Promise<void> {
    const values = [...positions].map(() => '(?, ?, ?)').join(', ');
    const params = [...positions].flatMap(([p, o]) => [group, p, o.toString()]);
    await c.query(
      `INSERT INTO ${this.state.positions} (group_id, stream_partition, next_offset) VALUES ${values}
       ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), updated_at = CURRENT_TIMESTAMP(6)`,
      params,
    );
  }

  loadTable(c: PoolConnection, schema: string, table: string): Promise<MysqlTable> {
    return loadMysqlTable(c, schema, table, this.soft, this.tracked);
  }

  async begin(c: PoolConnection): Promise<void> {
    await c.query('START TRANSACTION');
  }

  async commit(c: PoolConnection): Promise<void> {
    await c.query('COMMIT');
  }

  async rollback(c: PoolConnection): Promise<void> {
    await c.query('ROLLBACK');
  }

  private get soft(): boolean {
    return this.options.deleteMode === 'soft';
  }

  async truncate(c: PoolConnection, target: MysqlTable, change: ChangeEvent): Promise<boolean> {
    if (this.tracked) return this.truncateTracked(c, target, change);
    const lsn = parseLsn(change.commit_lsn).toString();
    const seq = change.seq | 0;
    const res = await exec(
      c,
      `INSERT INTO ${this.state.truncations} (table_name, lsn, seq) VALUES (?, ${lsn}, ${seq})
       ON DUPLICATE KEY UPDATE seq = IF((lsn, seq) < (VALUES(lsn), VALUES(seq)), VALUES(seq), seq), lsn = GREATEST(lsn, VALUES(lsn))`,
      [target.label],
    );
    if (res.affectedRows === 0) return false;
    // Rows older than the truncation go; newer ones (applied from other partitions) stay.
    await exec(c, `DELETE FROM ${target.qualified} WHERE ${ROW_VERSION} < (${lsn}, ${seq})`, []);
    return true;
  }

  /**
   * Conflict tracking: the watermark is the source's own and gates that source's older
   * changes only; the table is emptied as at the source, except the rows written after the
   * truncation: the source's own newer versions, other writers' rows with a later commit time
   * (a row syncline never wrote has none: it goes). As the postgres sink's truncateTracked.
   */
  private async truncateTracked(c: PoolConnection, target: MysqlTable, change: ChangeEvent): Promise<boolean> {
    const lsn = parseLsn(change.commit_lsn).toString();
    const seq = change.seq | 0;
    const res = await exec(
      c,
      `INSERT INTO ${this.state.sourceTruncations} (table_name, source, lsn, seq, clock) VALUES (?, ?, ${lsn}, ${seq}, ?)
       ON DUPLICATE KEY UPDATE clock = IF((lsn, seq) < (VALUES(lsn), VALUES(seq)), VALUES(clock), clock),
                               seq = IF((lsn, seq) < (VALUES(lsn), VALUES(seq)), VALUES(seq), seq), lsn = GREATEST(lsn, VALUES(lsn))`,
      [target.label, change.source, commitTimeUtc(change)],
    );
    if (res.affectedRows === 0) return false;
    const removes = `IF(${W_SOURCE} <=> ?, ${ROW_VERSION} < (${lsn}, ${seq}), COALESCE(${W_CLOCK} <= ?, TRUE))`;
    const removeParams = [change.source, commitTimeUtc(change)];
    // The versions of other sources it removes become their watermarks too: republished, those
    // changes must not bring the rows back (their later changes have later versions). Read
    // first: MySQL's DELETE returns no rows.
    const [newest] = await c.query<(RowDataPacket & { source: string; lsn: string; seq: number })[]>(
      `SELECT source, CAST(lsn AS CHAR) AS lsn, seq FROM (
         SELECT ${W_SOURCE} AS source, ${V_LSN} AS lsn, ${V_SEQ} AS seq,
                ROW_NUMBER() OVER (PARTITION BY ${W_SOURCE} ORDER BY ${V_LSN} DESC, ${V_SEQ} DESC) AS n
           FROM ${target.qualified}
          WHERE ${removes} AND ${W_SOURCE} IS NOT NULL AND ${W_SOURCE} <> ? AND ${V_LSN} IS NOT NULL) newest
        WHERE n = 1`,
      [...removeParams, change.source],
    );
    for (const n of newest) {
      await exec(
        c,
        `INSERT INTO ${this.state.sourceTruncations} (table_name, source, lsn, seq) VALUES (?, ?, ${BigInt(n.lsn).toString()}, ${Number(n.seq) | 0})
         ON DUPLICATE KEY UPDATE seq = IF((lsn, seq) < (VALUES(lsn), VALUES(seq)), VALUES(seq), seq), lsn = GREATEST(lsn, VALUES(lsn))`,
        [target.label, n.source],
      );
    }
    await exec(c, `DELETE FROM ${target.qualified} WHERE ${removes}`, removeParams);
    return true;
  }

  /** The tombstone gate of one change (`keyHash`, `version`: its key hash's and (lsn, seq)'s SQL; `source`: its source's, used when tracking). */
  private tombstoneGate(label: string, keyHash: string, version: string, source: string): string {
    if (this.tracked) return `NOT EXISTS (SELECT 1 FROM ${this.state.sourceTombstones} tb WHERE tb.table_name = ${label} AND tb.key_hash = ${keyHash} AND tb.source = ${source} AND (tb.lsn, tb.seq) >= ${version})`;
    return `NOT EXISTS (SELECT 1 FROM ${this.state.tombstones} tb WHERE tb.table_name = ${label} AND tb.key_hash = ${keyHash} AND (tb.lsn, tb.seq) >= ${version})`;
  }

  /** The truncation gate of one change (`version`: its (lsn, seq) SQL; `source`: its source's SQL, used when tracking). */
  private truncationGate(label: string, version: string, source: string): string {
    if (this.tracked) return `NOT EXISTS (SELECT 1 FROM ${this.state.sourceTruncations} tr WHERE tr.table_name = ${label} AND tr.source = ${source} AND (tr.lsn, tr.seq) >= ${version})`;
    return `NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr WHERE tr.table_name = ${label} AND (tr.lsn, tr.seq) >= ${version})`;
  }

  /** One statement per chunk: a SELECT per row, UNION ALL. */
  async absentRows(c: PoolConnection, target: MysqlTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const out: ChangeEvent[] = [];
    for (const chunk of chunks(rows)) {
      const params: unknown[] = [];
      const selects = chunk.map((r, j) => {
        const version = `(${parseLsn(r.commit_lsn).toString()}, ${r.seq | 0})`;
        const match = keyMatch(target, keyColumns, r, params);
        params.push(keyHash(r));
        const source = mysql.escape(r.source);
        const label = mysql.escape(target.label);
        return `SELECT ${j} AS idx FROM DUAL
          WHERE NOT EXISTS (SELECT 1 FROM ${target.qualified} WHERE ${match})
            AND ${this.tombstoneGate(label, '?', version, source)}
            AND ${this.truncationGate(label, version, source)}`;
      });
      const [absent] = await c.query<(RowDataPacket & { idx: number })[]>(selects.join('\n UNION ALL '), params);
      for (const a of absent) out.push(chunk[Number(a.idx)] as ChangeEvent);
    }
    return out;
  }

  async upsert(c: PoolConnection, target: MysqlTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    let written = 0;
    for (const chunk of chunks(rows)) {
      const params: unknown[] = [];
      const input = this.inputRows(target, columns, chunk, params);
      const res = await exec(c, `${this.insertSql(target, columns, input)}\n      ON DUPLICATE KEY UPDATE ${this.upsertUpdates(columns).join(', ')}`, params);
      written += appliedRows(res, chunk.length);
    }
    return written;
  }

  /**
   * The input rows of `chunk` (parameters appended to `params`): the sent `columns`, the
   * key's hash, the version and (tracking conflicts) the writer and its commit time. A
   * derived table of one SELECT per row, UNION ALL; a chunk of one row with a long value
   * (see LONGEST_DERIVED_VALUE) as the SELECT's own values FROM DUAL, its key hash, writer
   * and time as escaped literals, so that the values are the only parameters.
   */
  private inputRows(target: MysqlTable, columns: string[], chunk: ChangeEvent[], params: unknown[]): InputRows {
    const metas = columns.map((col) => target.columns.get(col) as MysqlColumn);
    const tracked = this.tracked;
    const only = chunk[0];
    if (chunk.length === 1 && only && hasLongValue(only)) {
      const payload = only.payload as Row;
      for (let i = 0; i < columns.length; i++) params.push(toMysqlParam(metas[i] as MysqlColumn, payload[columns[i] as string] ?? null));
      return {
        from: 'DUAL',
        column: () => '?',
        key: mysql.escape(keyHash(only)),
        lsn: parseLsn(only.commit_lsn).toString(),
        seq: String(only.seq | 0),
        source: mysql.escape(only.source),
        clock: mysql.escape(commitTimeUtc(only)),
      };
    }
    const selects = chunk.map((r, j) => {
      const payload = r.payload as Row;
      for (let i = 0; i < columns.length; i++) params.push(toMysqlParam(metas[i] as MysqlColumn, payload[columns[i] as string] ?? null));
      params.push(keyHash(r));
      if (tracked) params.push(r.source, commitTimeUtc(r));
      // Versions are computed integers, written as literals so they compare exactly (no string → double).
      const lsn = parseLsn(r.commit_lsn).toString();
      const seq = String(r.seq | 0);
      // The first SELECT of the UNION names the derived table's columns.
      const values = j === 0
        ? [...columns.map((_, i) => `? AS ${IN(i)}`), `? AS ${IN_KEY}`, `${lsn} AS ${IN_LSN}`, `${seq} AS ${IN_SEQ}`, ...(tracked ? [`? AS ${IN_SOURCE}`, `? AS ${IN_CLOCK}`] : [])]
        : [...columns.map(() => '?'), '?', lsn, seq, ...(tracked ? ['?', '?'] : [])];
      return `SELECT ${values.join(', ')}`;
    });
    return {
      from: `(${selects.join('\n UNION ALL ')}) AS i`,
      column: (i) => `i.${IN(i)}`,
      key: `i.${IN_KEY}`,
      lsn: `i.${IN_LSN}`,
      seq: `i.${IN_SEQ}`,
      source: `i.${IN_SOURCE}`,
      clock: `i.${IN_CLOCK}`,
    };
  }

  async olderStored(c: PoolConnection, target: MysqlTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const out: ChangeEvent[] = [];
    for (const chunk of chunks(rows)) {
      const params: unknown[] = [];
      const cases = chunk.map((r, j) => `WHEN ${keyMatch(target, keyColumns, r, params)} THEN ${j}`);
      // Versions are computed integers, written as literals so they compare exactly (no string → double).
      // A soft-deleted row is deleted: the upsert revives it.
      const soft = this.soft ? ` AND ${DELETED_AT} IS NULL` : '';
      const conds = chunk.map((r) => `(${keyMatch(target, keyColumns, r, params)} AND ${ROW_VERSION} < (${parseLsn(r.commit_lsn).toString()}, ${r.seq | 0})${soft})`);
      const [found] = await c.query<(RowDataPacket & { idx: string | number })[]>(`SELECT CASE ${cases.join(' ')} END AS idx FROM ${target.qualified} WHERE ${conds.join(' OR ')}`, params);
      for (const f of found) out.push(chunk[Number(f.idx)] as ChangeEvent);
    }
    return out;
  }

  /**
   * `INSERT INTO t (...) SELECT ... FROM <input rows> WHERE <gate>`, what the upsert and the
   * insert of absent keys share: with the version gate, no newer tombstone of the key (of the
   * same source, tracking conflicts) nor newer truncation of the table; tracking conflicts,
   * also no recorded conflict in which another writer's winning write replaced this version
   * or a newer one of the same source: its change, republished after a capture restart, must
   * not bring the row back.
   */
  private insertSql(target: MysqlTable, columns: string[], input: InputRows): string {
    const tracked = this.tracked;
    const label = mysql.escape(target.label);
    const version = `(${input.lsn}, ${input.seq})`;
    // Input strings carry the connection's collation: compared in the bookkeeping tables' (utf8mb4_bin).
    const source = `${input.source} COLLATE utf8mb4_bin`;
    const where = this.options.versionGate
      ? `WHERE ${this.tombstoneGate(label, input.key, version, source)}
           AND ${this.truncationGate(label, version, source)}` +
        (tracked
          ? `
           AND NOT EXISTS (SELECT 1 FROM ${this.state.conflicts} cf
                            WHERE cf.table_name = ${label} AND cf.key_hash = ${input.key} AND cf.stored_source = ${source} AND cf.winner = 'incoming'
                              AND cf.stored_lsn IS NOT NULL AND (cf.stored_lsn, cf.stored_seq) >= ${version})`
          : '')
      : '';
    const soft = this.soft ? [DELETED_AT] : [];
    const writer = tracked ? [W_SOURCE, W_CLOCK] : [];
    return `INSERT INTO ${target.qualified} (${[...columns.map(q), V_LSN, V_SEQ, ...soft, ...writer].join(', ')})
      SELECT ${[...columns.map((_, i) => input.column(i)), input.lsn, input.seq, ...soft.map(() => 'NULL'), ...(tracked ? [input.source, input.clock] : [])].join(', ')}
        FROM ${input.from}
      ${where}`;
  }

  /**
   * The ON DUPLICATE KEY UPDATE assignments of the upsert. Order matters, see the class
   * comment: the gate must read the old row's version (and, tracking conflicts, its source),
   * so data columns (and `_deleted_at`, `_syncline_ts`) come first, then seq, then lsn, and
   * the source last.
   *
   * Untracked, lsn is `GREATEST(old, new)` (see the class comment). Tracked, a winning write
   * of another source may carry a smaller LSN, so lsn is `IF(G, new, old)` too, which still
   * decides as G did: a different source still differs after seq was assigned; the same
   * source with G true had old lsn < new lsn (G still true) or old lsn = new lsn (nothing to
   * change). The source is assigned unconditionally: G false means the same source (another
   * source always passes G), so the assignment changes nothing then. MySQL 8 evaluates the
   * assignments left to right as MariaDB does by default (checked on MariaDB 10.11), and the
   * statement is just as correct under MariaDB's SIMULTANEOUS_ASSIGNMENT, where every
   * assignment reads the old row.
   */
  private upsertUpdates(columns: string[]): string[] {
    const gate = this.options.versionGate;
    const g = this.tracked ? TRACKED_NEWER : NEWER;
    const gated = (col: string): string => (gate ? `${col} = IF(${g}, VALUES(${col}), ${col})` : `${col} = VALUES(${col})`);
    // Key columns too, gated like data: under a case-insensitive collation (the default) a
    // key respelled at the source ('KEY1' -> 'key1': a DELETE of the old spelling and an INSERT
    // of the new one, in different stream partitions) may meet the old row first, which then
    // kept the old spelling for good (the DELETE is stale by then).
    const updates = columns.map((col) => gated(q(col)));
    // A newer insert or update revives a soft-deleted row; like a data column, before the versions.
    if (this.soft) updates.push(gate ? `${DELETED_AT} = IF(${g}, NULL, ${DELETED_AT})` : `${DELETED_AT} = NULL`);
    if (this.tracked) updates.push(gated(W_CLOCK));
    updates.push(gated(V_SEQ));
    updates.push(gate && !this.tracked ? `${V_LSN} = GREATEST(COALESCE(${V_LSN}, 0), VALUES(${V_LSN}))` : gated(V_LSN));
    if (this.tracked) updates.push(`${W_SOURCE} = VALUES(${W_SOURCE})`);
    return updates;
  }

  /**
   * Conflict tracking: inserts `rows` whose keys readStored found absent, never over a row.
   * `ON DUPLICATE KEY UPDATE <key> = <key>` changes nothing on a duplicate key (and waits for
   * a writer that holds the key uncommitted, then sees its row); INSERT IGNORE would also
   * swallow every other error as a warning. (A WHERE NOT EXISTS on the target would add
   * nothing: the duplicate key is what decides, and a consistent read could miss a row the
   * ODKU then meets anyway.) Without CLIENT_FOUND_ROWS a no-op duplicate counts 0 affected
   * rows, so affected = inserted; when some were not, the inserted ones are those whose row
   * now holds their version. Returns the others.
   */
  async insertAbsent(c: PoolConnection, target: MysqlTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const refused: ChangeEvent[] = [];
    const key = q(keyColumns[0] as string);
    for (const chunk of chunks(rows)) {
      const params: unknown[] = [];
      const res = await exec(c, `${this.insertSql(target, columns, this.inputRows(target, columns, chunk, params))}\n      ON DUPLICATE KEY UPDATE ${key} = ${key}`, params);
      if (res.affectedRows === chunk.length) continue;
      const held = await this.matching(c, target, keyColumns, chunk, true);
      let notInserted = chunk.filter((_, j) => !held.has(j));
      // The ODKU also meets a duplicate of a unique key other than the primary key, and would
      // leave such a row out silently (drift). A refused row whose key is still absent was
      // refused by the gate, or by such a key: insert those again without ODKU, so the gate
      // refuses them again or the collision fails as the error it is.
      const present = await this.matching(c, target, keyColumns, notInserted, false);
      const missing = notInserted.filter((_, j) => !present.has(j));
      if (missing.length > 0) {
        const again: unknown[] = [];
        const retried = await exec(c, this.insertSql(target, columns, this.inputRows(target, columns, missing, again)), again);
        if (retried.affectedRows > 0) {
          const now = await this.matching(c, target, keyColumns, missing, true);
          const inserted = new Set(missing.filter((_, j) => now.has(j)));
          notInserted = notInserted.filter((r) => !inserted.has(r));
        }
      }
      refused.push(...notInserted);
    }
    return refused;
  }

  /**
   * Indexes (in `rows`) of the rows whose key the target holds; `ownVersion`: only where the
   * row holds that change's version (its source, lsn and seq), i.e. the change wrote it.
   */
  private async matching(c: PoolConnection, target: MysqlTable, keyColumns: string[], rows: ChangeEvent[], ownVersion: boolean): Promise<Set<number>> {
    if (rows.length === 0) return new Set();
    const params: unknown[] = [];
    const cases = rows.map((r, j) => `WHEN ${keyMatch(target, keyColumns, r, params)} THEN ${j}`);
    const conds = rows.map((r) => {
      const match = keyMatch(target, keyColumns, r, params);
      if (!ownVersion) return `(${match})`;
      params.push(r.source);
      return `(${match} AND ${W_SOURCE} = ? AND ${V_LSN} = ${parseLsn(r.commit_lsn).toString()} AND ${V_SEQ} = ${r.seq | 0})`;
    });
    const [found] = await c.query<(RowDataPacket & { idx: string | number })[]>(`SELECT CASE ${cases.join(' ')} END AS idx FROM ${target.qualified} WHERE ${conds.join(' OR ')}`, params);
    return new Set(found.map((f) => Number(f.idx)));
  }

  /**
   * Applied: the deletes that removed (or marked) their row, plus those of keys with no row at
   * the target whose tombstone they advance, newer than the table's truncation: read before
   * the tombstones are written (absentRows: no row, no tombstone at or past it, no truncation
   * at or past it). The two sets are disjoint; the rest the gate refused (stale).
   */
  async delete(c: PoolConnection, target: MysqlTable, keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    let removed = 0;
    const tracked = this.tracked;
    for (const chunk of chunks(rows)) {
      removed += (await this.absentRows(c, target, keyColumns, chunk)).length;
      // 1. Tombstones, advanced only by a newer delete (same ordering rule as the upsert);
      //    tracking conflicts, each source's own (with the delete's commit time).
      const tombParams: unknown[] = [];
      const tombValues = chunk.map((r) => {
        tombParams.push(target.label, keyHash(r), rowKeyOf(r));
        if (tracked) tombParams.push(r.source, commitTimeUtc(r));
        return `(?, ?, ?, ${parseLsn(r.commit_lsn).toString()}, ${r.seq | 0}${tracked ? ', ?, ?' : ''})`;
      });
      const newer = '(lsn, seq) < (VALUES(lsn), VALUES(seq))';
      await exec(
        c,
        `INSERT INTO ${tracked ? this.state.sourceTombstones : this.state.tombstones} (table_name, key_hash, row_key, lsn, seq${tracked ? ', source, clock' : ''}) VALUES ${tombValues.join(', ')}
         ON DUPLICATE KEY UPDATE deleted_at = IF(${newer}, CURRENT_TIMESTAMP(6), deleted_at),
                                 ${tracked ? `clock = IF(${newer}, VALUES(clock), clock), ` : ''}seq = IF(${newer}, VALUES(seq), seq),
                                 lsn = GREATEST(lsn, VALUES(lsn))`,
        tombParams,
      );
      if (this.soft) {
        removed += await this.softDelete(c, target, keyColumns, chunk);
        continue;
      }
      // 2. The rows, where older than the delete. Key values are compared as constants
      //    (numbers as literals), so MySQL compares them in the column's type.
      const params: unknown[] = [];
      const conds = chunk.map((r) => {
        const match = keyMatch(target, keyColumns, r, params);
        return `(${match}${this.rowGate(r, params)})`;
      });
      const res = await exec(c, `DELETE FROM ${target.qualified} WHERE ${conds.join(' OR ')}`, params);
      removed += res.affectedRows;
    }
    return removed;
  }

  /**
   * ` AND <the stored row is older than r>` for a delete's WHERE (empty without the version
   * gate). Tracking conflicts, a row of another writer reaches the delete only when the
   * resolver let the delete win (see TRACKED_NEWER): only a row of r's source is gated.
   */
  private rowGate(r: ChangeEvent, params: unknown[]): string {
    if (!this.options.versionGate) return '';
    const older = `${ROW_VERSION} < (${parseLsn(r.commit_lsn).toString()}, ${r.seq | 0})`;
    if (!this.tracked) return ` AND ${older}`;
    params.push(r.source);
    return ` AND (NOT (${W_SOURCE} <=> ?) OR ${older})`;
  }

  /**
   * `delete_mode: soft`: the rows older than their delete keep their data and take the
   * delete's version and `_deleted_at` (its commit time), in one statement per chunk:
   *
   *   UPDATE t SET _deleted_at   = CASE WHEN <key 1> THEN ts1 ... END,
   *                _syncline_seq = CASE WHEN <key 1> THEN seq1 ... END,
   *                _syncline_lsn = CASE WHEN <key 1> THEN lsn1 ... END
   *    WHERE (<key 1> AND version < v1) OR ...
   *
   * The gate is in the WHERE, which MySQL evaluates before any assignment, so the order of
   * the assignments does not matter here (unlike ON DUPLICATE KEY UPDATE). A row already
   * deleted by this change (a replay) has the same version and is left alone: stale.
   * Tracking conflicts, the row also takes the delete's source and commit time: it stays
   * syncline's, written by that source. Returns how many rows were marked.
   */
  private async softDelete(c: PoolConnection, target: MysqlTable, keyColumns: string[], chunk: ChangeEvent[]): Promise<number> {
    const params: unknown[] = [];
    // Each appearance of a key condition binds its own parameters, so build them in text order.
    const match = (r: ChangeEvent): string => keyMatch(target, keyColumns, r, params);
    const cases = (value: (r: ChangeEvent) => string): string => `CASE ${chunk.map((r) => `WHEN ${match(r)} THEN ${value(r)}`).join(' ')} END`;
    const sets = [
      `${DELETED_AT} = ${cases((r) => mysql.escape(commitTimeUtc(r)))}`,
      `${V_SEQ} = ${cases((r) => String(r.seq | 0))}`,
      `${V_LSN} = ${cases((r) => parseLsn(r.commit_lsn).toString())}`,
    ];
    if (this.tracked) sets.push(`${W_SOURCE} = ${cases((r) => mysql.escape(r.source))}`, `${W_CLOCK} = ${cases((r) => mysql.escape(commitTimeUtc(r)))}`);
    const where = chunk.map((r) => `(${match(r)}${this.rowGate(r, params)})`);
    const res = await exec(c, `UPDATE ${target.qualified} SET ${sets.join(', ')} WHERE ${where.join(' OR ')}`, params);
    return res.affectedRows;
  }

  /** The keyless table's version rows: per table, or (tracking conflicts) per table and source. */
  private multisetScope(label: string, source: string): { versions: string; truncations: string; where: string; params: string[] } {
    if (this.tracked) return { versions: this.state.sourceMultisetVersions, truncations: this.state.sourceTruncations, where: 'table_name = ? AND source = ?', params: [label, source] };
    return { versions: this.state.multisetVersions, truncations: this.state.truncations, where: 'table_name = ?', params: [label] };
  }

  async readMultisetVersions(c: PoolConnection, label: string, source: string): Promise<MultisetVersions> {
    const scope = this.multisetScope(label, source);
    // Creating the row first locks it (a missing row's FOR UPDATE would take a gap lock, which
    // two apply processes can deadlock on); lsn 0 sorts before every real version.
    await c.query(`INSERT INTO ${scope.versions} (${this.tracked ? 'table_name, source' : 'table_name'}, lsn, seq, reset) VALUES (${scope.params.map(() => '?').join(', ')}, 0, 0, 0) ON DUPLICATE KEY UPDATE table_name = table_name`, scope.params);
    const [seen] = await c.query<(RowDataPacket & { lsn: string; seq: number; reset: number })[]>(
      `SELECT CAST(lsn AS CHAR) AS lsn, seq, reset FROM ${scope.versions} WHERE ${scope.where} FOR UPDATE`,
      scope.params,
    );
    const [trunc] = await c.query<(RowDataPacket & { lsn: string; seq: number })[]>(`SELECT CAST(lsn AS CHAR) AS lsn, seq FROM ${scope.truncations} WHERE ${scope.where}`, scope.params);
    const high = seen[0];
    const truncated = trunc[0];
    return {
      high: high && { version: versionOf(BigInt(high.lsn), Number(high.seq)), reset: Number(high.reset) === 1 },
      truncation: truncated && versionOf(BigInt(truncated.lsn), Number(truncated.seq)),
    };
  }

  async insertRows(c: PoolConnection, target: MysqlTable, columns: string[], changes: ChangeEvent[]): Promise<number> {
    const metas = columns.map((col) => target.columns.get(col) as MysqlColumn);
    let applied = 0;
    for (const chunk of chunks(changes)) {
      const params: unknown[] = [];
      // Tracked: a keyless row names its writer and time too (a truncation of another source keeps it when newer).
      const tracked = this.tracked;
      const values = chunk.map((change) => {
        const payload = change.payload as Row;
        metas.forEach((m, i) => params.push(toMysqlParam(m, payload[columns[i] as string] ?? null)));
        if (tracked) params.push(change.source, commitTimeUtc(change));
        // Versions are computed integers, written as literals (exact, no string → double).
        return `(${[...columns.map(() => '?'), ...(tracked ? ['?', '?'] : []), parseLsn(change.commit_lsn).toString(), String(change.seq | 0)].join(', ')})`;
      });
      const res = await exec(c, `INSERT INTO ${target.qualified} (${[...columns.map(q), ...(tracked ? [W_SOURCE, W_CLOCK] : []), V_LSN, V_SEQ].join(', ')}) VALUES ${values.join(', ')}`, params);
      applied += res.affectedRows;
    }
    return applied;
  }

  /** `DELETE ... WHERE <every column matches> LIMIT 1`, see `rowMatch`. */
  async removeOne(c: PoolConnection, target: MysqlTable, before: Row): Promise<boolean> {
    const params: unknown[] = [];
    const match = Object.keys(before).map((col) => rowMatch(target.columns.get(col) as MysqlColumn, before[col] ?? null, params));
    const res = await exec(c, `DELETE FROM ${target.qualified} WHERE ${match.join(' AND ') || 'TRUE'} LIMIT 1`, params);
    return res.affectedRows > 0;
  }

  async writeMultisetVersion(c: PoolConnection, label: string, newest: ChangeEvent | undefined, reset: boolean, source: string): Promise<void> {
    const scope = this.multisetScope(label, source);
    // The row exists: readMultisetVersions created it.
    if (newest) {
      await c.query(`UPDATE ${scope.versions} SET lsn = ${parseLsn(newest.commit_lsn).toString()}, seq = ${newest.seq | 0}, reset = ${reset ? 1 : 0} WHERE ${scope.where}`, scope.params);
    } else if (reset) {
      await c.query(`UPDATE ${scope.versions} SET reset = 1 WHERE ${scope.where}`, scope.params);
    }
  }

  /**
   * Conflict tracking: the stored rows of `rows`' keys, locked (FOR UPDATE), every column as
   * text. Under REPEATABLE READ the locking read of an absent key also locks its gap, so
   * another writer cannot insert it before this transaction ends. MySQL rows have no xmin:
   * `local` is a row syncline never wrote (no source); a row syncline wrote and the target
   * changed since still counts as its source's (see README "Many writers", limits).
   */
  async readStored(c: PoolConnection, target: MysqlTable, keyColumns: string[], rows: ChangeEvent[]): Promise<Map<string, StoredRow>> {
    const out = new Map<string, StoredRow>();
    for (const chunk of chunks(rows)) {
      const params: unknown[] = [];
      const cases = chunk.map((r, j) => `WHEN ${keyMatch(target, keyColumns, r, params)} THEN ${j}`);
      const conds = chunk.map((r) => `(${keyMatch(target, keyColumns, r, params)})`);
      const [found] = await c.query<RowDataPacket[]>(
        {
          sql: `SELECT CASE ${cases.join(' ')} END AS ${STORED_IDX}, DATE_FORMAT(${W_CLOCK}, '%Y-%m-%dT%H:%i:%s.%fZ') AS ${STORED_CLOCK}, t.*
                  FROM ${target.qualified} t WHERE ${conds.join(' OR ')} FOR UPDATE`,
          typeCast: (field) => storedText(target, field),
        },
        params,
      );
      for (const f of found) {
        const row: Row = {};
        for (const [k, v] of Object.entries(f)) if (k !== STORED_IDX_NAME && k !== STORED_CLOCK_NAME) row[k] = v as string | null;
        const source = row[SOURCE_COLUMN] ?? null;
        const lsn = row[VERSION_LSN_COLUMN];
        const seq = row[VERSION_SEQ_COLUMN];
        out.set(rowKeyOf(chunk[Number(f[STORED_IDX_NAME])] as ChangeEvent), {
          row,
          source,
          local: source === null,
          // A local write's commit time is unknown (MySQL does not track it): null.
          clock: source === null ? null : ((f[STORED_CLOCK_NAME] as string | null) ?? null),
          lsn: lsn === null || lsn === undefined ? null : formatLsn(BigInt(lsn)),
          seq: seq === null || seq === undefined ? null : Number(seq),
        });
      }
    }
    return out;
  }

  async readDeletions(c: PoolConnection, target: MysqlTable, _keyColumns: string[], rows: ChangeEvent[]): Promise<Map<string, Deletion[]>> {
    const out = new Map<string, Deletion[]>();
    for (const chunk of chunks(rows)) {
      const params: unknown[] = [];
      const selects = chunk.map((r, j) => {
        params.push(j, keyHash(r));
        return j === 0 ? 'SELECT ? AS idx, ? AS kh' : 'SELECT ?, ?';
      });
      params.push(target.label);
      const [found] = await c.query<(RowDataPacket & { idx: number | string; source: string; lsn: string; seq: number; clock: string | null })[]>(
        `SELECT i.idx, tb.source, CAST(tb.lsn AS CHAR) AS lsn, tb.seq, DATE_FORMAT(tb.clock, '%Y-%m-%dT%H:%i:%s.%fZ') AS clock
           FROM (${selects.join(' UNION ALL ')}) i
           JOIN ${this.state.sourceTombstones} tb ON tb.table_name = ? AND tb.key_hash = i.kh
          ORDER BY i.idx, tb.clock IS NULL, tb.clock DESC, tb.source`,
        params,
      );
      for (const f of found) {
        const key = rowKeyOf(chunk[Number(f.idx)] as ChangeEvent);
        const list = out.get(key) ?? [];
        list.push({ source: f.source, lsn: formatLsn(BigInt(f.lsn)), seq: Number(f.seq), clock: f.clock ?? null });
        out.set(key, list);
      }
    }
    return out;
  }

  async readTruncations(c: PoolConnection, label: string): Promise<Deletion[]> {
    const [rows] = await c.query<(RowDataPacket & { source: string; lsn: string; seq: number; clock: string })[]>(
      `SELECT source, CAST(lsn AS CHAR) AS lsn, seq, DATE_FORMAT(clock, '%Y-%m-%dT%H:%i:%s.%fZ') AS clock FROM ${this.state.sourceTruncations} WHERE table_name = ? AND clock IS NOT NULL`,
      [label],
    );
    return rows.map((r) => ({ source: r.source, lsn: formatLsn(BigInt(r.lsn)), seq: Number(r.seq), clock: r.clock, truncation: true }));
  }

  async writeColumns(c: PoolConnection, target: MysqlTable, keyColumns: string[], change: ChangeEvent, values: Row): Promise<void> {
    const columns = Object.keys(values).filter((col) => !keyColumns.includes(col));
    if (columns.length === 0) return;
    const params: unknown[] = columns.map((col) => toMysqlParam(target.columns.get(col) as MysqlColumn, values[col] ?? null));
    const match = keyMatch(target, keyColumns, change, params);
    await exec(c, `UPDATE ${target.qualified} SET ${columns.map((col) => `${q(col)} = ?`).join(', ')} WHERE ${match}`, params);
  }

  /** One entry per change of each run; an entry recorded before (a replayed batch) stays as it was. */
  async recordConflicts(c: PoolConnection, conflicts: ConflictRecord[]): Promise<void> {
    const entries = conflicts.flatMap((r) => r.run.map((change) => ({ r, change })));
    for (let from = 0; from < entries.length; from += CONFLICTS_PER_STATEMENT) {
      const params: unknown[] = [];
      const values = entries.slice(from, from + CONFLICTS_PER_STATEMENT).map(({ r, change }) => {
        params.push(
          r.table, keyHash(change), rowKeyOf(change), r.strategy, r.winner, change.source, r.storedWriter, commitTimeUtc(change),
          change === r.incoming ? r.incomingClock : null, r.storedClock,
          JSON.stringify(change.payload), JSON.stringify(r.stored), r.written ? JSON.stringify(r.written) : null,
        );
        const storedLsn = r.storedLsn === null ? 'NULL' : parseLsn(r.storedLsn).toString();
        const storedSeq = r.storedSeq === null ? 'NULL' : String(r.storedSeq | 0);
        return `(?, ?, ?, ?, ?, ?, ?, ${parseLsn(change.commit_lsn).toString()}, ${change.seq | 0}, ?, ?, ?, ?, ?, ?, ${storedLsn}, ${storedSeq})`;
      });
      await exec(
        c,
        `INSERT INTO ${this.state.conflicts} (table_name, key_hash, row_key, strategy, winner, incoming_source, stored_source, incoming_lsn, incoming_seq,
                                              incoming_commit_ts, incoming_clock, stored_clock, incoming_version, stored_version, written, stored_lsn, stored_seq)
         VALUES ${values.join(', ')}
         ON DUPLICATE KEY UPDATE id = id`,
        params,
      );
    }
  }

  async decidedBefore(c: PoolConnection, label: string, changes: readonly ChangeEvent[]): Promise<Set<string>> {
    const out = new Set<string>();
    for (let from = 0; from < changes.length; from += CONFLICTS_PER_STATEMENT) {
      const chunk = changes.slice(from, from + CONFLICTS_PER_STATEMENT);
      const params: unknown[] = [];
      const selects = chunk.map((ch, j) => {
        params.push(j, keyHash(ch), ch.source, ch.op === 'DELETE' ? 1 : 0);
        const version = `${parseLsn(ch.commit_lsn).toString()}, ${ch.seq | 0}`;
        return j === 0 ? `SELECT ? AS idx, ? AS kh, ? AS src, ${version.replace(', ', ' AS lsn, ')} AS seq, ? AS del` : `SELECT ?, ?, ?, ${version}, ?`;
      });
      const l = mysql.escape(label);
      const src = 'i.src COLLATE utf8mb4_bin';
      // See the interface: decided, replaced, truncated, or (a delete) applied.
      const [rows] = await c.query<(RowDataPacket & { idx: number | string })[]>(
        `SELECT i.idx FROM (${selects.join(' UNION ALL ')}) i
          WHERE EXISTS (SELECT 1 FROM ${this.state.conflicts} cf WHERE cf.table_name = ${l} AND cf.key_hash = i.kh AND cf.incoming_source = ${src} AND cf.incoming_lsn = i.lsn AND cf.incoming_seq = i.seq)
             OR EXISTS (SELECT 1 FROM ${this.state.conflicts} cf WHERE cf.table_name = ${l} AND cf.key_hash = i.kh AND cf.stored_source = ${src} AND cf.winner = 'incoming'
                         AND cf.stored_lsn IS NOT NULL AND (cf.stored_lsn, cf.stored_seq) >= (i.lsn, i.seq))
             OR EXISTS (SELECT 1 FROM ${this.state.sourceTruncations} tr WHERE tr.table_name = ${l} AND tr.source = ${src} AND (tr.lsn, tr.seq) >= (i.lsn, i.seq))
             OR (i.del = 1 AND EXISTS (SELECT 1 FROM ${this.state.sourceTombstones} tb WHERE tb.table_name = ${l} AND tb.key_hash = i.kh AND tb.source = ${src} AND (tb.lsn, tb.seq) >= (i.lsn, i.seq)))`,
        params,
      );
      for (const r of rows) out.add(conflictIdOf(chunk[Number(r.idx)] as ChangeEvent));
    }
    return out;
  }

  isStructural(err: unknown): boolean {
    return isStructuralMysqlError(err);
  }

  invalidate(): void {
    // Statements are text, rebuilt from the re-read metadata: nothing else to forget.
  }

  /** ALTER TABLE commits implicitly: schema changes run just before the batch's transaction. */
  readonly transactionalDdl = false;

  async describeColumns(c: PoolConnection, target: MysqlTable): Promise<Map<string, TargetColumnShape>> {
    const rows = await mysqlColumnTypes(c, target);
    return new Map(rows.map((r) => [r.name, { type: normalizeMysqlType(r.column_type), notNull: r.is_nullable === 'NO' }]));
  }

  typeFor(column: RecordedColumn): string {
    return mysqlTypeFor(column.type);
  }

  async createTable(c: PoolConnection, schema: string, table: string, columns: readonly RecordedColumn[]): Promise<void> {
    const database = targetDatabase(schema);
    // Refused as loadTable refuses it (held, with the fix), not by MySQL's error 1300.
    assertMysqlTableName(tableLabelOf({ schema, table }), database, table);
    const qualified = database === undefined ? q(table) : `${q(database)}.${q(table)}`;
    // A key column needs a bounded type in MySQL: unbounded text keys become varchar(255).
    const defs = columns.map((col) => {
      const type = mysqlTypeFor(col.type);
      return `${q(col.name)} ${col.key && type === 'longtext' ? 'varchar(255)' : type}${col.not_null || col.key ? ' NOT NULL' : ' NULL'}`;
    });
    const key = columns.filter((col) => col.key).map((col) => q(col.name));
    if (key.length > 0) defs.push(`PRIMARY KEY (${key.join(', ')})`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${qualified} (${defs.join(', ')})`);
  }

  async evolve(c: PoolConnection, target: MysqlTable, steps: readonly SchemaStep[]): Promise<void> {
    const t = target.qualified;
    for (const step of steps) {
      switch (step.kind) {
        case 'add':
          await c.query(`ALTER TABLE ${t} ADD COLUMN ${q(step.column.name)} ${mysqlTypeFor(step.column.type)} NULL`);
          break;
        case 'rename':
          await c.query(`ALTER TABLE ${t} RENAME COLUMN ${q(step.from)} TO ${q(step.to)}`);
          break;
        case 'widen':
          await c.query(`ALTER TABLE ${t} MODIFY COLUMN ${q(step.column.name)} ${mysqlTypeFor(step.column.type)} ${step.notNull ? 'NOT NULL' : 'NULL'}`);
          break;
        case 'drop':
          await c.query(`ALTER TABLE ${t} DROP COLUMN ${q(step.name)}`);
          break;
        case 'nullable': {
          // MODIFY restates the whole column: its present type, now NULL.
          const type = (await mysqlColumnTypes(c, target)).find((r) => r.name === step.name)?.column_type;
          if (type) await c.query(`ALTER TABLE ${t} MODIFY COLUMN ${q(step.name)} ${type} NULL`);
          break;
        }
      }
    }
  }

  addColumnsFix(target: MysqlTable, missing: string[]): string {
    return `ALTER TABLE ${target.qualified} ${missing.map((m) => `ADD COLUMN ${q(m)} <type>`).join(', ')}`;
  }

  primaryKeyFix(target: MysqlTable, keyColumns: string[]): string {
    const drop = target.primaryKey.length > 0 ? 'DROP PRIMARY KEY, ' : '';
    return `give the target the same primary key: ALTER TABLE ${target.qualified} ${drop}ADD PRIMARY KEY (${keyColumns.map(q).join(', ')})`;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

async function exec(c: PoolConnection, sql: string, params: unknown[]): Promise<ResultSetHeader> {
  const [res] = await c.query<ResultSetHeader>(sql, params);
  return res;
}

/**
 * How many rows of an INSERT ... ON DUPLICATE KEY UPDATE were written (inserted, or updated
 * because the version gate let them through). Without CLIENT_FOUND_ROWS the server reports
 * affected = inserted + 2 × updated, where a duplicate "updated" to its own values (a stale
 * row) is not updated and counts 0; the info string `Records: R  Duplicates: D  Warnings: W`
 * has D = updated (changed duplicates only). So written = inserted + updated = affected − D.
 * (Checked against MariaDB 10.11; MySQL's sql_insert.cc computes both the same way.) A
 * single-row INSERT ... VALUES sends no info string; then affected > 0 means written.
 */
export function appliedRows(res: ResultSetHeader, rows: number): number {
  const m = /Records:\s*(\d+)\s+Duplicates:\s*(\d+)/i.exec(res.info ?? '');
  if (!m) {
    if (rows === 1) return res.affectedRows > 0 ? 1 : 0;
    throw new SynclineError('SINK_MYSQL_COUNT', `cannot count applied rows: server sent no Records/Duplicates info (${JSON.stringify(res.info)})`, { retriable: false });
  }
  return res.affectedRows - Number(m[2]);
}

/** A change's commit time as the session's UTC `DATETIME(6)` text (commit_ts is ISO-8601 UTC). */
/**
 * Longest value, in characters of its text, that a row may carry in a derived table (at most
 * 32 KiB in utf8mb4, half of that for bytea's hex). MariaDB 10.11 types a derived table's
 * columns from their literals, and one of 64 KiB or more was stored cut to its length modulo
 * 65,536 (TEXT, BLOB: 'a' × 70,000 kept as 4,464 characters, no error), or made the server
 * crash (a UNION of such rows); sent as `INSERT ... SELECT ?, ... FROM DUAL` it reaches the
 * column as from VALUES: stored whole, or refused with ER_DATA_TOO_LONG (dead-lettered).
 */
const LONGEST_DERIVED_VALUE = 8191;

function hasLongValue(change: ChangeEvent): boolean {
  for (const v of Object.values(change.payload ?? change.key)) if (v !== null && v.length > LONGEST_DERIVED_VALUE) return true;
  return false;
}

function commitTimeUtc(change: ChangeEvent): string {
  return pgTimestampToUtc(change.commit_ts.replace(/Z$/, '+00'));
}

function keyHash(change: ChangeEvent): Buffer {
  return createHash('sha256').update(rowKeyOf(change)).digest();
}

/**
 * `rows` in statements' worth; a row holding a long value (hasLongValue) in a chunk of its
 * own, which upsert and insertAbsent send without a derived table.
 */
function* chunks(rows: ChangeEvent[]): Generator<ChangeEvent[]> {
  let chunk: ChangeEvent[] = [];
  let bytes = 0;
  for (const r of rows) {
    // One pass over the values: the statement's size, and whether one is long (hasLongValue).
    let size = 64;
    let long = false;
    for (const v of Object.values(r.payload ?? r.key)) {
      if (v === null) size += 4;
      else {
        size += v.length + 8;
        if (v.length > LONGEST_DERIVED_VALUE) long = true;
      }
    }
    if (long) {
      if (chunk.length > 0) yield chunk;
      chunk = [];
      bytes = 0;
      yield [r];
      continue;
    }
    if (chunk.length > 0 && (chunk.length >= MAX_ROWS_PER_STATEMENT || bytes + size > MAX_BYTES_PER_STATEMENT)) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(r);
    bytes += size;
  }
  if (chunk.length > 0) yield chunk;
}

/**
 * A stored value as text, as conflict tracking compares and records it: the server's text
 * (the text protocol sends every value so), binary columns as PostgreSQL's `\x` hex (a
 * change's bytea text), BIT as its number.
 */
function storedText(target: MysqlTable, field: TypeCastField): string | null {
  if (field.type === 'BIT') {
    const b = field.buffer();
    return b === null ? null : BigInt(`0x${b.toString('hex') || '0'}`).toString();
  }
  if (target.columns.get(field.name)?.kind === 'binary') {
    const b = field.buffer();
    return b === null ? null : `\\x${b.toString('hex')}`;
  }
  return field.string('utf8');
}
