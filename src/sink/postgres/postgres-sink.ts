import pg from 'pg';
import { rowKeyOf, type ChangeEvent } from '../../core/change.js';
import { PrerequisiteError, SynclineError, errorMessage } from '../../core/errors.js';
import { forTable } from '../table-errors.js';
import { skippableWithoutStoredValues } from '../unchanged-values.js';
import { quoteIdent, quoteQualified } from '../../core/sql.js';
import { collapseBatch, type TableBatch } from '../collapse.js';
import type { ApplyOutcome, Sink } from '../sink.js';
import { isRetriablePgError } from '../../core/sqlstate.js';
import { copyFrom, copyTextChunks } from './copy-in.js';
import { applyMultiset, multisetStateDdl, type MultisetState } from './multiset.js';
import { DELETED_AT_COLUMN, VERSION_LSN_COLUMN, VERSION_SEQ_COLUMN, castText, loadTargetTable, type TargetColumn, type TargetTable } from './table-meta.js';

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
}

const V_LSN = quoteIdent(VERSION_LSN_COLUMN);
const V_SEQ = quoteIdent(VERSION_SEQ_COLUMN);
/** A row's stored version; rows written before syncline managed the table count as oldest. */
const ROW_VERSION = `(COALESCE(t.${V_LSN}, '0/0'::pg_lsn), COALESCE(t.${V_SEQ}, 0))`;

/**
 * PostgreSQL target. Each batch is one transaction: set-based `unnest` upserts per table,
 * deletes with tombstones, truncations as watermarks, and the consumer positions. Every
 * write is gated on the row's stored version (commit LSN, seq), so replays change nothing.
 */
export class PostgresSink implements Sink {
  readonly storesPositions = true;
  private readonly pool: pg.Pool;
  private readonly state: { positions: string; tombstones: string; truncations: string; staleAudit: string } & MultisetState;
  private readonly tables = new Map<string, TargetTable>();
  private readonly sqlCache = new Map<string, string>();
  /** Staging table per target and column set: its name and the statement that creates it. */
  private readonly stages = new Map<string, { name: string; create: string }>();

  constructor(private readonly options: PostgresSinkOptions) {
    this.pool = new pg.Pool({ connectionString: options.url, max: options.poolSize ?? 2 });
    // An idle pooled connection that dies must not crash the process; the next query reconnects.
    this.pool.on('error', () => undefined);
    const s = options.stateSchema;
    this.state = {
      positions: quoteQualified(s, 'positions'),
      tombstones: quoteQualified(s, 'tombstones'),
      truncations: quoteQualified(s, 'truncations'),
      staleAudit: quoteQualified(s, 'stale_audit'),
      versions: quoteQualified(s, 'multiset_versions'),
    };
  }

  async prepare(): Promise<void> {
    await this.withClient(async (c) => {
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
      await c.query(multisetStateDdl(this.state));
      if (this.options.staleAudit) {
        await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.staleAudit} (
          id bigserial PRIMARY KEY, table_name text NOT NULL, row_key text NOT NULL, op text NOT NULL,
          incoming_lsn pg_lsn NOT NULL, incoming_seq integer NOT NULL, stored_lsn pg_lsn, stored_seq integer,
          change jsonb NOT NULL, rejected_at timestamptz NOT NULL DEFAULT now())`);
      }
      await c.query('COMMIT');
    });
  }

  async positions(group: string): Promise<Map<number, bigint>> {
    const { rows } = await this.withClient((c) =>
      c.query<{ p: number; o: string }>(`SELECT stream_partition AS p, next_offset::text AS o FROM ${this.state.positions} WHERE group_id = $1`, [group]),
    );
    return new Map(rows.map((r) => [r.p, BigInt(r.o)]));
  }

  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    const { tables, superseded } = collapseBatch(changes);
    const outcome: ApplyOutcome = { applied: 0, stale: 0, superseded, byTable: new Map() };
    await this.withClient(async (c) => {
      // Table metadata (and adding the version columns) happens outside the batch
      // transaction, so a rolled-back batch cannot leave the cache believing in columns
      // that were never committed.
      for (const batch of tables) await forTable(batch, isStructural, () => this.target(c, batch.schema, batch.table));
      await c.query('BEGIN');
      try {
        for (const batch of tables) {
          const counts = { applied: 0, stale: 0 };
          await forTable(batch, isStructural, async () => {
            const target = await this.target(c, batch.schema, batch.table);
            if (batch.truncate) await this.truncate(c, target, batch.truncate, counts);
            if (batch.multiset.length > 0 || batch.snapshotReset) {
              this.checkColumns(target, multisetColumns(batch), undefined);
              await applyMultiset(c, target, tableLabel(target), batch.multiset, batch.snapshotReset, this.state, counts);
            }
            await this.upsert(c, target, batch, counts);
            await this.delete(c, target, batch, counts);
          });
          outcome.applied += counts.applied;
          outcome.stale += counts.stale;
          outcome.byTable.set(`${batch.schema}.${batch.table}`, counts);
        }
        if (positions.size > 0) {
          await c.query(
            `INSERT INTO ${this.state.positions} (group_id, stream_partition, next_offset)
             SELECT $1, p, o FROM unnest($2::int[], $3::bigint[]) AS x(p, o)
             ON CONFLICT (group_id, stream_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()`,
            [group, [...positions.keys()], [...positions.values()].map(String)],
          );
        }
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        // The target's structure may have changed (or be the problem): re-read it next time.
        if (isStructural(err)) this.tables.clear();
        throw err;
      }
    });
    return outcome;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async withClient<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      const e = classify(err, 'connecting to the sink');
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
      throw classify(err, 'applying to the sink');
    } finally {
      // A broken connection leaves the pool instead of serving the next batch.
      client.release(brokenClients.get(client));
    }
  }

  private async target(c: pg.PoolClient, schema: string, table: string): Promise<TargetTable> {
    const name = `${schema}.${table}`;
    let t = this.tables.get(name);
    if (!t) {
      t = await loadTargetTable(c, schema, table, this.options.deleteMode === 'soft', this.options.createTable);
      this.tables.set(name, t);
    }
    return t;
  }

  private async upsert(c: pg.PoolClient, target: TargetTable, batch: TableBatch, counts: { applied: number; stale: number }): Promise<void> {
    // Rows with the same set of sent columns share one statement (unchanged TOAST columns are left out).
    const groups = new Map<string, ChangeEvent[]>();
    for (const row of batch.rows) {
      if (row.op === 'DELETE' || !row.payload) continue;
      const cols = Object.keys(row.payload).join('\u0000');
      const g = groups.get(cols);
      if (g) g.push(row);
      else groups.set(cols, [row]);
    }
    for (let rows of groups.values()) {
      const first = rows[0] as ChangeEvent;
      const columns = Object.keys(first.payload ?? {});
      const keyColumns = Object.keys(first.key);
      this.checkColumns(target, columns, keyColumns);
      if (rows.some((r) => (r.unchanged?.length ?? 0) > 0)) {
        const skip = skippableWithoutStoredValues(await this.absentRows(c, target, keyColumns, rows.filter((r) => (r.unchanged?.length ?? 0) > 0)));
        if (skip.size > 0) {
          counts.stale += skip.size;
          rows = rows.filter((r) => !skip.has(r));
          if (rows.length === 0) continue;
        }
      }
      const values: (string | number | null)[][] = columns.map((col) => rows.map((r) => (r.payload as Record<string, string | null>)[col] ?? null));
      values.push(rows.map((r) => rowKeyOf(r)));
      values.push(rows.map((r) => r.commit_lsn));
      values.push(rows.map((r) => r.seq));
      const threshold = this.options.copyThreshold ?? 0;
      let res: pg.QueryResult<{ k: string }>;
      if (threshold > 0 && rows.length >= threshold) {
        const stage = this.stage(target, columns);
        // Created if missing in the same round trip, inside the batch's transaction: no
        // per-connection state to lose to a rollback or a pooler that switches sessions.
        await copyFrom(c, `${stage.create}; COPY ${stage.name} FROM STDIN`, copyTextChunks(values, rows.length));
        res = await c.query<{ k: string }>(this.upsertSql(target, columns, keyColumns, stage.name), [tableLabel(target)]);
      } else {
        res = await c.query<{ k: string }>(this.upsertSql(target, columns, keyColumns), [...values, tableLabel(target)]);
      }
      const n = res.rowCount ?? 0;
      counts.applied += n;
      counts.stale += rows.length - n;
      if (this.options.staleAudit && n < rows.length) {
        const written = new Set(res.rows.map((r) => r.k));
        await this.auditStale(c, target, keyColumns, rows.filter((r) => !written.has(rowKeyOf(r))));
      }
    }
  }

  /**
   * Of `rows` (changes that left TOASTed values unchanged), those whose row the target lacks
   * and no newer delete or truncation makes stale: they have no stored value to keep (see
   * skippableWithoutStoredValues).
   */
  private async absentRows(c: pg.PoolClient, target: TargetTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const k = keyColumns.length;
    const match = keyColumns.map((col, i) => `t.${quoteIdent(col)} = i.k${i}::${(target.columns.get(col) as TargetColumn).castType}`).join(' AND ');
    const params: unknown[] = keyColumns.map((col) => rows.map((r) => r.key[col] ?? null));
    params.push(rows.map((r) => rowKeyOf(r)), rows.map((r) => r.commit_lsn), rows.map((r) => r.seq), tableLabel(target));
    const { rows: absent } = await c.query<{ n: number }>(
      `SELECT i.n::int AS n FROM unnest(${[...keyColumns.map((_, j) => `$${j + 1}::text[]`), `$${k + 1}::text[]`, `$${k + 2}::text[]`, `$${k + 3}::int[]`].join(', ')})
              WITH ORDINALITY AS i(${[...keyColumns.map((_, j) => `k${j}`), 'row_key', 'v_lsn', 'v_seq', 'n'].join(', ')})
        WHERE NOT EXISTS (SELECT 1 FROM ${target.qualified} t WHERE ${match})
          AND NOT EXISTS (SELECT 1 FROM ${this.state.tombstones} tb
                           WHERE tb.table_name = $${k + 4} AND tb.row_key = i.row_key AND (tb.lsn, tb.seq) >= (i.v_lsn::pg_lsn, i.v_seq))
          AND NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr
                           WHERE tr.table_name = $${k + 4} AND (tr.lsn, tr.seq) >= (i.v_lsn::pg_lsn, i.v_seq))`,
      params,
    );
    return absent.map((r) => rows[r.n - 1] as ChangeEvent);
  }

  /** The reconciliation record of `conflict_strategy: source_lsn_priority`: who won, and by how much. */
  private async auditStale(c: pg.PoolClient, target: TargetTable, keyColumns: string[], rejected: ChangeEvent[]): Promise<void> {
    const k = keyColumns.length;
    const match = keyColumns.map((col, i) => `t.${quoteIdent(col)} = i.k${i}::${(target.columns.get(col) as { castType: string }).castType}`).join(' AND ');
    const params: unknown[] = keyColumns.map((col) => rejected.map((r) => r.key[col] ?? null));
    params.push(rejected.map((r) => rowKeyOf(r)), rejected.map((r) => r.commit_lsn), rejected.map((r) => r.seq), rejected.map((r) => r.op), rejected.map((r) => JSON.stringify(r)), tableLabel(target));
    await c.query(
      `INSERT INTO ${this.state.staleAudit} (table_name, row_key, op, incoming_lsn, incoming_seq, stored_lsn, stored_seq, change)
       SELECT $${k + 6}, i.row_key, i.op, i.v_lsn::pg_lsn, i.v_seq, t.${V_LSN}, t.${V_SEQ}, i.change::jsonb
         FROM unnest(${[...keyColumns.map((_, j) => `$${j + 1}::text[]`), `$${k + 1}::text[]`, `$${k + 2}::text[]`, `$${k + 3}::int[]`, `$${k + 4}::text[]`, `$${k + 5}::text[]`].join(', ')})
              AS i(${[...keyColumns.map((_, j) => `k${j}`), 'row_key', 'v_lsn', 'v_seq', 'op', 'change'].join(', ')})
         LEFT JOIN ${target.qualified} t ON ${match}`,
      params,
    );
  }

  /**
   * The staging table for `target` with `columns`, a temporary table of the session: every
   * value as text (cast in the merge exactly as the `unnest` path casts), emptied at commit.
   */
  private stage(target: TargetTable, columns: string[]): { name: string; create: string } {
    const key = `${target.qualified}\u0001${columns.join('\u0000')}`;
    let stage = this.stages.get(key);
    if (!stage) {
      const name = `pg_temp.${quoteIdent(`syncline_stage_${this.stages.size + 1}`)}`;
      const cols = [...columns.map((_, i) => `c${i} text`), 'row_key text', 'v_lsn text', 'v_seq integer'];
      stage = { name, create: `CREATE TEMPORARY TABLE IF NOT EXISTS ${name} (${cols.join(', ')}) ON COMMIT DELETE ROWS` };
      this.stages.set(key, stage);
    }
    return stage;
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

  private async delete(c: pg.PoolClient, target: TargetTable, batch: TableBatch, counts: { applied: number; stale: number }): Promise<void> {
    const rows = batch.rows.filter((r) => r.op === 'DELETE');
    if (rows.length === 0) return;
    const keyColumns = Object.keys((rows[0] as ChangeEvent).key);
    this.checkColumns(target, [], keyColumns);
    const k = keyColumns.length;
    const soft = this.options.deleteMode === 'soft';
    const match = keyColumns.map((col, i) => `t.${quoteIdent(col)} = i.k${i}::${(target.columns.get(col) as { castType: string }).castType}`).join(' AND ');
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
    params.push(tableLabel(target));
    const res = await c.query<{ tombstoned: number; removed: number }>(sql, params);
    // Applied means the row went away now. A tombstone written for a row that was already
    // absent (a replay whose first run folded the delete into a later re-insert) changes
    // nothing visible, so it counts as stale like any other replayed change.
    const n = res.rows[0]?.removed ?? 0;
    counts.applied += n;
    counts.stale += rows.length - n;
  }

  private async truncate(c: pg.PoolClient, target: TargetTable, change: ChangeEvent, counts: { applied: number; stale: number }): Promise<void> {
    const res = await c.query(
      `INSERT INTO ${this.state.truncations} AS tr (table_name, lsn, seq) VALUES ($1, $2::pg_lsn, $3)
       ON CONFLICT (table_name) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq
       WHERE (tr.lsn, tr.seq) < (EXCLUDED.lsn, EXCLUDED.seq)`,
      [tableLabel(target), change.commit_lsn, change.seq],
    );
    if ((res.rowCount ?? 0) === 0) {
      counts.stale += 1;
      return;
    }
    // Rows older than the truncation go; newer ones (applied from other partitions) stay.
    await c.query(`DELETE FROM ${target.qualified} t WHERE ${ROW_VERSION} < ($1::pg_lsn, $2)`, [change.commit_lsn, change.seq]);
    counts.applied += 1;
  }

  /** Throws when the target lacks a column, or (`keyColumns` given) has another primary key than the source. */
  private checkColumns(target: TargetTable, columns: string[], keyColumns: string[] | undefined): void {
    const missing = [...new Set([...columns, ...(keyColumns ?? [])])].filter((c) => !target.columns.has(c));
    if (missing.length > 0) {
      throw new PrerequisiteError(
        `target table ${tableLabel(target)} lacks column(s) ${missing.join(', ')}`,
        `ALTER TABLE ${target.qualified} ${missing.map((m) => `ADD COLUMN ${quoteIdent(m)} <type>`).join(', ')}`,
      );
    }
    // A keyless table (a multiset) needs no key at the target: rows are matched whole.
    if (!keyColumns) return;
    const pk = [...target.primaryKey].sort().join(',');
    if (pk !== [...keyColumns].sort().join(',')) {
      throw new PrerequisiteError(
        `target table ${tableLabel(target)} has primary key (${target.primaryKey.join(', ') || 'none'}) but the source key is (${keyColumns.join(', ')})`,
        `give the target the same primary key: ALTER TABLE ${target.qualified} ADD PRIMARY KEY (${keyColumns.map(quoteIdent).join(', ')})`,
      );
    }
  }
}

/** Every column a keyless table's changes in the batch name (new and old images). */
function multisetColumns(batch: TableBatch): string[] {
  const columns = new Set<string>();
  for (const c of batch.multiset) {
    for (const col in c.payload ?? {}) columns.add(col);
    for (const col in c.before ?? {}) columns.add(col);
  }
  return [...columns];
}

function tableLabel(t: TargetTable): string {
  return `${t.schema}.${t.table}`;
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

/** SQLSTATE class 42 (undefined table/column, syntax): the target's structure, not a row, is wrong. */
function isStructural(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof PrerequisiteError || (typeof code === 'string' && code.startsWith('42'));
}

function classify(err: unknown, what: string): unknown {
  if (err instanceof SynclineError) return err;
  const code = (err as { code?: string } | null)?.code;
  if (isStructural(err)) {
    // Every change of the table would fail the same way: stop instead of dead-lettering them all.
    return new PrerequisiteError(`${what} failed: ${errorMessage(err)} (SQLSTATE ${code})`, 'fix the target table to match the source (columns, types, primary key), then restart');
  }
  return new SynclineError(`SINK_${code ?? 'ERROR'}`, `${what} failed: ${errorMessage(err)}${code ? ` (SQLSTATE ${code})` : ''}`, {
    retriable: isRetriablePgError(err),
    cause: err,
  });
}
