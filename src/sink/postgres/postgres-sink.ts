import pg from 'pg';
import { rowKeyOf, type ChangeEvent, type Row } from '../../core/change.js';
import { lazyJsonOf, lazyValuesOf } from '../../core/lazy-row.js';
import { PrerequisiteError, SynclineError } from '../../core/errors.js';
import { formatLsn, parseLsn, versionOf } from '../../core/lsn.js';
import { quoteIdent, quoteQualified, type TableName } from '../../core/sql.js';
import {
  bookkeepingTables,
  CLOCK_COLUMN,
  DELETED_AT_COLUMN,
  SOURCE_COLUMN,
  VERSION_LSN_COLUMN,
  VERSION_SEQ_COLUMN,
  WRITER_XID_COLUMN,
  type BookkeepingTables,
} from '../sql/bookkeeping.js';
import type { ConflictRecord, Deletion, MultisetVersions, SqlDialect, StoredRow, TombstoneCounters } from '../sql/sql-dialect.js';
import { SqlSink, type ConflictOptions } from '../sql/sql-sink.js';
import type { RecordedColumn, SchemaStep, TargetColumnShape } from '../../core/schema-evolution.js';
import type { SchemaEvolution } from '../sql/schema-evolver.js';
import { copyField, copyFrom, CopyText } from './copy-in.js';
import { CopyStages } from './copy-stage.js';
import { classifyPgError, isStructuralPgError } from './postgres-errors.js';
import { auditStale, staleAuditDdl } from './stale-audit.js';
import { castText, fromStage, keyMatch, loadTargetTable, storedText, type TargetColumn, type TargetTable } from './table-meta.js';
import { serializedDdl, STATE_DDL_LOCK } from '../../postgres/serialized-ddl.js';
import { installTriggers, localClock, MARK_APPLYING } from './local-writes.js';

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
  /**
   * `sink.origin`: the replication origin every write carries (created when missing), so a
   * capture of this database with `source.skip_origins` drops them. An origin is held by one
   * session at a time: the sink then writes over a single connection.
   */
  origin?: string;
  /** Conflict tracking between writers: rows record their writing source (see ConflictOptions). */
  conflicts?: ConflictOptions;
  /** `sink.schema_evolution`: the target follows the source's definitions. */
  evolution?: SchemaEvolution;
  /**
   * `sink.apply_lanes`: batches applied at once, each on its own connection (see
   * Sink.applyLanes). One with `origin` (a single session) or conflict tracking (its
   * resolver reads rows other writers share). Default 1.
   */
  applyLanes?: number;
  /**
   * Conflict tracking: the target tables (besides those it already tracks, and those it meets
   * later) whose application's deletes to record from the start (see local-writes.ts).
   */
  trackedTables?: readonly TableName[];
  /**
   * Conflict tracking: how often (ms) the sink looks at a tracked table's triggers again when
   * it applies to it (partitions attached since get theirs); default 60000.
   */
  recheckTriggersMs?: number;
  /** Where a problem the sink works on through is told (a trigger it may not create); default: process warnings. */
  warn?: (message: string, details: Record<string, unknown>) => void;
  /**
   * The generated columns of a target table's source table, under their target names (see
   * generatedColumns): one the target keeps as a plain column is never written, and the sink
   * warns about it once when it first reads the table.
   */
  sourceGenerated?: (schema: string, table: string) => Promise<readonly { column: string; expression: string }[]>;
}

const V_LSN = quoteIdent(VERSION_LSN_COLUMN);
const V_SEQ = quoteIdent(VERSION_SEQ_COLUMN);
/** A row's stored version; rows written before syncline managed the table count as oldest. */
const ROW_VERSION = `(COALESCE(t.${V_LSN}, '0/0'::pg_lsn), COALESCE(t.${V_SEQ}, 0))`;
const W_SOURCE = quoteIdent(SOURCE_COLUMN);
const W_CLOCK = quoteIdent(CLOCK_COLUMN);
const W_XID = quoteIdent(WRITER_XID_COLUMN);
/** The row was written at the target since syncline wrote it (or syncline never did): its xmin is not syncline's transaction. */
const LOCALLY_WRITTEN = `(t.${W_XID} IS NULL OR t.xmin::text::bigint <> t.${W_XID})`;
/** This transaction's xid as a row's xmin shows it (32 bits). */
const CURRENT_XID = `(pg_current_xact_id()::text::bigint % 4294967296)`;
/**
 * Every insert into a target table writes the source's values into identity columns too: a
 * target made like the source (pg_dump --schema-only) has `GENERATED ALWAYS AS IDENTITY`
 * keys, which refuse an inserted value without this (SQLSTATE 428C9, and the table was held
 * as if it did not fit). Without identity columns the clause changes nothing.
 */
const OVERRIDING = 'OVERRIDING SYSTEM VALUE';

/**
 * PostgreSQL target. Each batch is one transaction (see SqlSink): set-based `unnest` upserts
 * per table (or COPY into a staging table, see `copy-stage.ts`), deletes with tombstones,
 * truncations as watermarks, and the consumer positions. Every write is gated on the row's
 * stored version (commit LSN, seq), so replays change nothing.
 */
export class PostgresSink extends SqlSink<pg.PoolClient, TargetTable> {
  readonly applyLanes: number;
  /** Upserts pass lazy rows on as their text (stagedRows, payloadColumns); conflict tracking reads every row. */
  readonly lazyPayloads: boolean;

  constructor(options: PostgresSinkOptions) {
    const lanes = options.origin !== undefined || options.conflicts ? 1 : Math.max(1, options.applyLanes ?? 1);
    super(new PostgresDialect(options, lanes), options.conflicts, options.evolution);
    this.applyLanes = lanes;
    this.lazyPayloads = !options.conflicts;
  }
}

class PostgresDialect implements SqlDialect<pg.PoolClient, TargetTable> {
  readonly name = 'the sink';
  readonly trackLocalWritesEveryMs: number;
  private readonly pool: pg.Pool;
  private readonly state: BookkeepingTables & { staleAudit: string };
  /** track_commit_timestamp is on: a row written at the target has a known commit time. */
  private commitTimestamps = false;
  private readonly sqlCache = new Map<string, string>();
  private readonly stages = new CopyStages();
  /** Tables whose source's generated columns were looked at (see warnUncarried): once each. */
  private readonly checkedGenerated = new Set<string>();
  /** Tables whose triggers the sink may not create, warned about once (see trackLocalWrites). */
  private readonly refusedTriggers = new Set<string>();

  constructor(
    private readonly options: PostgresSinkOptions,
    lanes: number,
  ) {
    // A connection per apply lane.
    this.pool = new pg.Pool({ connectionString: options.url, max: options.origin !== undefined ? 1 : Math.max(options.poolSize ?? 2, lanes) });
    // An idle pooled connection that dies must not crash the process; the next query reconnects.
    this.pool.on('error', () => undefined);
    const s = options.stateSchema;
    this.state = { ...bookkeepingTables((t) => quoteQualified(s, t)), staleAudit: quoteQualified(s, 'stale_audit') };
    this.trackLocalWritesEveryMs = options.recheckTriggersMs ?? 60_000;
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
      if (this.options.origin !== undefined && !originSessions.has(client)) {
        await setUpOrigin(client, this.options.origin);
        originSessions.add(client);
      }
      return await fn(client);
    } catch (err) {
      throw classifyPgError(err, what);
    } finally {
      // A broken connection leaves the pool instead of serving the next batch.
      client.release(brokenClients.get(client));
    }
  }

  async createBookkeeping(c: pg.PoolClient): Promise<void> {
    await serializedDdl(c, STATE_DDL_LOCK, () => this.createBookkeepingTables(c));
    if (this.options.conflicts) await this.trackKnownTables(c);
  }

  /**
   * Records the application's deletes (see local-writes.ts) from the start in the tables the
   * config names and those syncline already tracks (they have the writer columns), not only
   * once a change of theirs arrives.
   */
  private async trackKnownTables(c: pg.PoolClient): Promise<void> {
    const { rows } = await c.query<{ schema: string; table: string }>(
      `SELECT n.nspname AS schema, r.relname AS table FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
        WHERE r.relkind IN ('r', 'p') AND NOT r.relispartition AND n.nspname <> $1
          AND (EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = r.oid AND a.attname = $2 AND NOT a.attisdropped)
               OR (n.nspname, r.relname) IN (SELECT * FROM unnest($3::text[], $4::text[])))`,
      [this.options.stateSchema, SOURCE_COLUMN, (this.options.trackedTables ?? []).map((t) => t.schema), (this.options.trackedTables ?? []).map((t) => t.table)],
    );
    for (const r of rows) {
      const target = await this.loadTable(c, r.schema, r.table);
      await this.trackLocalWrites(c, target, undefined);
    }
  }

  async trackLocalWrites(c: pg.PoolClient, target: TargetTable, keyColumns: readonly string[] | undefined): Promise<void> {
    const cf = this.options.conflicts;
    if (!cf || target.primaryKey.length === 0) return;
    // The row key's order (the source's); the target's own when the batch does not tell it.
    const told = keyColumns !== undefined && [...keyColumns].sort().join('\u0000') === [...target.primaryKey].sort().join('\u0000');
    const keys = told ? keyColumns : target.primaryKey;
    const counters = (cf.deltaColumns.get(target.label) ?? []).filter((col) => target.columns.has(col));
    const refused = await installTriggers(c, { target, stateSchema: this.options.stateSchema, localSource: cf.localSource, keyColumns: keys, keyOrderKnown: told, counters });
    if (refused && !this.refusedTriggers.has(target.label)) {
      this.refusedTriggers.add(target.label);
      this.warn(`conflict tracking: the sink may not create the triggers that record deletes made at the target in ${target.label}; without them a late write of another side can bring back a row deleted here`, {
        table: target.label,
        err: refused.reason,
        fix: `run as the table's owner or a superuser: ${refused.sql}`,
      });
    }
  }

  private warn(message: string, details: Record<string, unknown>): void {
    if (this.options.warn) this.options.warn(message, details);
    else process.emitWarning(`${message} (${JSON.stringify(details)})`);
  }

  private async createBookkeepingTables(c: pg.PoolClient): Promise<void> {
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
    if (this.options.conflicts) {
      // Tombstones of different sources do not compare by LSN: each names its source.
      await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.conflicts} (
        id bigserial PRIMARY KEY, detected_at timestamptz NOT NULL DEFAULT now(),
        table_name text NOT NULL, row_key text NOT NULL, strategy text NOT NULL, winner text NOT NULL,
        incoming_source text NOT NULL, stored_source text NOT NULL,
        incoming_lsn pg_lsn NOT NULL, incoming_seq integer NOT NULL, incoming_commit_ts timestamptz,
        incoming_clock text, stored_clock text, incoming_version jsonb, stored_version jsonb, written jsonb,
        UNIQUE (table_name, row_key, incoming_source, incoming_lsn, incoming_seq))`);
      // The version a winning write replaced: a republished change of that source at or
      // below it must not bring the row back (see insertParts).
      await c.query(`ALTER TABLE ${this.state.conflicts} ADD COLUMN IF NOT EXISTS stored_lsn pg_lsn, ADD COLUMN IF NOT EXISTS stored_seq integer`);
      await c.query(`CREATE INDEX IF NOT EXISTS conflicts_replaced ON ${this.state.conflicts} (table_name, row_key, stored_source) WHERE winner = 'incoming' AND stored_lsn IS NOT NULL`);
      // Tombstones per source: one source's delete never replaces another's (each gates its own
      // source's replays; another source's write is decided against it, see readDeletions),
      // with the delete's commit time.
      await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.sourceTombstones} (
        table_name text NOT NULL, row_key text NOT NULL, source text NOT NULL, lsn pg_lsn NOT NULL, seq integer NOT NULL,
        clock timestamptz, deleted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, row_key, source))`);
      // Deletes made at the target itself (local-writes.ts): the deleting transaction (its commit
      // time is the clock, when the server keeps them), the deleted row's delta counters, and the
      // version syncline had written to it (which source's changes up to it are settled).
      await c.query(`ALTER TABLE ${this.state.sourceTombstones} ADD COLUMN IF NOT EXISTS xid bigint, ADD COLUMN IF NOT EXISTS counters jsonb,
                       ADD COLUMN IF NOT EXISTS replaced_source text, ADD COLUMN IF NOT EXISTS replaced_lsn pg_lsn, ADD COLUMN IF NOT EXISTS replaced_seq integer`);
      // Watermarks per source: LSNs of different sources do not compare (see truncateTracked).
      // `clock`: the commit time of the source's own newest truncation (readTruncations); NULL
      // while the row only holds what other sources' truncations removed of it.
      await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.sourceTruncations} (
        table_name text NOT NULL, source text NOT NULL, lsn pg_lsn NOT NULL, seq integer NOT NULL, clock timestamptz, PRIMARY KEY (table_name, source))`);
      await c.query(`ALTER TABLE ${this.state.sourceTruncations} ADD COLUMN IF NOT EXISTS clock timestamptz, ADD COLUMN IF NOT EXISTS xid bigint`);
      await c.query(`CREATE TABLE IF NOT EXISTS ${this.state.sourceMultisetVersions} (
        table_name text NOT NULL, source text NOT NULL, lsn pg_lsn NOT NULL, seq integer NOT NULL, reset boolean NOT NULL DEFAULT false, PRIMARY KEY (table_name, source))`);
      const { rows } = await c.query<{ on: boolean }>(`SELECT current_setting('track_commit_timestamp')::boolean AS on`);
      this.commitTimestamps = rows[0]?.on === true;
    }
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

  async loadTable(c: pg.PoolClient, schema: string, table: string): Promise<TargetTable> {
    const target = await loadTargetTable(c, schema, table, this.options.deleteMode === 'soft', this.options.createTable, this.options.conflicts !== undefined);
    // Not awaited: asking the source must not hold the first batch (nor a source that does not answer, apply).
    if (this.options.sourceGenerated && !this.checkedGenerated.has(target.label)) {
      this.checkedGenerated.add(target.label);
      this.warnUncarried(schema, table, target).catch(() => undefined);
    }
    return target;
  }

  /** Warns about the target's plain copies of generated source columns (see PostgresSinkOptions.sourceGenerated). */
  private async warnUncarried(schema: string, table: string, target: TargetTable): Promise<void> {
    const generated = (await this.options.sourceGenerated?.(schema, table)) ?? [];
    const plain = generated.filter((g) => target.columns.get(g.column)?.assignable === true);
    if (plain.length === 0) return;
    this.warn(
      `column(s) ${plain.map((g) => g.column).join(', ')} of ${target.label}: generated at the source, a plain column at the target; PostgreSQL's logical decoding does not send generated columns, so they are never written (NULL) and verify reports the rows as different`,
      {
        table: target.label,
        columns: plain.map((g) => g.column),
        fix: `declare them GENERATED ALWAYS AS (...) STORED at the target too (${plain.map((g) => `${g.column} GENERATED ALWAYS AS ${g.expression} STORED`).join(', ')}), or drop the column at the target`,
      },
    );
  }

  async begin(c: pg.PoolClient, changes: readonly ChangeEvent[]): Promise<void> {
    // The triggers that record the application's deletes skip the sink's (local-writes.ts).
    await c.query(`BEGIN; ${MARK_APPLYING}`);
    if (this.options.origin === undefined) return;
    // The origin's progress becomes the newest source commit of the batch, crash-safe with it.
    let newest: ChangeEvent | undefined;
    for (const ch of changes) if (!newest || parseLsn(ch.commit_lsn) > parseLsn(newest.commit_lsn)) newest = ch;
    if (newest) await c.query('SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz)', [newest.commit_lsn, newest.commit_ts]);
  }

  async commit(c: pg.PoolClient): Promise<void> {
    await c.query('COMMIT');
  }

  async rollback(c: pg.PoolClient): Promise<void> {
    await c.query('ROLLBACK');
  }

  async truncate(c: pg.PoolClient, target: TargetTable, change: ChangeEvent): Promise<boolean> {
    if (this.options.conflicts) return this.truncateTracked(c, target, change);
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

  /**
   * Conflict tracking: the watermark is the source's own (an LSN of one server says nothing
   * about another's), so it gates that source's older changes only. The table is emptied as
   * at the source, as pglogical and Spock replicate a TRUNCATE, except for the rows written
   * after it: the source's own newer versions (applied from other partitions), and other
   * writers' rows whose commit time is later than the truncation's (a write the source had
   * not seen when it truncated; its time unknown: it goes).
   */
  private async truncateTracked(c: pg.PoolClient, target: TargetTable, change: ChangeEvent): Promise<boolean> {
    const res = await c.query(
      `INSERT INTO ${this.state.sourceTruncations} AS tr (table_name, source, lsn, seq, clock) VALUES ($1, $2, $3::pg_lsn, $4, $5::timestamptz)
       ON CONFLICT (table_name, source) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, clock = EXCLUDED.clock
       WHERE (tr.lsn, tr.seq) < (EXCLUDED.lsn, EXCLUDED.seq)`,
      [target.label, change.source, change.commit_lsn, change.seq, change.commit_ts],
    );
    if ((res.rowCount ?? 0) === 0) return false;
    const localClock = this.commitTimestamps ? 'pg_xact_commit_timestamp(t.xmin)' : 'NULL::timestamptz';
    // The versions of other sources it removed become their watermarks too: republished, those
    // changes must not bring the rows back (their later changes have later versions).
    await c.query(
      `WITH removed AS (
         DELETE FROM ${target.qualified} t
          WHERE CASE WHEN NOT ${LOCALLY_WRITTEN} AND t.${W_SOURCE} = $1 THEN ${ROW_VERSION} < ($2::pg_lsn, $3)
                     WHEN ${LOCALLY_WRITTEN} THEN coalesce(${localClock} <= $4::timestamptz, true)
                     ELSE coalesce(t.${W_CLOCK} <= $4::timestamptz, true) END
          RETURNING t.${W_SOURCE} AS source, t.${V_LSN} AS lsn, t.${V_SEQ} AS seq),
       newest AS (
         SELECT DISTINCT ON (source) source, lsn, seq FROM removed
          WHERE source IS NOT NULL AND source <> $1 AND lsn IS NOT NULL ORDER BY source, lsn DESC, seq DESC)
       INSERT INTO ${this.state.sourceTruncations} AS tr (table_name, source, lsn, seq) SELECT $5, source, lsn, seq FROM newest
       ON CONFLICT (table_name, source) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq
       WHERE (tr.lsn, tr.seq) < (EXCLUDED.lsn, EXCLUDED.seq)`,
      [change.source, change.commit_lsn, change.seq, change.commit_ts, target.label],
    );
    return true;
  }

  /** The tombstone gate of a change `i` (its table `label`, i.row_key, version i.v_lsn/i.v_seq, source i.w_source): a newer delete of the key (tracked: of its source). */
  private tombstoneGate(label: string): string {
    if (this.options.conflicts) {
      return `NOT EXISTS (SELECT 1 FROM ${this.state.sourceTombstones} tb
                           WHERE tb.table_name = ${label} AND tb.row_key = i.row_key AND tb.source = i.w_source AND (tb.lsn, tb.seq) >= (i.v_lsn::pg_lsn, i.v_seq))`;
    }
    return `NOT EXISTS (SELECT 1 FROM ${this.state.tombstones} tb
                           WHERE tb.table_name = ${label} AND tb.row_key = i.row_key AND (tb.lsn, tb.seq) >= (i.v_lsn::pg_lsn, i.v_seq))`;
  }

  /** The truncation gate of a change `i` (its table `label`, version i.v_lsn/i.v_seq, source i.w_source): a newer truncation of its source. */
  private truncationGate(label: string): string {
    if (this.options.conflicts) {
      return `NOT EXISTS (SELECT 1 FROM ${this.state.sourceTruncations} tr
                           WHERE tr.table_name = ${label} AND tr.source = i.w_source AND (tr.lsn, tr.seq) >= (i.v_lsn::pg_lsn, i.v_seq))`;
    }
    return `NOT EXISTS (SELECT 1 FROM ${this.state.truncations} tr
                           WHERE tr.table_name = ${label} AND (tr.lsn, tr.seq) >= (i.v_lsn::pg_lsn, i.v_seq))`;
  }

  async absentRows(c: pg.PoolClient, target: TargetTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const k = keyColumns.length;
    const params: unknown[] = keyColumns.map((col) => rows.map((r) => r.key[col] ?? null));
    params.push(rows.map((r) => rowKeyOf(r)), rows.map((r) => r.commit_lsn), rows.map((r) => r.seq), target.label, rows.map((r) => r.source));
    const { rows: absent } = await c.query<{ n: number }>(
      `SELECT i.n::int AS n FROM unnest(${[...keyColumns.map((_, j) => `$${j + 1}::text[]`), `$${k + 1}::text[]`, `$${k + 2}::text[]`, `$${k + 3}::int[]`, `$${k + 5}::text[]`].join(', ')})
              WITH ORDINALITY AS i(${[...keyColumns.map((_, j) => `k${j}`), 'row_key', 'v_lsn', 'v_seq', 'w_source', 'n'].join(', ')})
        WHERE NOT EXISTS (SELECT 1 FROM ${target.qualified} t WHERE ${keyMatch(target, keyColumns)})
          AND ${this.tombstoneGate(`$${k + 4}`)}
          AND ${this.truncationGate(`$${k + 4}`)}`,
      params,
    );
    return absent.map((r) => rows[r.n - 1] as ChangeEvent);
  }

  async upsert(c: pg.PoolClient, target: TargetTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const threshold = this.options.copyThreshold ?? 0;
    let res: pg.QueryResult<{ k: string }>;
    // Conflict tracking writes through `unnest` (the staging table has no writer columns).
    if (threshold > 0 && rows.length >= threshold && !this.options.conflicts) {
      const stage = this.stages.of(target, columns);
      await copyFrom(c, `${stage.create}; COPY ${stage.name} FROM STDIN`, stagedRows(columns, rows));
      res = await c.query<{ k: string }>(this.upsertSql(target, columns, keyColumns, stage.name), [target.label]);
    } else {
      const values = payloadColumns(columns, rows);
      values.push(rows.map((r) => rowKeyOf(r)));
      values.push(rows.map((r) => r.commit_lsn));
      values.push(rows.map((r) => r.seq));
      if (this.options.conflicts) values.push(rows.map((r) => r.source), rows.map((r) => r.commit_ts));
      res = await c.query<{ k: string }>(this.upsertSql(target, columns, keyColumns), [...values, target.label]);
    }
    const n = res.rowCount ?? 0;
    if (this.options.staleAudit && n < rows.length) {
      const written = new Set(res.rows.map((r) => r.k));
      await auditStale(c, this.state.staleAudit, target, keyColumns, rows.filter((r) => !written.has(rowKeyOf(r))));
    }
    return n;
  }

  async olderStored(c: pg.PoolClient, target: TargetTable, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const k = keyColumns.length;
    const params: unknown[] = keyColumns.map((col) => rows.map((r) => r.key[col] ?? null));
    params.push(rows.map((r) => r.commit_lsn), rows.map((r) => r.seq));
    // A soft-deleted row is deleted: the upsert revives it.
    const soft = this.options.deleteMode === 'soft' ? ` AND t.${quoteIdent(DELETED_AT_COLUMN)} IS NULL` : '';
    const { rows: older } = await c.query<{ n: number }>(
      `SELECT i.n::int AS n FROM unnest(${[...keyColumns.map((_, j) => `$${j + 1}::text[]`), `$${k + 1}::text[]`, `$${k + 2}::int[]`].join(', ')})
              WITH ORDINALITY AS i(${[...keyColumns.map((_, j) => `k${j}`), 'v_lsn', 'v_seq', 'n'].join(', ')})
        WHERE EXISTS (SELECT 1 FROM ${target.qualified} t WHERE ${keyMatch(target, keyColumns)} AND ${ROW_VERSION} < (i.v_lsn::pg_lsn, i.v_seq)${soft})`,
      params,
    );
    return older.map((r) => rows[r.n - 1] as ChangeEvent);
  }

  async insertAbsent(c: pg.PoolClient, target: TargetTable, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]> {
    const values: (string | number | null)[][] = columns.map((col) => rows.map((r) => (r.payload as Row)[col] ?? null));
    values.push(rows.map((r) => rowKeyOf(r)), rows.map((r) => r.commit_lsn), rows.map((r) => r.seq), rows.map((r) => r.source), rows.map((r) => r.commit_ts));
    const res = await c.query<{ n: number }>(this.insertAbsentSql(target, columns, keyColumns), [...values, target.label]);
    const inserted = new Set(res.rows.map((r) => r.n));
    return rows.filter((_, i) => !inserted.has(i + 1));
  }

  /** The version-gated upsert from `unnest` of array parameters, or from `stage` when given. */
  private upsertSql(target: TargetTable, columns: string[], keyColumns: string[], stage?: string): string {
    const cacheKey = `u\u0001${target.qualified}\u0001${columns.join('\u0000')}\u0001${stage ?? ''}`;
    const cached = this.sqlCache.get(cacheKey);
    if (cached) return cached;
    const p = this.insertParts(target, columns, stage);
    const soft = this.options.deleteMode === 'soft';
    const tracked = this.options.conflicts !== undefined;
    // Key columns are assigned too: a key the target calls equal may be spelled otherwise at
    // the source (citext 'KEY1' / 'key1', numeric 1.00 / 1.0000), and a respelling UPDATE is a
    // DELETE of the old spelling and an INSERT of the new one in different stream partitions,
    // so the INSERT may meet the old row first; without this the row kept the old spelling
    // for good (the DELETE is then stale). An identical value keeps the update HOT. Identity
    // ALWAYS and generated columns refuse assignment (and cannot be respelled: integers).
    const assigned = columns.filter((c) => !keyColumns.includes(c) || target.columns.get(c)?.assignable !== false);
    const updates = [...assigned.map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`), `${V_LSN} = EXCLUDED.${V_LSN}`, `${V_SEQ} = EXCLUDED.${V_SEQ}`];
    if (soft) updates.push(`${quoteIdent(DELETED_AT_COLUMN)} = NULL`);
    if (tracked) updates.push(...[W_SOURCE, W_CLOCK, W_XID].map((col) => `${col} = EXCLUDED.${col}`));
    // Tracked: a row of another writer reaches the upsert only when the resolver let the
    // change win (SqlSink.resolveConflicts, under the rows' locks); versions of different
    // writers are not comparable, so only a row of the same source is gated on its version.
    const rowGate = tracked ? `(t.${W_SOURCE} IS DISTINCT FROM EXCLUDED.${W_SOURCE} OR ${LOCALLY_WRITTEN} OR ${ROW_VERSION} < (EXCLUDED.${V_LSN}, EXCLUDED.${V_SEQ}))` : `${ROW_VERSION} < (EXCLUDED.${V_LSN}, EXCLUDED.${V_SEQ})`;
    const sql =
      `INSERT INTO ${target.qualified} AS t (${p.insertCols.join(', ')}) ${OVERRIDING}
       SELECT ${p.selectExprs.join(', ')}
         FROM ${p.from}
        ${p.where}
       ON CONFLICT (${keyColumns.map(quoteIdent).join(', ')}) DO UPDATE SET ${updates.join(', ')}` +
      (this.options.versionGate ? `\n       WHERE ${rowGate}` : '') +
      // With the audit on, the written keys come back so the rejected ones can be recorded.
      (this.options.staleAudit ? `\n       RETURNING to_json(ARRAY[${keyColumns.map((c) => `t.${quoteIdent(c)}::text`).join(', ')}])::text AS k` : '');
    this.sqlCache.set(cacheKey, sql);
    return sql;
  }

  /** Conflict tracking's insert of keys read absent: never over a row; returns the ordinals (1-based) inserted. */
  private insertAbsentSql(target: TargetTable, columns: string[], keyColumns: string[]): string {
    const cacheKey = `a\u0001${target.qualified}\u0001${columns.join('\u0000')}`;
    const cached = this.sqlCache.get(cacheKey);
    if (cached) return cached;
    const p = this.insertParts(target, columns, undefined, true);
    const match = keyColumns.map((k) => `t.${quoteIdent(k)} = ${p.cast(k, columns.indexOf(k))}`).join(' AND ');
    const sql = `WITH i AS (SELECT * FROM ${p.from}),
      ins AS (INSERT INTO ${target.qualified} AS t (${p.insertCols.join(', ')}) ${OVERRIDING}
              SELECT ${p.selectExprs.join(', ')} FROM i
               ${p.where}
              ON CONFLICT (${keyColumns.map(quoteIdent).join(', ')}) DO NOTHING
              RETURNING ${keyColumns.map((k) => `t.${quoteIdent(k)}`).join(', ')})
      SELECT i.n::int AS n FROM i JOIN ins t ON ${match}`;
    this.sqlCache.set(cacheKey, sql);
    return sql;
  }

  /**
   * What the upsert and the insert of absent keys share: the inserted columns and values from
   * `unnest` of array parameters (or `stage`; `numbered`: with the ordinal `n`), and the
   * version gate on tombstones and truncations (or just the label parameter, ungated).
   */
  private insertParts(target: TargetTable, columns: string[], stage?: string, numbered = false) {
    const n = columns.length;
    const soft = this.options.deleteMode === 'soft';
    // Staged values already have the column's type (see copy-stage.ts).
    const cast = (col: string, i: number): string => (stage ? fromStage : castText)(target.columns.get(col) as TargetColumn, `i.c${i}`);
    const tracked = this.options.conflicts !== undefined;
    const insertCols = [...columns.map(quoteIdent), V_LSN, V_SEQ, ...(soft ? [quoteIdent(DELETED_AT_COLUMN)] : []), ...(tracked ? [W_SOURCE, W_CLOCK, W_XID] : [])];
    const selectExprs = [...columns.map(cast), 'i.v_lsn::pg_lsn', 'i.v_seq', ...(soft ? ['NULL'] : []), ...(tracked ? ['i.w_source', 'i.w_clock::timestamptz', CURRENT_XID] : [])];
    const unnestArgs = [...columns.map((_, i) => `$${i + 1}::text[]`), `$${n + 1}::text[]`, `$${n + 2}::text[]`, `$${n + 3}::int[]`, ...(tracked ? [`$${n + 4}::text[]`, `$${n + 5}::text[]`] : [])];
    const aliases = [...columns.map((_, i) => `c${i}`), 'row_key', 'v_lsn', 'v_seq', ...(tracked ? ['w_source', 'w_clock'] : []), ...(numbered ? ['n'] : [])];
    const from = stage ? `${stage} AS i` : `unnest(${unnestArgs.join(', ')})${numbered ? ' WITH ORDINALITY' : ''} AS i(${aliases.join(', ')})`;
    const label = stage ? '$1' : `$${n + (tracked ? 6 : 4)}`;
    const where = this.options.versionGate
      ? `WHERE ${this.tombstoneGate(label)}
          AND ${this.truncationGate(label)}` +
        // Tracked: a version another writer's winning write replaced (a delete included) stays
        // replaced: its change, republished after a capture restart, is stale.
        (tracked
          ? `
          AND NOT EXISTS (SELECT 1 FROM ${this.state.conflicts} cf
                           WHERE cf.table_name = ${label} AND cf.row_key = i.row_key AND cf.stored_source = i.w_source AND cf.winner = 'incoming'
                             AND cf.stored_lsn IS NOT NULL AND (cf.stored_lsn, cf.stored_seq) >= (i.v_lsn::pg_lsn, i.v_seq))`
          : '')
      : `WHERE ${label}::text IS NOT NULL`;
    return { insertCols, selectExprs, from, where, cast };
  }

  async delete(c: pg.PoolClient, target: TargetTable, keyColumns: string[], rows: ChangeEvent[]): Promise<number> {
    const k = keyColumns.length;
    const soft = this.options.deleteMode === 'soft';
    const match = keyMatch(target, keyColumns);
    const tracked = this.options.conflicts !== undefined;
    // Tracked: the resolver already let a delete of another writer's row win (see upsertSql).
    const rowGate = tracked ? `(t.${W_SOURCE} IS DISTINCT FROM i.w_source OR ${LOCALLY_WRITTEN} OR ${ROW_VERSION} < (i.v_lsn::pg_lsn, i.v_seq))` : `${ROW_VERSION} < (i.v_lsn::pg_lsn, i.v_seq)`;
    const gate = this.options.versionGate ? ` AND ${rowGate}` : '';
    const removal = soft
      ? `UPDATE ${target.qualified} t SET ${quoteIdent(DELETED_AT_COLUMN)} = i.ts::timestamptz, ${V_LSN} = i.v_lsn::pg_lsn, ${V_SEQ} = i.v_seq` +
        (tracked ? `, ${W_SOURCE} = i.w_source, ${W_CLOCK} = i.ts::timestamptz, ${W_XID} = ${CURRENT_XID}` : '') +
        `
           FROM i WHERE ${match}${gate} RETURNING i.row_key`
      : `DELETE FROM ${target.qualified} t USING i WHERE ${match}${gate} RETURNING i.row_key`;
    // Tracked: each source keeps its own tombstone of the key (advanced only by its newer deletes).
    // Applied: a delete that removed (or marked) its row, or that advanced the tombstone of a key
    // with no row at the target and is newer than the table's truncation (the CTEs and the
    // final SELECT share one snapshot: the NOT EXISTS sees the target before the statement).
    // The others were refused by the gate: a replay, a newer row, tombstone or truncation.
    const sql = `WITH i AS (SELECT * FROM unnest(${[...keyColumns.map((_, j) => `$${j + 1}::text[]`), `$${k + 1}::text[]`, `$${k + 2}::text[]`, `$${k + 3}::int[]`, `$${k + 4}::text[]`, ...(tracked ? [`$${k + 6}::text[]`] : [])].join(', ')})
                     AS i(${[...keyColumns.map((_, j) => `k${j}`), 'row_key', 'v_lsn', 'v_seq', 'ts', ...(tracked ? ['w_source'] : [])].join(', ')})),
      tomb AS (${
        tracked
          ? `INSERT INTO ${this.state.sourceTombstones} AS tb (table_name, row_key, source, lsn, seq, clock)
               SELECT $${k + 5}, row_key, w_source, v_lsn::pg_lsn, v_seq, ts::timestamptz FROM i
               ON CONFLICT (table_name, row_key, source) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, clock = EXCLUDED.clock, deleted_at = now()`
          : `INSERT INTO ${this.state.tombstones} AS tb (table_name, row_key, lsn, seq)
               SELECT $${k + 5}, row_key, v_lsn::pg_lsn, v_seq FROM i
               ON CONFLICT (table_name, row_key) DO UPDATE SET lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, deleted_at = now()`
      }
               WHERE (tb.lsn, tb.seq) < (EXCLUDED.lsn, EXCLUDED.seq)
               RETURNING tb.row_key),
      removed AS (${removal})
      SELECT count(*)::int AS applied FROM i
       WHERE i.row_key IN (SELECT row_key FROM removed)
          OR (i.row_key IN (SELECT row_key FROM tomb)
              AND NOT EXISTS (SELECT 1 FROM ${target.qualified} t WHERE ${match})
              AND ${this.truncationGate(`$${k + 5}`)})`;
    const params: unknown[] = keyColumns.map((col) => rows.map((r) => r.key[col] ?? null));
    params.push(rows.map((r) => rowKeyOf(r)));
    params.push(rows.map((r) => r.commit_lsn));
    params.push(rows.map((r) => r.seq));
    params.push(rows.map((r) => r.commit_ts));
    params.push(target.label);
    if (tracked) params.push(rows.map((r) => r.source));
    const res = await c.query<{ applied: number }>(sql, params);
    return res.rows[0]?.applied ?? 0;
  }

  async readMultisetVersions(c: pg.PoolClient, label: string, source: string): Promise<MultisetVersions> {
    if (this.options.conflicts) {
      // Per source, as truncations (see truncateTracked).
      const seen = await c.query<{ lsn: string; seq: number; reset: boolean }>(`SELECT lsn::text, seq, reset FROM ${this.state.sourceMultisetVersions} WHERE table_name = $1 AND source = $2 FOR UPDATE`, [label, source]);
      const trunc = await c.query<{ lsn: string; seq: number }>(`SELECT lsn::text, seq FROM ${this.state.sourceTruncations} WHERE table_name = $1 AND source = $2`, [label, source]);
      return multisetVersions(seen.rows[0], trunc.rows[0]);
    }
    const seen = await c.query<{ lsn: string; seq: number; reset: boolean }>(`SELECT lsn::text, seq, reset FROM ${this.state.multisetVersions} WHERE table_name = $1 FOR UPDATE`, [label]);
    const trunc = await c.query<{ lsn: string; seq: number }>(`SELECT lsn::text, seq FROM ${this.state.truncations} WHERE table_name = $1`, [label]);
    return multisetVersions(seen.rows[0], trunc.rows[0]);
  }

  async insertRows(c: pg.PoolClient, target: TargetTable, columns: string[], changes: ChangeEvent[]): Promise<number> {
    const n = columns.length;
    // Tracked: a keyless row names its writer and time too (a truncation of another source keeps it when newer).
    const tracked = this.options.conflicts !== undefined;
    const params: unknown[] = columns.map((col) => changes.map((ch) => (ch.payload as Row)[col] ?? null));
    params.push(changes.map((ch) => ch.commit_lsn), changes.map((ch) => ch.seq));
    if (tracked) params.push(changes.map((ch) => ch.source), changes.map((ch) => ch.commit_ts));
    const cast = (col: string, i: number): string => castText(target.columns.get(col) as TargetColumn, `i.c${i}`);
    const res = await c.query(
      `INSERT INTO ${target.qualified} (${[...columns.map(quoteIdent), V_LSN, V_SEQ, ...(tracked ? [W_SOURCE, W_CLOCK, W_XID] : [])].join(', ')}) ${OVERRIDING}
       SELECT ${[...columns.map(cast), 'i.v_lsn::pg_lsn', 'i.v_seq', ...(tracked ? ['i.w_source', 'i.w_clock::timestamptz', CURRENT_XID] : [])].join(', ')}
         FROM unnest(${[...columns.map((_, i) => `$${i + 1}::text[]`), `$${n + 1}::text[]`, `$${n + 2}::int[]`, ...(tracked ? [`$${n + 3}::text[]`, `$${n + 4}::text[]`] : [])].join(', ')})
              AS i(${[...columns.map((_, i) => `c${i}`), 'v_lsn', 'v_seq', ...(tracked ? ['w_source', 'w_clock'] : [])].join(', ')})`,
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

  async writeMultisetVersion(c: pg.PoolClient, label: string, newest: ChangeEvent | undefined, reset: boolean, source: string): Promise<void> {
    if (this.options.conflicts) {
      await c.query(
        `INSERT INTO ${this.state.sourceMultisetVersions} AS v (table_name, source, lsn, seq, reset) VALUES ($1, $2, $3::pg_lsn, $4, $5)
         ON CONFLICT (table_name, source) DO UPDATE SET lsn = CASE WHEN $6 THEN EXCLUDED.lsn ELSE v.lsn END, seq = CASE WHEN $6 THEN EXCLUDED.seq ELSE v.seq END, reset = v.reset OR EXCLUDED.reset`,
        [label, source, newest?.commit_lsn ?? '0/0', newest?.seq ?? 0, reset, newest !== undefined],
      );
      return;
    }
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

  async readStored(c: pg.PoolClient, target: TargetTable, keyColumns: string[], rows: ChangeEvent[]): Promise<Map<string, StoredRow>> {
    const localClock = this.commitTimestamps ? 'pg_xact_commit_timestamp(t.xmin)::text' : 'NULL';
    const { rows: found } = await c.query<{ n: number; row: Row; source: string | null; local: boolean; clock: string | null; lsn: string | null; seq: number | null }>(
      `SELECT i.n::int AS n, (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each_text(to_jsonb(t)) e) AS row,
              t.${W_SOURCE} AS source, ${LOCALLY_WRITTEN} AS local,
              CASE WHEN ${LOCALLY_WRITTEN} THEN ${localClock} ELSE t.${W_CLOCK}::text END AS clock,
              t.${V_LSN}::text AS lsn, t.${V_SEQ} AS seq
         FROM unnest(${keyColumns.map((_, j) => `$${j + 1}::text[]`).join(', ')}) WITH ORDINALITY AS i(${[...keyColumns.map((_, j) => `k${j}`), 'n'].join(', ')})
         JOIN ${target.qualified} t ON ${keyMatch(target, keyColumns)}
          FOR UPDATE OF t`,
      keyColumns.map((col) => rows.map((r) => r.key[col] ?? null)),
    );
    const out = new Map<string, StoredRow>();
    for (const f of found) out.set(rowKeyOf(rows[f.n - 1] as ChangeEvent), { row: f.row, source: f.source, local: f.local, clock: f.clock, lsn: f.lsn, seq: f.seq });
    return out;
  }

  async readDeletions(c: pg.PoolClient, target: TargetTable, _keyColumns: string[], rows: ChangeEvent[]): Promise<Map<string, Deletion[]>> {
    const { rows: found } = await c.query<{ n: number; source: string; lsn: string; seq: number; clock: string | null; local: boolean; counters: Row | null }>(
      `SELECT i.n::int AS n, tb.source, tb.lsn::text AS lsn, tb.seq, (${localClock('tb', this.commitTimestamps)})::text AS clock, tb.xid IS NOT NULL AS local, tb.counters
         FROM unnest($1::text[]) WITH ORDINALITY AS i(row_key, n)
         JOIN ${this.state.sourceTombstones} tb ON tb.table_name = $2 AND tb.row_key = i.row_key
        ORDER BY 1, (${localClock('tb', this.commitTimestamps)}) DESC NULLS LAST, tb.source`,
      [rows.map((r) => rowKeyOf(r)), target.label],
    );
    const out = new Map<string, Deletion[]>();
    for (const f of found) {
      const key = rowKeyOf(rows[f.n - 1] as ChangeEvent);
      const list = out.get(key) ?? [];
      list.push({ source: f.source, lsn: f.lsn, seq: f.seq, clock: f.clock, ...(f.local ? { local: true } : {}), counters: f.counters });
      out.set(key, list);
    }
    return out;
  }

  async writeTombstoneCounters(c: pg.PoolClient, label: string, updates: readonly TombstoneCounters[]): Promise<void> {
    await c.query(
      `UPDATE ${this.state.sourceTombstones} tb SET counters = u.counters
         FROM unnest($2::text[], $3::text[], $4::jsonb[]) AS u(row_key, source, counters)
        WHERE tb.table_name = $1 AND tb.row_key = u.row_key AND tb.source = u.source`,
      [label, updates.map((u) => u.rowKey), updates.map((u) => u.source), updates.map((u) => (u.counters ? JSON.stringify(u.counters) : null))],
    );
  }

  async readTruncations(c: pg.PoolClient, label: string): Promise<Deletion[]> {
    const { rows } = await c.query<{ source: string; lsn: string; seq: number; clock: string; local: boolean }>(
      `SELECT source, lsn::text AS lsn, seq, (${localClock('tr', this.commitTimestamps)})::text AS clock, tr.xid IS NOT NULL AS local
         FROM ${this.state.sourceTruncations} tr WHERE table_name = $1 AND clock IS NOT NULL`,
      [label],
    );
    return rows.map(({ local, ...r }) => ({ ...r, truncation: true, ...(local ? { local: true } : {}) }));
  }

  async writeColumns(c: pg.PoolClient, target: TargetTable, keyColumns: string[], change: ChangeEvent, values: Row): Promise<void> {
    const columns = Object.keys(values).filter((col) => !keyColumns.includes(col));
    if (columns.length === 0) return;
    const k = keyColumns.length;
    const sets = columns.map((col, j) => `${quoteIdent(col)} = ${castText(target.columns.get(col) as TargetColumn, `$${k + j + 1}::text`)}`);
    // A version written at the target stays the target's (its xid still differs from xmin).
    sets.push(`${W_XID} = CASE WHEN ${LOCALLY_WRITTEN} THEN t.${W_XID} ELSE ${CURRENT_XID} END`);
    await c.query(
      `UPDATE ${target.qualified} t SET ${sets.join(', ')}
         FROM (SELECT ${keyColumns.map((_, j) => `$${j + 1}::text AS k${j}`).join(', ')}) i
        WHERE ${keyMatch(target, keyColumns)}`,
      [...keyColumns.map((col) => change.key[col] ?? null), ...columns.map((col) => values[col] ?? null)],
    );
  }

  async recordConflicts(c: pg.PoolClient, conflicts: ConflictRecord[]): Promise<void> {
    const entries = conflicts.flatMap((r) => r.run.map((change) => ({ r, change })));
    const col = <V>(f: (e: { r: ConflictRecord; change: ChangeEvent }) => V): V[] => entries.map(f);
    await c.query(
      `INSERT INTO ${this.state.conflicts} (table_name, row_key, strategy, winner, incoming_source, stored_source, incoming_lsn, incoming_seq,
                                            incoming_commit_ts, incoming_clock, stored_clock, incoming_version, stored_version, written, stored_lsn, stored_seq)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::pg_lsn[], $8::int[],
                            $9::timestamptz[], $10::text[], $11::text[], $12::jsonb[], $13::jsonb[], $14::jsonb[], $15::pg_lsn[], $16::int[])
       ON CONFLICT (table_name, row_key, incoming_source, incoming_lsn, incoming_seq) DO NOTHING`,
      [
        col((e) => e.r.table),
        col((e) => rowKeyOf(e.change)),
        col((e) => e.r.strategy),
        col((e) => e.r.winner),
        col((e) => e.change.source),
        col((e) => e.r.storedWriter),
        col((e) => e.change.commit_lsn),
        col((e) => e.change.seq),
        col((e) => e.change.commit_ts),
        col((e) => (e.change === e.r.incoming ? e.r.incomingClock : null)),
        col((e) => e.r.storedClock),
        col((e) => JSON.stringify(e.change.payload)),
        col((e) => JSON.stringify(e.r.stored)),
        col((e) => (e.r.written ? JSON.stringify(e.r.written) : null)),
        col((e) => e.r.storedLsn),
        col((e) => e.r.storedSeq),
      ],
    );
  }

  async decidedBefore(c: pg.PoolClient, label: string, changes: readonly ChangeEvent[]): Promise<Set<string>> {
    const { rows } = await c.query<{ row_key: string; source: string; lsn: string; seq: number }>(
      `SELECT i.row_key, i.source, i.lsn::text AS lsn, i.seq
         FROM unnest($2::text[], $3::text[], $4::pg_lsn[], $5::int[], $6::text[]) AS i(row_key, source, lsn, seq, op)
        WHERE EXISTS (SELECT 1 FROM ${this.state.conflicts} cf
                       WHERE cf.table_name = $1 AND cf.row_key = i.row_key AND cf.incoming_source = i.source AND cf.incoming_lsn = i.lsn AND cf.incoming_seq = i.seq)
           OR EXISTS (SELECT 1 FROM ${this.state.conflicts} cf
                       WHERE cf.table_name = $1 AND cf.row_key = i.row_key AND cf.stored_source = i.source AND cf.winner = 'incoming'
                         AND cf.stored_lsn IS NOT NULL AND (cf.stored_lsn, cf.stored_seq) >= (i.lsn, i.seq))
           OR EXISTS (SELECT 1 FROM ${this.state.sourceTruncations} tr
                       WHERE tr.table_name = $1 AND tr.source = i.source AND (tr.lsn, tr.seq) >= (i.lsn, i.seq))
           OR (i.op = 'DELETE' AND EXISTS (SELECT 1 FROM ${this.state.sourceTombstones} tb
                       WHERE tb.table_name = $1 AND tb.row_key = i.row_key AND tb.source = i.source AND (tb.lsn, tb.seq) >= (i.lsn, i.seq)))
           OR EXISTS (SELECT 1 FROM ${this.state.sourceTombstones} tb
                       WHERE tb.table_name = $1 AND tb.row_key = i.row_key AND tb.replaced_source = i.source AND (tb.replaced_lsn, tb.replaced_seq) >= (i.lsn, i.seq))`,
      [label, changes.map((ch) => rowKeyOf(ch)), changes.map((ch) => ch.source), changes.map((ch) => ch.commit_lsn), changes.map((ch) => ch.seq), changes.map((ch) => ch.op)],
    );
    return new Set(rows.map((r) => `${r.row_key}\u0000${r.source}\u0000${formatLsn(parseLsn(r.lsn))}\u0000${r.seq}`));
  }

  isStructural(err: unknown): boolean {
    return isStructuralPgError(err);
  }

  /** Cached statements cast to the columns' types: a widened column needs them made again. */
  invalidate(): void {
    this.sqlCache.clear();
    this.stages.clear();
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
    // A table with another key must lose it first (ADD alone fails: "multiple primary keys").
    const drop = target.primaryKey.length > 0 ? 'DROP CONSTRAINT <its primary key constraint>, ' : '';
    return `give the target the same primary key: ALTER TABLE ${target.qualified} ${drop}ADD PRIMARY KEY (${keyColumns.map(quoteIdent).join(', ')})`;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The payloads' values column by column (lazy rows are not parsed: see core/lazy-row.ts). */
function payloadColumns(columns: readonly string[], rows: readonly ChangeEvent[]): (string | number | null)[][] {
  const out: (string | null)[][] = columns.map(() => []);
  for (const r of rows) {
    const payload = r.payload as Row;
    const lazy = lazyValuesOf(payload);
    for (let j = 0; j < columns.length; j++) (out[j] as (string | null)[]).push(lazy ? (lazy[j] ?? null) : (payload[columns[j] as string] ?? null));
  }
  return out;
}

/**
 * The rows of an upsert as a staging table's COPY text (its columns: `columns`, row_key,
 * v_lsn, v_seq). A lazy row's values are its line as it is, never parsed (see
 * core/lazy-row.ts); the rows share `columns`, in that order (SqlSink groups them so).
 */
function stagedRows(columns: readonly string[], rows: readonly ChangeEvent[]): Buffer[] {
  const out = new CopyText();
  for (const r of rows) {
    const payload = r.payload as Row;
    const json = lazyJsonOf(payload);
    if (json !== undefined) out.jsonValues(json);
    else out.text(columns.map((col) => copyField(payload[col])).join('\t'));
    out.text(`\t${copyField(rowKeyOf(r))}\t${copyField(r.commit_lsn)}\t${r.seq}\n`);
    out.endRow();
  }
  return out.chunks();
}

/** Pooled clients whose session writes under the sink's replication origin. */
const originSessions = new WeakSet<pg.PoolClient>();

/** Creates the replication origin when missing and makes it the session's. */
async function setUpOrigin(client: pg.PoolClient, origin: string): Promise<void> {
  await client.query(
    `SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`,
    [origin],
  );
  await client.query('SELECT pg_replication_origin_session_setup($1)', [origin]);
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

/** A keyless table's stored versions from its high-water row and truncation row (either may be absent). */
function multisetVersions(high: { lsn: string; seq: number; reset: boolean } | undefined, truncated: { lsn: string; seq: number } | undefined): MultisetVersions {
  return {
    high: high && { version: versionOf(parseLsn(high.lsn), high.seq), reset: high.reset },
    truncation: truncated && versionOf(parseLsn(truncated.lsn), truncated.seq),
  };
}
