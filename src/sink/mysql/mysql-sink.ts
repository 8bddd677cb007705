import { createHash } from 'node:crypto';
import mysql, { type Pool, type PoolConnection, type ResultSetHeader, type RowDataPacket } from 'mysql2/promise';
import { rowKeyOf, type ChangeEvent, type Row } from '../../core/change.js';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import { parseLsn, versionOf } from '../../core/lsn.js';
import { pgTimestampToUtc } from '../pg-text.js';
import { bookkeepingTables, DELETED_AT_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, type BookkeepingTables } from '../sql/bookkeeping.js';
import type { RecordedColumn, SchemaStep, TargetColumnShape } from '../../core/schema-evolution.js';
import type { SchemaEvolution } from '../sql/schema-evolver.js';
import type { MultisetVersions, SqlDialect } from '../sql/sql-dialect.js';
import { SqlSink } from '../sql/sql-sink.js';
import { classifyMysqlError, isFatalMysqlError, isStructuralMysqlError } from './mysql-errors.js';
import { keyMatch, loadMysqlTable, mysqlColumnTypes, targetDatabase, mysqlTypeFor, normalizeMysqlType, quoteMysqlIdent as q, rowMatch, toMysqlParam, type MysqlColumn, type MysqlTable } from './mysql-table.js';

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
 */
export class MysqlSink extends SqlSink<PoolConnection, MysqlTable> {
  constructor(options: MysqlSinkOptions) {
    super(new MysqlDialect(options), undefined, options.evolution);
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
    return loadMysqlTable(c, schema, table, this.soft);
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

  /** One statement per chunk: a SELECT per row, UNION ALL. */
  async absentRows(c: PoolConnection, target: MysqlTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const out: ChangeEvent[] = [];
    for (const chunk of chunks(rows)) {
      const params: unknown[] = [];
      const selects = chunk.map((r, j) => {
        const version = `(${parseLsn(r.commit_lsn).toString()}, ${r.seq | 0})`;
        const match = keyMatch(target, keyColumns, r, params);
        params.push(target.label, keyHash(r), target.label);
        return `SELECT ${j} AS idx FROM DUAL
          WHERE NOT EXISTS (SELECT 1 FROM ${target.qualified} WHERE ${match})
            AND NOT EXISTS (SELECT 1 FROM ${this.state.tombstones} tb WHERE tb.table_name = ? AND tb.key_hash = ? AND (tb.lsn, tb.seq) >= ${version})
            AND NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr WHERE tr.table_name = ? AND (tr.lsn, tr.seq) >= ${version})`;
      });
      const [absent] = await c.query<(RowDataPacket & { idx: number })[]>(selects.join('\n UNION ALL '), params);
      for (const a of absent) out.push(chunk[Number(a.idx)] as ChangeEvent);
    }
    return out;
  }

  async upsert(c: PoolConnection, target: MysqlTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const metas = columns.map((col) => target.columns.get(col) as MysqlColumn);
    let written = 0;
    for (const chunk of chunks(rows)) {
      const params: unknown[] = [];
      const selects = chunk.map((r, j) => {
        const payload = r.payload as Row;
        for (let i = 0; i < columns.length; i++) params.push(toMysqlParam(metas[i] as MysqlColumn, payload[columns[i] as string] ?? null));
        params.push(keyHash(r));
        // Versions are computed integers, written as literals so they compare exactly (no string → double).
        const lsn = parseLsn(r.commit_lsn).toString();
        const seq = String(r.seq | 0);
        // The first SELECT of the UNION names the derived table's columns.
        const values = j === 0
          ? [...columns.map((_, i) => `? AS ${IN(i)}`), `? AS ${IN_KEY}`, `${lsn} AS ${IN_LSN}`, `${seq} AS ${IN_SEQ}`]
          : [...columns.map(() => '?'), '?', lsn, seq];
        return `SELECT ${values.join(', ')}`;
      });
      const res = await exec(c, this.upsertSql(target, columns, keyColumns, selects.join('\n UNION ALL ')), params);
      written += appliedRows(res, chunk.length);
    }
    return written;
  }

  private upsertSql(target: MysqlTable, columns: string[], keyColumns: string[], rowsSql: string): string {
    const gate = this.options.versionGate;
    const updates = columns.filter((col) => !keyColumns.includes(col)).map((col) => (gate ? `${q(col)} = IF(${NEWER}, VALUES(${q(col)}), ${q(col)})` : `${q(col)} = VALUES(${q(col)})`));
    // A newer insert or update revives a soft-deleted row; like a data column, before the versions.
    if (this.soft) updates.push(gate ? `${DELETED_AT} = IF(${NEWER}, NULL, ${DELETED_AT})` : `${DELETED_AT} = NULL`);
    // Order matters, see the class comment: data columns, then seq, then lsn.
    updates.push(gate ? `${V_SEQ} = IF(${NEWER}, VALUES(${V_SEQ}), ${V_SEQ})` : `${V_SEQ} = VALUES(${V_SEQ})`);
    updates.push(gate ? `${V_LSN} = GREATEST(COALESCE(${V_LSN}, 0), VALUES(${V_LSN}))` : `${V_LSN} = VALUES(${V_LSN})`);
    const label = mysql.escape(target.label);
    const where = gate
      ? `WHERE NOT EXISTS (SELECT 1 FROM ${this.state.tombstones} tb
                            WHERE tb.table_name = ${label} AND tb.key_hash = i.${IN_KEY} AND (tb.lsn, tb.seq) >= (i.${IN_LSN}, i.${IN_SEQ}))
           AND NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr
                            WHERE tr.table_name = ${label} AND (tr.lsn, tr.seq) >= (i.${IN_LSN}, i.${IN_SEQ}))`
      : '';
    const soft = this.soft ? [DELETED_AT] : [];
    return `INSERT INTO ${target.qualified} (${[...columns.map(q), V_LSN, V_SEQ, ...soft].join(', ')})
      SELECT ${[...columns.map((_, i) => `i.${IN(i)}`), `i.${IN_LSN}`, `i.${IN_SEQ}`, ...soft.map(() => 'NULL')].join(', ')}
        FROM (${rowsSql}) AS i
      ${where}
      ON DUPLICATE KEY UPDATE ${updates.join(', ')}`;
  }

  async delete(c: PoolConnection, target: MysqlTable, keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const gate = this.options.versionGate;
    let removed = 0;
    for (const chunk of chunks(rows)) {
      // 1. Tombstones, advanced only by a newer delete (same ordering rule as the upsert).
      const tombParams: unknown[] = [];
      const tombValues = chunk.map((r) => {
        tombParams.push(target.label, keyHash(r), rowKeyOf(r));
        return `(?, ?, ?, ${parseLsn(r.commit_lsn).toString()}, ${r.seq | 0})`;
      });
      const newer = '(lsn, seq) < (VALUES(lsn), VALUES(seq))';
      await exec(
        c,
        `INSERT INTO ${this.state.tombstones} (table_name, key_hash, row_key, lsn, seq) VALUES ${tombValues.join(', ')}
         ON DUPLICATE KEY UPDATE deleted_at = IF(${newer}, CURRENT_TIMESTAMP(6), deleted_at),
                                 seq = IF(${newer}, VALUES(seq), seq),
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
        return `(${match}${gate ? ` AND ${ROW_VERSION} < (${parseLsn(r.commit_lsn).toString()}, ${r.seq | 0})` : ''})`;
      });
      const res = await exec(c, `DELETE FROM ${target.qualified} WHERE ${conds.join(' OR ')}`, params);
      removed += res.affectedRows;
    }
    return removed;
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
   * Returns how many rows were marked.
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
    const gate = this.options.versionGate;
    const where = chunk.map((r) => `(${match(r)}${gate ? ` AND ${ROW_VERSION} < (${parseLsn(r.commit_lsn).toString()}, ${r.seq | 0})` : ''})`);
    const res = await exec(c, `UPDATE ${target.qualified} SET ${sets.join(', ')} WHERE ${where.join(' OR ')}`, params);
    return res.affectedRows;
  }

  async readMultisetVersions(c: PoolConnection, label: string): Promise<MultisetVersions> {
    // Creating the row first locks it (a missing row's FOR UPDATE would take a gap lock, which
    // two apply processes can deadlock on); lsn 0 sorts before every real version.
    await c.query(`INSERT INTO ${this.state.multisetVersions} (table_name, lsn, seq, reset) VALUES (?, 0, 0, 0) ON DUPLICATE KEY UPDATE table_name = table_name`, [label]);
    const [seen] = await c.query<(RowDataPacket & { lsn: string; seq: number; reset: number })[]>(
      `SELECT CAST(lsn AS CHAR) AS lsn, seq, reset FROM ${this.state.multisetVersions} WHERE table_name = ? FOR UPDATE`,
      [label],
    );
    const [trunc] = await c.query<(RowDataPacket & { lsn: string; seq: number })[]>(`SELECT CAST(lsn AS CHAR) AS lsn, seq FROM ${this.state.truncations} WHERE table_name = ?`, [label]);
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
      const values = chunk.map((change) => {
        const payload = change.payload as Row;
        metas.forEach((m, i) => params.push(toMysqlParam(m, payload[columns[i] as string] ?? null)));
        // Versions are computed integers, written as literals (exact, no string → double).
        return `(${[...columns.map(() => '?'), parseLsn(change.commit_lsn).toString(), String(change.seq | 0)].join(', ')})`;
      });
      const res = await exec(c, `INSERT INTO ${target.qualified} (${[...columns.map(q), V_LSN, V_SEQ].join(', ')}) VALUES ${values.join(', ')}`, params);
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

  async writeMultisetVersion(c: PoolConnection, label: string, newest: ChangeEvent | undefined, reset: boolean): Promise<void> {
    // The row exists: readMultisetVersions created it.
    if (newest) {
      await c.query(`UPDATE ${this.state.multisetVersions} SET lsn = ${parseLsn(newest.commit_lsn).toString()}, seq = ${newest.seq | 0}, reset = ${reset ? 1 : 0} WHERE table_name = ?`, [label]);
    } else if (reset) {
      await c.query(`UPDATE ${this.state.multisetVersions} SET reset = 1 WHERE table_name = ?`, [label]);
    }
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
    return `give the target the same primary key: ALTER TABLE ${target.qualified} ADD PRIMARY KEY (${keyColumns.map(q).join(', ')})`;
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
function commitTimeUtc(change: ChangeEvent): string {
  return pgTimestampToUtc(change.commit_ts.replace(/Z$/, '+00'));
}

function keyHash(change: ChangeEvent): Buffer {
  return createHash('sha256').update(rowKeyOf(change)).digest();
}

function* chunks(rows: ChangeEvent[]): Generator<ChangeEvent[]> {
  let chunk: ChangeEvent[] = [];
  let bytes = 0;
  for (const r of rows) {
    let size = 64;
    for (const v of Object.values(r.payload ?? r.key)) size += v === null ? 4 : v.length + 8;
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
