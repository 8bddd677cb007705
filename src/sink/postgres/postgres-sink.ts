import pg from 'pg';
import { rowKeyOf, type ChangeEvent, type Row } from '../../core/change.js';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import { parseLsn, versionOf } from '../../core/lsn.js';
import { quoteIdent, quoteQualified } from '../../core/sql.js';
import { bookkeepingTables, DELETED_AT_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, type BookkeepingTables } from '../sql/bookkeeping.js';
import type { RecordedColumn, SchemaStep, TargetColumnShape } from '../../core/schema-evolution.js';
import type { SchemaEvolution } from '../sql/schema-evolver.js';
import type { MultisetVersions, SqlDialect } from '../sql/sql-dialect.js';
import { SqlSink } from '../sql/sql-sink.js';
import { copyFrom, copyTextChunks } from './copy-in.js';
import { CopyStages } from './copy-stage.js';
import { classifyPgError, isStructuralPgError } from './postgres-errors.js';
import { auditStale, staleAuditDdl } from './stale-audit.js';
import { castText, keyMatch, loadTargetTable, storedText, type TargetColumn, type TargetTable } from './table-meta.js';

export interface PostgresSinkOptions {
  url: string;
  /** Schema for syncline's own tables in the target database. */
  stateSchema: string;
  deleteMode: 'hard' | 'soft';
  versionGate: boolean;
  poolSize?: number;
  /**
   * `sink.stale_audit`: record every upsert the version gate rejected, with the incoming
   * and the stored version, in `<stateSchema>.stale_audit` (same transaction).
   */
  staleAudit?: boolean;
  /** Creates missing target tables from the source's definition (`sink.create_tables`). */
  createTable?: (schema: string, table: string) => Promise<string>;
  /**
   * `sink.copy_threshold`: upserts of at least this many rows of one table (and column set)
   * in a batch are COPYed into a session temporary table and merged from there; 0 or
   * absent: always the `unnest` upsert.
   */
  copyThreshold?: number;
  /** `sink.schema_evolution`: the target follows the source's definitions. */
  evolution?: SchemaEvolution;
}

const V_LSN = quoteIdent(VERSION_LSN_COLUMN);
const V_SEQ = quoteIdent(VERSION_SEQ_COLUMN);
/** A row's stored version; rows written before syncline managed the table count as oldest. */
const ROW_VERSION = `(COALESCE(t.${V_LSN}, '0/0'::pg_lsn), COALESCE(t.${V_SEQ}, 0))`;

/**
 * PostgreSQL target. Each batch is one transaction (see SqlSink): set-based `unnest` upserts
 * per table (or COPY into a staging table, see `copy-stage.ts`), deletes with tombstones,
 * truncations as watermarks, and the consumer positions. Every write is gated on the row's
 * stored version (commit LSN, seq), so replays change nothing.
 */
export class PostgresSink extends SqlSink<pg.PoolClient, TargetTable> {
  constructor(options: PostgresSinkOptions) {
    super(new PostgresDialect(options), options.evolution);
  }
}

class PostgresDialect implements SqlDialect<pg.PoolClient, TargetTable> {
  readonly name = 'the sink';
  private readonly pool: pg.Pool;
  private readonly state: BookkeepingTables & { staleAudit: string };
  private readonly sqlCache = new Map<string, string>();
  private readonly stages = new CopyStages();

  constructor(private readonly options: PostgresSinkOptions) {
    this.pool = new pg.Pool({ connectionString: options.url, max: options.poolSize ?? 2 });
    // An idle pooled connection that dies must not crash the process; the next query reconnects.
    this.pool.on('error', () => undefined);
    const s = options.stateSchema;
    this.state = { ...bookkeepingTables((t) => quoteQualified(s, t)), staleAudit: quoteQualified(s, 'stale_audit') };
  }

  async withConnection<R>(what: string, fn: (c: pg.PoolClient) => Promise<R>): Promise<R> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      const e = classifyPgError(err, 'connecting to the sink');
      // Refused for good (authentication, no such database): no change could ever be applied.
      if (e instanceof SynclineError && !e.retriable && !(e instanceof PrerequisiteError)) {
        throw new PrerequisiteError(e.message, 'check sink.url (host, user, password, database) and that the user may connect');
      }
      throw e;
    }
    guardClient(client);
    try {
      return await fn(client);
    } catch (err) {
      throw classifyPgError(err, what);
    } finally {
      // A broken connection leaves the pool instead of serving the next batch.
      client.release(brokenClients.get(client));
    }
  }

  async createBookkeeping(c: pg.PoolClient): Promise<void> {
    await c.query('BEGIN');
    // Two apply processes starting together must not race on CREATE ... IF NOT EXISTS.
    await c.query("SELECT pg_advisory_xact_lock(hashtext('syncline.sink.prepare'))");
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.options.stateSchema)}`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.positions} (
      group_id text NOT NULL, stream_partition integer NOT NULL, next_offset bigint NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (group_id, stream_partition))`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.tombstones} (
      table_name text NOT NULL, row_key text NOT NULL, lsn pg_lsn NOT NULL, seq integer NOT NULL,
      deleted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, row_key))`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.truncations} (
      table_name text PRIMARY KEY, lsn pg_lsn NOT NULL, seq integer NOT NULL)`);
    await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.multisetVersions} (
      table_name text PRIMARY KEY, lsn pg_lsn NOT NULL, seq integer NOT NULL, reset boolean NOT NULL DEFAULT false)`);
    if (this.options.staleAudit) await c.query(staleAuditDdl(this.state.staleAudit));
    await c.query('COMMIT');
  }

  async readPositions(c: pg.PoolClient, group: string): Promise<Map<number, bigint>> {
    const { rows } = await c.query<{ p: number; o: string }>(`SELECT stream_partition AS p, next_offset::text AS o FROM ${this.state.positions} WHERE group_id = $1`, [group]);
    return new Map(rows.map((r) => [r.p, BigInt(r.o)]));
  }

  async writePositions(c: pg.PoolClient, group: string, positions: ReadonlyMap<number, bigint>): Promise<void> {
    await c.query(
      `INSERT INTO ${this.state.positions} (group_id, stream_partition, next_offset)
       SELECT $1, p, o FROM unnest($2::int[], $3::bigint[]) AS x(p, o)
       ON CONFLICT (group_id, stream_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()`,
      [group, [...positions.keys()], [...positions.values()].map(String)],
    );
  }

  loadTable(c: pg.PoolClient, schema: string, table: string): Promise<TargetTable> {
    return loadTargetTable(c, schema, table, this.options.deleteMode === 'soft', this.options.createTable);
  }

  async begin(c: pg.PoolClient): Promise<void> {
    await c.query('BEGIN');
  }

  async commit(c: pg.PoolClient): Promise<void> {
    await c.query('COMMIT');
  }

  async rollback(c: pg.PoolClient): Promise<void> {
    await c.query('ROLLBACK');
  }

  async truncate(c: pg.PoolClient, target: TargetTable, change: ChangeEvent): Promise<boolean> {
    const res = await c.query(
      `INSERT INTO ${this.state.truncations} AS tr (table_name, lsn, seq) VALUES ($1, $2::pg_lsn, $3)
       ON CONFLICT (table_name) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq
       WHERE (tr.lsn, tr.seq) < (EXCLUDED.lsn, EXCLUDED.seq)`,
      [target.label, change.commit_lsn, change.seq],
    );
    if ((res.rowCount ?? 0) === 0) return false;
    // Rows older than the truncation go; newer ones (applied from other partitions) stay.
    await c.query(`DELETE FROM ${target.qualified} t WHERE ${ROW_VERSION} < ($1::pg_lsn, $2)`, [change.commit_lsn, change.seq]);
    return true;
  }

  async absentRows(c: pg.PoolClient, target: TargetTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const k = keyColumns.length;
    const params: unknown[] = keyColumns.map((col) => rows.map((r) => r.key[col] ?? null));
    params.push(rows.map((r) => rowKeyOf(r)), rows.map((r) => r.commit_lsn), rows.map((r) => r.seq), target.label);
    const { rows: absent } = await c.query<{ n: number }>(
      `SELECT i.n::int AS n FROM unnest(${[...keyColumns.map((_, j) => `$${j + 1}::text[]`), `$${k + 1}::text[]`, `$${k + 2}::text[]`, `$${k + 3}::int[]`].join(', ')})
              WITH ORDINALITY AS i(${[...keyColumns.map((_, j) => `k${j}`), 'row_key', 'v_lsn', 'v_seq', 'n'].join(', ')})
        WHERE NOT EXISTS (SELECT 1 FROM ${target.qualified} t WHERE ${keyMatch(target, keyColumns)})
          AND NOT EXISTS (SELECT 1 FROM ${this.state.tombstones} tb
                           WHERE tb.table_name = $${k + 4} AND tb.row_key = i.row_key AND (tb.lsn, tb.seq) >= (i.v_lsn::pg_lsn, i.v_seq))
          AND NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr
                           WHERE tr.table_name = $${k + 4} AND (tr.lsn, tr.seq) >= (i.v_lsn::pg_lsn, i.v_seq))`,
      params,
    );
    return absent.map((r) => rows[r.n - 1] as ChangeEvent);
  }

  async upsert(c: pg.PoolClient, target: TargetTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const values: (string | number | null)[][] = columns.map((col) => rows.map((r) => (r.payload as Row)[col] ?? null));
    values.push(rows.map((r) => rowKeyOf(r)));
    values.push(rows.map((r) => r.commit_lsn));
    values.push(rows.map((r) => r.seq));
    const threshold = this.options.copyThreshold ?? 0;
    let res: pg.QueryResult<{ k: string }>;
    if (threshold > 0 && rows.length >= threshold) {
      const stage = this.stages.of(target, columns);
      await copyFrom(c, `${stage.create}; COPY ${stage.name} FROM STDIN`, copyTextChunks(values, rows.length));
      res = await c.query<{ k: string }>(this.upsertSql(target, columns, keyColumns, stage.name), [target.label]);
    } else {
      res = await c.query<{ k: string }>(this.upsertSql(target, columns, keyColumns), [...values, target.label]);
    }
    const n = res.rowCount ?? 0;
    if (this.options.staleAudit && n < rows.length) {
      const written = new Set(res.rows.map((r) => r.k));
      await auditStale(c, this.state.staleAudit, target, keyColumns, rows.filter((r) => !written.has(rowKeyOf(r))));
    }
    return n;
  }

  /** The version-gated upsert from `unnest` of array parameters, or from `stage` when given. */
  private upsertSql(target: TargetTable, columns: string[], keyColumns: string[], stage?: string): string {
    const cacheKey = `u\u0001${target.qualified}\u0001${columns.join('\u0000')}\u0001${stage ?? ''}`;
    const cached = this.sqlCache.get(cacheKey);
    if (cached) return cached;
    const n = columns.length;
    const soft = this.options.deleteMode === 'soft';
    const cast = (col: string, i: number): string => castText(target.columns.get(col) as TargetColumn, `i.c${i}`);
    const insertCols = [...columns.map(quoteIdent), V_LSN, V_SEQ, ...(soft ? [quoteIdent(DELETED_AT_COLUMN)] : [])];
    const selectExprs = [...columns.map(cast), 'i.v_lsn::pg_lsn', 'i.v_seq', ...(soft ? ['NULL'] : [])];
    const unnestArgs = [...columns.map((_, i) => `$${i + 1}::text[]`), `$${n + 1}::text[]`, `$${n + 2}::text[]`, `$${n + 3}::int[]`];
    const aliases = [...columns.map((_, i) => `c${i}`), 'row_key', 'v_lsn', 'v_seq'];
    const from = stage ? `${stage} AS i` : `unnest(${unnestArgs.join(', ')}) AS i(${aliases.join(', ')})`;
    const label = stage ? '$1' : `$${n + 4}`;
    const updates = [...columns.filter((c) => !keyColumns.includes(c)).map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`), `${V_LSN} = EXCLUDED.${V_LSN}`, `${V_SEQ} = EXCLUDED.${V_SEQ}`];
    if (soft) updates.push(`${quoteIdent(DELETED_AT_COLUMN)} = NULL`);
    const gate = this.options.versionGate;
    const sql =
      `INSERT INTO ${target.qualified} AS t (${insertCols.join(', ')})
       SELECT ${selectExprs.join(', ')}
         FROM ${from}` +
      (gate
        ? `
        WHERE NOT EXISTS (SELECT 1 FROM ${this.state.tombstones} tb
                           WHERE tb.table_name = ${label} AND tb.row_key = i.row_key AND (tb.lsn, tb.seq) >= (i.v_lsn::pg_lsn, i.v_seq))
          AND NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr
                           WHERE tr.table_name = ${label} AND (tr.lsn, tr.seq) >= (i.v_lsn::pg_lsn, i.v_seq))`
        : `
        WHERE ${label}::text IS NOT NULL`) +
      `
       ON CONFLICT (${keyColumns.map(quoteIdent).join(', ')}) DO UPDATE SET ${updates.join(', ')}` +
      (gate ? `\n       WHERE ${ROW_VERSION} < (EXCLUDED.${V_LSN}, EXCLUDED.${V_SEQ})` : '') +
      // With the audit on, the written keys come back so the rejected ones can be recorded.
      (this.options.staleAudit ? `\n       RETURNING to_json(ARRAY[${keyColumns.map((c) => `t.${quoteIdent(c)}::text`).join(', ')}])::text AS k` : '');
    this.sqlCache.set(cacheKey, sql);
    return sql;
  }

  async delete(c: pg.PoolClient, target: TargetTable, keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const k = keyColumns.length;
    const soft = this.options.deleteMode === 'soft';
    const match = keyMatch(target, keyColumns);
    const gate = this.options.versionGate ? ` AND ${ROW_VERSION} < (i.v_lsn::pg_lsn, i.v_seq)` : '';
    const removal = soft
      ? `UPDATE ${target.qualified} t SET ${quoteIdent(DELETED_AT_COLUMN)} = i.ts::timestamptz, ${V_LSN} = i.v_lsn::pg_lsn, ${V_SEQ} = i.v_seq
           FROM i WHERE ${match}${gate} RETURNING 1`
      : `DELETE FROM ${target.qualified} t USING i WHERE ${match}${gate} RETURNING 1`;
    const sql = `WITH i AS (SELECT * FROM unnest(${[...keyColumns.map((_, j) => `$${j + 1}::text[]`), `$${k + 1}::text[]`, `$${k + 2}::text[]`, `$${k + 3}::int[]`, `$${k + 4}::text[]`].join(', ')})
                     AS i(${[...keyColumns.map((_, j) => `k${j}`), 'row_key', 'v_lsn', 'v_seq', 'ts'].join(', ')})),
      tomb AS (INSERT INTO ${this.state.tombstones} AS tb (table_name, row_key, lsn, seq)
               SELECT $${k + 5}, row_key, v_lsn::pg_lsn, v_seq FROM i
               ON CONFLICT (table_name, row_key) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, deleted_at = now()
               WHERE (tb.lsn, tb.seq) < (EXCLUDED.lsn, EXCLUDED.seq)
               RETURNING 1),
      removed AS (${removal})
      SELECT (SELECT count(*) FROM tomb)::int AS tombstoned, (SELECT count(*) FROM removed)::int AS removed`;
    const params: unknown[] = keyColumns.map((col) => rows.map((r) => r.key[col] ?? null));
    params.push(rows.map((r) => rowKeyOf(r)));
    params.push(rows.map((r) => r.commit_lsn));
    params.push(rows.map((r) => r.seq));
    params.push(rows.map((r) => r.commit_ts));
    params.push(target.label);
    const res = await c.query<{ tombstoned: number; removed: number }>(sql, params);
    return res.rows[0]?.removed ?? 0;
  }

  async readMultisetVersions(c: pg.PoolClient, label: string): Promise<MultisetVersions> {
    const seen = await c.query<{ lsn: string; seq: number; reset: boolean }>(`SELECT lsn::text, seq, reset FROM ${this.state.multisetVersions} WHERE table_name = $1 FOR UPDATE`, [label]);
    const trunc = await c.query<{ lsn: string; seq: number }>(`SELECT lsn::text, seq FROM ${this.state.truncations} WHERE table_name = $1`, [label]);
    const high = seen.rows[0];
    const truncated = trunc.rows[0];
    return {
      high: high && { version: versionOf(parseLsn(high.lsn), high.seq), reset: high.reset },
      truncation: truncated && versionOf(parseLsn(truncated.lsn), truncated.seq),
    };
  }

  async insertRows(c: pg.PoolClient, target: TargetTable, columns: string[], changes: ChangeEvent[]): Promise<number> {
    const n = columns.length;
    const params: unknown[] = columns.map((col) => changes.map((ch) => (ch.payload as Row)[col] ?? null));
    params.push(changes.map((ch) => ch.commit_lsn), changes.map((ch) => ch.seq));
    const cast = (col: string, i: number): string => castText(target.columns.get(col) as TargetColumn, `i.c${i}`);
    const res = await c.query(
      `INSERT INTO ${target.qualified} (${[...columns.map(quoteIdent), V_LSN, V_SEQ].join(', ')})
       SELECT ${[...columns.map(cast), 'i.v_lsn::pg_lsn', 'i.v_seq'].join(', ')}
         FROM unnest(${[...columns.map((_, i) => `$${i + 1}::text[]`), `$${n + 1}::text[]`, `$${n + 2}::int[]`].join(', ')})
              AS i(${[...columns.map((_, i) => `c${i}`), 'v_lsn', 'v_seq'].join(', ')})`,
      params,
    );
    return res.rowCount ?? 0;
  }

  /**
   * Matched by every column of `before` compared as text, as the column stores it (see
   * `storedText`), so types without an equality operator work too.
   */
  async removeOne(c: pg.PoolClient, target: TargetTable, before: Row): Promise<boolean> {
    const columns = Object.keys(before);
    const match = columns
      .map((col, i) => `t.${quoteIdent(col)}::text IS NOT DISTINCT FROM ${storedText(target.columns.get(col) as TargetColumn, `$${i + 1}::text`)}`)
      .join(' AND ');
    const res = await c.query(
      `DELETE FROM ${target.qualified} WHERE ctid = (SELECT t.ctid FROM ${target.qualified} t WHERE ${match || 'true'} LIMIT 1)`,
      columns.map((col) => before[col] ?? null),
    );
    return (res.rowCount ?? 0) > 0;
  }

  async writeMultisetVersion(c: pg.PoolClient, label: string, newest: ChangeEvent | undefined, reset: boolean): Promise<void> {
    if (newest) {
      await c.query(
        `INSERT INTO ${this.state.multisetVersions} AS v (table_name, lsn, seq, reset) VALUES ($1, $2::pg_lsn, $3, $4)
         ON CONFLICT (table_name) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, reset = v.reset OR EXCLUDED.reset`,
        [label, newest.commit_lsn, newest.seq, reset],
      );
    } else {
      await c.query(
        `INSERT INTO ${this.state.multisetVersions} AS v (table_name, lsn, seq, reset) VALUES ($1, '0/0', 0, $2)
         ON CONFLICT (table_name) DO UPDATE SET reset = v.reset OR EXCLUDED.reset`,
        [label, reset],
      );
    }
  }

  isStructural(err: unknown): boolean {
    return isStructuralPgError(err);
  }

  /** Cached statements cast to the columns' types: a widened column needs them made again. */
  invalidate(): void {
    this.sqlCache.clear();
  }

  readonly transactionalDdl = true;

  async describeColumns(c: pg.PoolClient, target: TargetTable): Promise<Map<string, TargetColumnShape>> {
    const { rows } = await c.query<{ name: string; type: string; not_null: boolean }>(
      `SELECT attname AS name, format_type(atttypid, atttypmod) AS type, attnotnull AS not_null
         FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
      [target.qualified],
    );
    return new Map(rows.map((r) => [r.name, { type: r.type, notNull: r.not_null }]));
  }

  /** The source's own spelling: format_type with its modifiers (user-defined types must exist at the target). */
  typeFor(column: RecordedColumn): string {
    return column.type;
  }

  async evolve(c: pg.PoolClient, target: TargetTable, steps: readonly SchemaStep[]): Promise<void> {
    const t = target.qualified;
    for (const step of steps) {
      switch (step.kind) {
        case 'add':
          await c.query(`ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS ${quoteIdent(step.column.name)} ${step.column.type}`);
          break;
        case 'rename':
          await c.query(`ALTER TABLE ${t} RENAME COLUMN ${quoteIdent(step.from)} TO ${quoteIdent(step.to)}`);
          break;
        case 'widen':
          await c.query(`ALTER TABLE ${t} ALTER COLUMN ${quoteIdent(step.column.name)} TYPE ${step.column.type}`);
          break;
        case 'drop':
          await c.query(`ALTER TABLE ${t} DROP COLUMN IF EXISTS ${quoteIdent(step.name)}`);
          break;
        case 'nullable':
          await c.query(`ALTER TABLE ${t} ALTER COLUMN ${quoteIdent(step.name)} DROP NOT NULL`);
          break;
      }
    }
  }

  addColumnsFix(target: TargetTable, missing: string[]): string {
    return `ALTER TABLE ${target.qualified} ${missing.map((m) => `ADD COLUMN ${quoteIdent(m)} <type>`).join(', ')}`;
  }

  primaryKeyFix(target: TargetTable, keyColumns: string[]): string {
    return `give the target the same primary key: ALTER TABLE ${target.qualified} ADD PRIMARY KEY (${keyColumns.map(quoteIdent).join(', ')})`;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Pooled clients whose connection failed, with the error. */
const brokenClients = new WeakMap<pg.PoolClient, Error>();

/**
 * pg-pool listens for errors of idle clients only: a server that goes away while a client is
 * checked out (between the statements of a batch) would crash the process with an unhandled
 * 'error' event. Each client gets one listener for its life; the statement in flight fails
 * and is retried, and the client is dropped when released.
 */
function guardClient(client: pg.PoolClient): void {
  if (client.listeners('error').includes(recordBroken)) return;
  client.on('error', recordBroken);
}

function recordBroken(this: pg.PoolClient, err: Error): void {
  brokenClients.set(this, err);
}
