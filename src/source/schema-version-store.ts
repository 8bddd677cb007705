import type pg from 'pg';
import { formatLsn, parseLsn, type Lsn } from '../core/lsn.js';
import { RelationIds, SchemaVersionHistory, type ColumnType, type RelationChange, type SchemaVersionEntry, type SchemaVersionRegistry } from '../core/schema-version.js';
import type { RecordedColumn, TableDefinition } from '../core/schema-evolution.js';
import { quoteIdent, quoteLiteral, quoteQualified, type TableName } from '../core/sql.js';
import { serializedDdl, STATE_DDL_LOCK } from '../postgres/serialized-ddl.js';
import { definitionAt } from '../core/ddl-history.js';
import { CREATED_TAGS, DDL_HISTORY_TABLE, historyBefore, REWRITE_TAG, UNLOGGED_CREATION_TAG } from './ddl-history.js';
import { hasRelation, type StateFacts } from './state-facts.js';

/** The table's name in the state schema. */
export const SCHEMA_VERSIONS_TABLE = 'schema_versions';
/** Columns that prepare() adds to a table created by an older version (the table is in place with them). */
const ADDED_COLUMNS = ['columns', 'relid', 'relid_lsn', 'rewrite_id'];

/**
 * The `columns` of a recorded definition, one RecordedColumn per column in order: the type
 * (format_type) from the Relation message's oid and modifier; attnum, NOT NULL and primary
 * key membership from the DDL history ($11: the columns as definitionAt found them, exact at
 * the definition's LSN), else from the catalog by name as it is when the definition is
 * recorded (a column renamed or dropped since then has attnum null; a new column that took
 * a dropped one's name since then is taken for it: the limit the DDL history removes, see
 * README "Schema evolution at the sink").
 */
const RECORDED_COLUMNS = `coalesce((SELECT jsonb_agg(jsonb_build_object('name', c.name, 'type', format_type(c.oid, c.typmod), 'type_oid', c.oid, 'typmod', c.typmod,
      'attnum', CASE WHEN $11::jsonb IS NULL THEN a.attnum ELSE (h.col->>'attnum')::int END,
      'not_null', CASE WHEN $11::jsonb IS NULL THEN coalesce(a.attnotnull, false) ELSE (h.col->>'not_null')::boolean END,
      'key', CASE WHEN $11::jsonb IS NULL THEN coalesce(a.attnum = ANY(i.indkey), false) ELSE (h.col->>'key')::boolean END) ORDER BY c.ord)
    FROM unnest($7::text[], $8::oid[], $9::int[]) WITH ORDINALITY AS c(name, oid, typmod, ord)
    LEFT JOIN pg_attribute a ON a.attrelid = to_regclass($10) AND a.attname = c.name AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
    CROSS JOIN LATERAL (SELECT $11::jsonb -> (c.ord::int - 1) AS col) h), '[]'::jsonb)`;

/**
 * `_schema_version` kept in the source database (`<state_schema>.schema_versions`, one row
 * per table definition and slot), so that versions survive restarts and failovers: every
 * capture of the slot loads them at start and records the definitions it sees first.
 */
export class SchemaVersionStore implements SchemaVersionRegistry {
  private readonly table: string;
  private history = new SchemaVersionHistory();
  /** The chain of inserts; a failed insert fails every later `stored()`. */
  private writes: Promise<void> = Promise.resolve();
  private readonly listeners: ((entry: SchemaVersionEntry) => void)[] = [];
  /** The source's DDL history table exists (ddl-history.ts): attnums are looked up there first. */
  private ddlHistory = false;
  /** See backfillAddedColumns; undefined: added columns are not looked at. */
  private backfill:
    | {
        request: boolean;
        report: (report: BackfillReport) => void;
        reportRename?: (report: RenameReport) => void;
        reportUnsnapshotted?: (report: UnsnapshottedReport) => void;
        reportRewrite?: (report: RewriteReport) => void;
      }
    | undefined;
  /** Which relation each table name stands for (see versionOf). */
  private relations = new RelationIds();
  /** The entries history.versionOf made in the call being served (set by its onNew). */
  private readonly fresh: SchemaVersionEntry[] = [];

  constructor(
    private readonly client: pg.ClientBase,
    private readonly schema: string,
    private readonly slot: string,
    /** The slot's publication: a table first met in the stream is snapshotted only if it was added to it by name (see addedByName). */
    private readonly publication?: string,
  ) {
    this.table = quoteQualified(schema, SCHEMA_VERSIONS_TABLE);
  }

  /**
   * Creates the table unless it exists (and adds the columns added since), under the state
   * DDL lock. With `facts` (state-facts.ts) that show it in place, nothing is run.
   */
  async prepare(facts?: StateFacts): Promise<void> {
    if (facts && hasRelation(facts, SCHEMA_VERSIONS_TABLE, ADDED_COLUMNS)) return;
    await serializedDdl(this.client, STATE_DDL_LOCK, async () => {
      await this.client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema)}`);
      await this.client.query(`CREATE TABLE IF NOT EXISTS ${this.table} (
        slot_name text NOT NULL,
        table_schema text NOT NULL,
        table_name text NOT NULL,
        version integer NOT NULL,
        signature text NOT NULL,
        first_lsn pg_lsn NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (slot_name, table_schema, table_name, version))`);
      // Added later: the definition's columns, [{name, type, type_oid, typmod, attnum, not_null, key}]
      // (type: format_type text), for `syncline schemas` and schema evolution at the sink.
      await this.client.query(`ALTER TABLE ${this.table} ADD COLUMN IF NOT EXISTS columns jsonb`);
      // Added later: the relation (pg_class oid, the Relation message's relid) last seen under
      // the name and the WAL position from which it was (RelationIds), on the name's newest
      // row; null: recorded before relids were, taken as the relation seen next.
      await this.client.query(`ALTER TABLE ${this.table} ADD COLUMN IF NOT EXISTS relid oid, ADD COLUMN IF NOT EXISTS relid_lsn pg_lsn`);
      // Added later: the newest DDL history rewrite entry (REWRITE_TAG) of the name this slot
      // has handled (rewriteSql), on the row of the version current then; null: none.
      await this.client.query(`ALTER TABLE ${this.table} ADD COLUMN IF NOT EXISTS rewrite_id bigint`);
      // A column added here joins ADDED_COLUMNS, or a table without it is taken as in place.
    });
  }

  /** Looks definitions up in the DDL history from now on (installDdlHistory succeeded). */
  useDdlHistory(): void {
    this.ddlHistory = true;
  }

  /** The DDL history table is there and used (useDdlHistory). */
  get usesDdlHistory(): boolean {
    return this.ddlHistory;
  }

  /**
   * From now on, a new definition that adds columns whose existing rows got a value at the
   * source (a DEFAULT, NOT NULL, an identity), or changes a column's type (the rows were
   * converted, maybe `USING` an expression), queues a snapshot of the table (`request`), or
   * only reports them. Why: \`ADD COLUMN c ... DEFAULT x\` writes no row change to the WAL (a
   * constant default is stored once in the catalog; a volatile one rewrites the table, which
   * logical decoding does not see), so the rows that existed before it would keep NULL (or
   * lack the column) at the target for good, silently, until each is next updated. The job is
   * queued in the same statement that records the definition, so a crash cannot record one
   * without the other, and the slot is not confirmed past the definition before both are.
   */
  backfillAddedColumns(
    request: boolean,
    report: (report: BackfillReport) => void,
    reportRename?: (report: RenameReport) => void,
    reportUnsnapshotted?: (report: UnsnapshottedReport) => void,
    reportRewrite?: (report: RewriteReport) => void,
  ): void {
    this.backfill = { request, report, reportRename, reportUnsnapshotted, reportRewrite };
  }

  /** Reads the recorded definitions; call once before capture starts. */
  async load(): Promise<void> {
    const { rows } = await this.client.query<{ table_schema: string; table_name: string; version: number; signature: string; first_lsn: string; relid: number | null; relid_lsn: string | null }>(
      `SELECT table_schema, table_name, version, signature, first_lsn::text, relid, relid_lsn::text FROM ${this.table} WHERE slot_name = $1`,
      [this.slot],
    );
    const entries: SchemaVersionEntry[] = rows.map((r) => ({ schema: r.table_schema, table: r.table_name, version: r.version, signature: r.signature, lsn: parseLsn(r.first_lsn) }));
    this.history = new SchemaVersionHistory(entries, (e) => this.fresh.push(e));
    // Each name's newest sighting (a name's rows of older versions keep earlier ones).
    const sightings = new Map<string, { schema: string; table: string; relid: number; since: Lsn }>();
    for (const r of rows) {
      if (r.relid === null || r.relid_lsn === null) continue;
      const since = parseLsn(r.relid_lsn);
      const key = JSON.stringify([r.table_schema, r.table_name]);
      const had = sightings.get(key);
      if (!had || had.since < since) sightings.set(key, { schema: r.table_schema, table: r.table_name, relid: Number(r.relid), since });
    }
    this.relations = new RelationIds([...sightings.values()]);
    this.recordedBefore = entries.length > 0;
  }

  /**
   * Definitions of the slot were recorded before this start (load): a capture streamed from a
   * slot of this name, so one that is missing now was dropped, not never made (PostgresSource.open).
   */
  recordedBefore = false;

  /**
   * With `relid` (a Relation message's), also tells a relation new under a recorded name from
   * the one recorded (RelationIds): a table dropped and created again with the same columns,
   * or renamed back to a name it had, has the same definition under that name, so versions
   * alone see nothing, while the target's table of the name lacks the rows the slot never
   * sent it. Such a relation is handled much as a first definition (newRelationSql), but keeps the version number: its columns are the same, so the events are the same shape
   * and a sink (schema evolution, a registry's subject) has nothing new to learn; a new
   * number would only make every consumer take a definition change that is none. The relid
   * is recorded on the name's newest row instead.
   */
  versionOf(schema: string, table: string, columns: readonly ColumnType[], lsn: Lsn, relid?: number): number {
    const change = relid === undefined ? undefined : this.relations.see(schema, table, relid, lsn);
    this.fresh.length = 0;
    const version = this.history.versionOf(schema, table, columns, lsn, relid);
    const made = this.fresh.splice(0);
    for (const e of made) this.record(e, change);
    if (made.length === 0 && relid !== undefined && change && change.kind !== 'same') this.recordRelation(schema, table, version, relid, lsn, change);
    // Every Relation message (pgoutput sends one before the first change after each DDL of
    // the table): was the table rewritten since? The definition may be the same (red18).
    if (relid !== undefined && this.ddlHistory && this.backfill) this.checkRewrite(schema, table, relid, lsn);
    return version;
  }

  stored(): Promise<void> {
    return this.writes;
  }

  listen(listener: (entry: SchemaVersionEntry) => void): void {
    this.listeners.push(listener);
  }

  private record(e: SchemaVersionEntry, change: RelationChange | undefined): void {
    for (const l of this.listeners) l(e);
    // Only the slot's leader (leader-lock.ts) writes, after loading: a row is never contested.
    // The columns' type names come from format_type; attnum, NOT NULL and the primary key from
    // the DDL history at the definition's LSN, else from the catalog as it is when recorded.
    this.writes = this.writes.then(async () => {
      const cols = e.columns ?? [];
      const known = this.ddlHistory && cols.length > 0 ? definitionAt(await historyBefore(this.client, this.schema, e, e.lsn), cols) : undefined;
      const insert = `INSERT INTO ${this.table} (slot_name, table_schema, table_name, version, signature, first_lsn, columns, relid, relid_lsn)
         SELECT $1, $2, $3, $4, $5, $6::pg_lsn, ${RECORDED_COLUMNS}, $12::oid, CASE WHEN $12::oid IS NULL THEN NULL ELSE $6::pg_lsn END
         ON CONFLICT (slot_name, table_schema, table_name, version) DO NOTHING`;
      const params = [
        this.slot, e.schema, e.table, e.version, e.signature, formatLsn(e.lsn), cols.map((c) => c.name), cols.map((c) => c.typeOid), cols.map((c) => c.typeMod),
        quoteQualified(e.schema, e.table), known ? JSON.stringify(known) : null, e.relid ?? null,
      ];
      const backfill = this.backfill;
      // A first definition; or a new one of another relation than the name's (recreated with
      // other columns, renamed back and altered): read whole like a first one (backfillSql's
      // columns would be a part of what it lacks).
      if (backfill && (e.version === 1 || change?.kind === 'new')) {
        const from = change?.from;
        const sql = (): string => (e.version === 1 ? this.firstDefinitionSql(insert, backfill.request) : this.newRelationSql(insert, backfill.request, '$10', '$13', '$14'));
        await this.firstOf(e.schema, e.table, sql, [...params, from?.schema ?? null, from?.table ?? null], e.version > 1);
        return;
      }
      if (!backfill || e.version < 2) {
        await this.client.query(insert, params);
        return;
      }
      const { rows } = await this.client.query<{ filled: string[] | null; job: string | null }>(this.backfillSql(insert, backfill.request), params);
      const filled = rows[0]?.filled ?? [];
      if (filled.length > 0) backfill.report({ schema: e.schema, table: e.table, version: e.version, columns: filled, job: rows[0]?.job ?? null });
    });
    // Reported through stored(); not an unhandled rejection meanwhile.
    this.writes.catch(() => undefined);
  }

  /**
   * Records `relid` on the name's newest row (`version`), and for another relation than the
   * one recorded under the name (`change` 'new') queues its snapshot under newRelationSql's
   * rules, in the same statement: a crash cannot record one without the other, and WAL
   * replayed after it finds the relid recorded (RelationIds), so it queues nothing twice.
   */
  private recordRelation(schema: string, table: string, version: number, relid: number, lsn: Lsn, change: RelationChange): void {
    this.writes = this.writes.then(async () => {
      const update = `UPDATE ${this.table} SET relid = $6::oid, relid_lsn = $5::pg_lsn
         WHERE slot_name = $1 AND table_schema = $2 AND table_name = $3 AND version = $4 AND (relid, relid_lsn) IS DISTINCT FROM ($6::oid, $5::pg_lsn)`;
      const params = [this.slot, schema, table, version, formatLsn(lsn), relid];
      const backfill = this.backfill;
      if (change.kind !== 'new' || !backfill) {
        await this.client.query(update, params);
        return;
      }
      const sql = (): string => this.newRelationSql(update, backfill.request, '$7', '$8', '$9');
      await this.firstOf(schema, table, sql, [...params, quoteQualified(schema, table), change.from?.schema ?? null, change.from?.table ?? null], true);
    });
    this.writes.catch(() => undefined);
  }

  /**
   * Queues rewriteSql for a Relation message of `relid` under `schema.table` at `lsn`, after
   * the definition's own statements (the same chain), and reports what it found.
   */
  private checkRewrite(schema: string, table: string, relid: number, lsn: Lsn): void {
    const backfill = this.backfill;
    if (!backfill) return;
    this.writes = this.writes.then(async () => {
      const { rows } = await this.client.query<{ rewritten: boolean; job: string | null }>(this.rewriteSql(backfill.request), [this.slot, schema, table, relid, formatLsn(lsn)]);
      if (rows[0]?.rewritten) backfill.reportRewrite?.({ schema, table, job: rows[0].job });
    });
    this.writes.catch(() => undefined);
  }

  /**
   * A `job` CTE for the statements that record a definition: a pending snapshot job of table
   * ($1 slot, $2 schema, $3 table) when CTE `cause` has a row, unless one is already pending.
   */
  private jobUnlessPendingSql(cause: string): string {
    const jobs = quoteQualified(this.schema, 'snapshots');
    return `, job AS (
         INSERT INTO ${jobs} (slot_name, table_schema, table_name)
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM ${cause})
            AND NOT EXISTS (SELECT 1 FROM ${jobs} j WHERE j.slot_name = $1 AND j.table_schema = $2 AND j.table_name = $3 AND j.status = 'pending')
         RETURNING id::text AS id)`;
  }

  /**
   * The table's rows were rewritten with new values (`ALTER COLUMN ... TYPE ... USING`, also
   * to the same type or another modifier only; `ADD COLUMN` with a volatile default), which
   * logical decoding does not carry: the DDL history's newest REWRITE_TAG entry of the
   * relation (`$4`) under the name, or of a partition under it, at or before the Relation message (`$5`: every change after
   * the rewrite has a greater LSN, every change before it a smaller one, see REWRITE_TAG),
   * since the slot first recorded the name (earlier ones are the initial snapshot's) and newer
   * than the one it handled last (`rewrite_id`, kept in the same statement on the name's
   * newest row: WAL replayed after a restart finds it handled and queues nothing again).
   * Then (`request`) a pending snapshot job of the table unless one is already pending (a
   * type change's, backfillSql, or an added column's for the same ALTER).
   */
  private rewriteSql(request: boolean): string {
    const history = quoteQualified(this.schema, DDL_HISTORY_TABLE);
    const job = request ? this.jobUnlessPendingSql('v') : '';
    return `WITH seen AS (SELECT min(first_lsn) AS since, max(rewrite_id) AS handled, max(version) AS version FROM ${this.table}
                        WHERE slot_name = $1 AND table_schema = $2 AND table_name = $3),
      -- The relation, and the partitions under it (a partitioned table published through its
      -- root: PostgreSQL rewrites, and the trigger records, each partition), each by its name
      -- (the history's index).
      rels AS (SELECT $4::oid AS relid, $2::text AS table_schema, $3::text AS table_name
               UNION ALL
               SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_partition_tree($4::oid) t
                 JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE t.relid <> $4::oid),
      r AS (SELECT max(h.id) AS id FROM rels, seen CROSS JOIN LATERAL (
              SELECT h.id FROM ${history} h
               WHERE h.table_schema = rels.table_schema AND h.table_name = rels.table_name AND h.relid = rels.relid AND h.command_tag = ${quoteLiteral(REWRITE_TAG)}
                 AND h.lsn <= $5::pg_lsn AND h.lsn >= seen.since AND h.id > coalesce(seen.handled, 0)) h),
      v AS (UPDATE ${this.table} s SET rewrite_id = r.id FROM r, seen
             WHERE r.id IS NOT NULL AND s.slot_name = $1 AND s.table_schema = $2 AND s.table_name = $3 AND s.version = seen.version
            RETURNING 1)${job}
      SELECT EXISTS (SELECT 1 FROM v) AS rewritten, ${request ? '(SELECT id FROM job)' : 'NULL::text'} AS job`;
  }

  /**
   * Runs `sql` (firstDefinitionSql, newRelationSql) and reports the rename or the snapshot it
   * found; `recreated`: not a first definition of the name. `sql` is built here, once
   * schemaPublications is known: built before, the first such statement of a process left
   * addedByName's schema check out (a table of a schema added to the publication while capture
   * was stopped, met first after the start, was never read).
   */
  private async firstOf(schema: string, table: string, sql: () => string, params: unknown[], recreated: boolean): Promise<void> {
    const backfill = this.backfill;
    if (!backfill) return;
    if (backfill.request && this.schemaPublications === undefined) {
      const v = await this.client.query<{ yes: boolean }>("SELECT current_setting('server_version_num')::int >= 150000 AS yes");
      this.schemaPublications = v.rows[0]?.yes === true;
    }
    const { rows } = await this.client.query<{ renamed: string | null; renamed_schema: string | null; job: string | null }>(sql(), params);
    const r = rows[0];
    if (r?.renamed != null && r.renamed_schema != null) {
      backfill.reportRename?.({ schema, table, from: { schema: r.renamed_schema, table: r.renamed }, job: r.job });
    } else if (r?.job != null) {
      backfill.reportUnsnapshotted?.({ schema, table, job: r.job, recreated });
    }
  }

  /**
   * `insert` (the first definition of a table name) followed, when it inserted the row, by the
   * name the same relation had before (with the DDL history: the newest entry of its relid,
   * at or before the definition, under another name that this slot recorded definitions of)
   * and (`request`) a pending snapshot job of the table when it was renamed, or when no job of
   * it was ever queued for this slot. Why: its changes reach the target, but not the rows they
   * did not touch. After `ALTER TABLE r RENAME TO r2` the changes go on under `r2` and the
   * target has only `r`; a table added to the publication by hand (`ALTER PUBLICATION ... ADD
   * TABLE`, which capture does not see) was never read. Either way the target's table (created
   * from the definition, or by hand) held just the rows changed since, for good, silently.
   * Tables capture snapshots itself (initial, added to source.slots[].tables, `syncline
   * snapshot`) have their job queued before their first change is read. Without the DDL
   * history (or when it missed the rename), the name the slot last saw the relation's relid
   * under (RelationIds: `$13`, `$14`) is taken; a rename it cannot tell either way (names
   * recorded before relids were) is reported as a table never read.
   */
  /**
   * SQL (` AND ...`): the table joined the publication with rows the slot never sent. By name
   * (pg_publication_rel: `FOR TABLE` or `ADD TABLE`), the usual way a table that existed joins
   * it; or through a schema (pg_publication_namespace: `FOR TABLES IN SCHEMA`, `ADD TABLES IN
   * SCHEMA`) unless the DDL history shows it was created in that schema after the schema joined
   * the publication: its oldest entry is a creation (CREATED_TAGS: a CREATE TABLE, CREATE TABLE AS or SELECT INTO, also of a partition) under the schema it is in
   * now and its transaction (xmin) is newer than the schema's membership row. Another first
   * entry proves only that the table existed then: a seed (written at a start, e.g. the one
   * after `ADD TABLES IN SCHEMA s2` ran while capture was stopped) or an `ALTER TABLE ... SET
   * SCHEMA` (of a table that existed before the history and was never published); at worst a
   * table created while the event trigger was missing is read once more. An entry without a
   * tag (written before tags were) is taken as a creation, as it was then: an upgrade reads
   * nothing again. A table created since (all its rows are in the slot) is not read
   * again: a snapshot would re-read what the stream carries, and for a keyless one
   * (pgbench_history, created by `pgbench -i` while capture runs) reset its target table and
   * cut it under its writers. But `ADD TABLES IN SCHEMA s2` (s2's tables had rows) and `ALTER
   * TABLE t SET SCHEMA s1` (into a schema the publication takes whole) bring in tables whose
   * rows predate them. Without the DDL history a table met through a schema is not read.
   * A table met through `FOR ALL TABLES` was created since capture started (one that existed
   * was in the initial snapshot), unless its first entry is UNLOGGED_CREATION_TAG: an unlogged
   * table, published with its rows only by SET LOGGED, is read (as through a schema; one
   * unlogged since before the history was installed is not told). Without the publication's
   * name, nothing more is asked.
   */
  /** The server has schema publications (PostgreSQL 15+: pg_publication_namespace); read by firstOf once. */
  private schemaPublications: boolean | undefined;

  /** `rel`: the bind parameter of the table's quoted name; `otherwise`: the SQL without the publication's name. */
  private addedByName(rel: string, otherwise = ''): string {
    if (this.publication === undefined) return otherwise;
    const pub = quoteLiteral(this.publication);
    const byName = `EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                          WHERE p.pubname = ${pub} AND pr.prrelid = to_regclass(${rel}))`;
    if (!this.ddlHistory) return ` AND ${byName}`;
    const history = quoteQualified(this.schema, DDL_HISTORY_TABLE);
    // FOR ALL TABLES: created since capture started, unless created UNLOGGED (its first entry
    // says so): published, with the rows loaded meanwhile, only by SET LOGGED.
    const unloggedAll = `EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = ${pub} AND p.puballtables)
                         AND EXISTS (SELECT 1 FROM (SELECT h.command_tag FROM ${history} h WHERE h.relid = to_regclass(${rel})::oid ORDER BY h.lsn, h.id LIMIT 1) first
                                      WHERE first.command_tag = ${quoteLiteral(UNLOGGED_CREATION_TAG)})`;
    if (!this.schemaPublications) return ` AND (${byName} OR (${unloggedAll}))`;
    const bySchema = `EXISTS (SELECT 1 FROM pg_catalog.pg_publication_namespace pn JOIN pg_catalog.pg_publication p ON p.oid = pn.pnpubid
                          JOIN pg_catalog.pg_class c ON c.relnamespace = pn.pnnspid
                         WHERE p.pubname = ${pub} AND c.oid = to_regclass(${rel})
                           AND NOT EXISTS (SELECT 1 FROM (SELECT h.table_schema, h.xmin, h.command_tag FROM ${history} h WHERE h.relid = c.oid ORDER BY h.lsn, h.id LIMIT 1) first
                                            WHERE first.table_schema = $2 AND age(first.xmin) < age(pn.xmin)
                                              AND (first.command_tag IS NULL OR first.command_tag IN (${CREATED_TAGS.map(quoteLiteral).join(', ')}))))`;
    return ` AND (${byName} OR ${bySchema} OR (${unloggedAll}))`;
  }

  private firstDefinitionSql(insert: string, request: boolean): string {
    const jobs = quoteQualified(this.schema, 'snapshots');
    const history = quoteQualified(this.schema, DDL_HISTORY_TABLE);
    const job = request
      ? `, job AS (
         INSERT INTO ${jobs} (slot_name, table_schema, table_name)
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM v)
            AND (EXISTS (SELECT 1 FROM renamed) OR (NOT EXISTS (SELECT 1 FROM ${jobs} j WHERE j.slot_name = $1 AND j.table_schema = $2 AND j.table_name = $3)${this.addedByName('$10')}))
            AND NOT EXISTS (SELECT 1 FROM ${jobs} j WHERE j.slot_name = $1 AND j.table_schema = $2 AND j.table_name = $3 AND j.status = 'pending')
         RETURNING id::text AS id)`
      : '';
    // The DDL history's answer first; else the name the slot last saw the relid under
    // ($13, $14: RelationIds), for a rename the history missed or without the history.
    const fromHistory = this.ddlHistory
      ? `(SELECT h.table_schema, h.table_name, 0 AS rank FROM ${history} h
         WHERE EXISTS (SELECT 1 FROM v) AND h.relid = to_regclass($10)::oid AND h.lsn <= $6::pg_lsn
           AND (h.table_schema, h.table_name) IS DISTINCT FROM ($2::text, $3::text)
           AND EXISTS (SELECT 1 FROM ${this.table} s WHERE s.slot_name = $1 AND s.table_schema = h.table_schema AND s.table_name = h.table_name)
         ORDER BY h.lsn DESC, h.id DESC LIMIT 1) UNION ALL `
      : '';
    const renamed = `SELECT table_schema, table_name FROM (${fromHistory}
         SELECT $13::text, $14::text, 1 WHERE $14::text IS NOT NULL AND EXISTS (SELECT 1 FROM v)) r(table_schema, table_name, rank)
         ORDER BY rank LIMIT 1`;
    return `WITH v AS (${insert} RETURNING 1),
      renamed AS (${renamed})${job}
      SELECT (SELECT table_schema FROM renamed) AS renamed_schema, (SELECT table_name FROM renamed) AS renamed,
             ${request ? '(SELECT id FROM job)' : 'NULL::text'} AS job`;
  }

  /**
   * `v` (the definition's row inserted, or its relid updated: recordRelation) of another
   * relation than the one recorded under its name (RelationIds), followed, when it wrote the
   * row, by a pending snapshot job of the table (`request`) when the relation was recorded
   * under another name since (`fromSchema`, `fromTable`: bind parameters; renamed back, or
   * swapped in by a rename), or when it joined the publication by name or through a schema
   * (addedByName, with `rel` the bind parameter of its quoted name): a table dropped and
   * created again, filled, then added by hand. Unlike a first definition, a job queued for
   * the name before does not count: it read the old relation; with the DDL history, one
   * requested since the relation was created does (capture queues one when it puts a
   * configured table, dropped and created again while it was down, back in the publication;
   * it may be done before the table's first change). One created again since under
   * `FOR ALL TABLES` (or in a schema the publication takes whole) is not read, as for a first
   * definition: all its rows are in the slot (pgbench_history after `pgbench -i`). Without the
   * publication's name, only a rename is read.
   */
  private newRelationSql(v: string, request: boolean, rel: string, fromSchema: string, fromTable: string): string {
    const jobs = quoteQualified(this.schema, 'snapshots');
    const readSince = this.ddlHistory
      ? ` AND NOT EXISTS (SELECT 1 FROM ${jobs} j WHERE j.slot_name = $1 AND j.table_schema = $2 AND j.table_name = $3
                            AND j.requested_at >= (SELECT min(h.recorded_at) FROM ${quoteQualified(this.schema, DDL_HISTORY_TABLE)} h WHERE h.relid = to_regclass(${rel})::oid))`
      : '';
    const job = request
      ? `, job AS (
         INSERT INTO ${jobs} (slot_name, table_schema, table_name)
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM v)
            AND (EXISTS (SELECT 1 FROM renamed) OR (true${this.addedByName(rel, ' AND false')}${readSince}))
            AND NOT EXISTS (SELECT 1 FROM ${jobs} j WHERE j.slot_name = $1 AND j.table_schema = $2 AND j.table_name = $3 AND j.status = 'pending')
         RETURNING id::text AS id)`
      : '';
    return `WITH v AS (${v} RETURNING 1),
      renamed AS (SELECT ${fromSchema}::text AS table_schema, ${fromTable}::text AS table_name WHERE ${fromTable}::text IS NOT NULL AND EXISTS (SELECT 1 FROM v))${job}
      SELECT (SELECT table_schema FROM renamed) AS renamed_schema, (SELECT table_name FROM renamed) AS renamed,
             ${request ? '(SELECT id FROM job)' : 'NULL::text'} AS job, ${rel}::text AS relation`;
  }

  /**
   * `insert` (the definition's row, RETURNING nothing) followed, when it inserted the row, by
   * the columns it adds to the previous recorded definition (by attnum, else by name: a
   * rename is no addition) that exist in the catalog now with a value for old rows, and
   * (`request`) a pending snapshot job of the table unless one is already pending (a running
   * one may have read chunks before the column existed). A replay of the definition after a
   * restart inserts nothing, so it queues nothing again.
   */
  private backfillSql(insert: string, request: boolean): string {
    const job = request ? this.jobUnlessPendingSql('filled') : '';
    return `WITH v AS (${insert} RETURNING columns),
      prev AS (SELECT columns FROM ${this.table} WHERE slot_name = $1 AND table_schema = $2 AND table_name = $3 AND version < $4 AND columns IS NOT NULL
                ORDER BY version DESC LIMIT 1),
      added AS (
        SELECT c->>'name' AS name, (c->>'attnum')::int AS attnum FROM v CROSS JOIN LATERAL jsonb_array_elements(v.columns) c
         WHERE EXISTS (SELECT 1 FROM prev)
           AND NOT EXISTS (SELECT 1 FROM prev CROSS JOIN LATERAL jsonb_array_elements(prev.columns) p
                            WHERE CASE WHEN c->>'attnum' IS NOT NULL AND p->>'attnum' IS NOT NULL THEN p->>'attnum' = c->>'attnum' ELSE p->>'name' = c->>'name' END)),
      filled AS (
        SELECT a.name FROM added a
          JOIN pg_catalog.pg_attribute att ON att.attrelid = to_regclass($10) AND att.attnum > 0 AND NOT att.attisdropped
               AND CASE WHEN a.attnum IS NOT NULL THEN att.attnum = a.attnum ELSE att.attname = a.name END
         WHERE att.atthasdef OR att.atthasmissing OR att.attnotnull OR att.attidentity <> ''
        UNION
        -- Another type (ALTER COLUMN ... TYPE, perhaps USING an expression): the table was
        -- rewritten with converted values, which the WAL does not carry either.
        SELECT c->>'name' FROM v CROSS JOIN LATERAL jsonb_array_elements(v.columns) c
         WHERE c->>'attnum' IS NOT NULL
           AND EXISTS (SELECT 1 FROM prev CROSS JOIN LATERAL jsonb_array_elements(prev.columns) p
                        WHERE p->>'attnum' = c->>'attnum' AND p->>'type_oid' <> c->>'type_oid'))${job}
      SELECT (SELECT array_agg(name ORDER BY name) FROM filled) AS filled, ${request ? '(SELECT id FROM job)' : 'NULL::text'} AS job`;
  }
}

/** A definition that added columns whose rows existing before it got a value at the source. */
export interface BackfillReport {
  schema: string;
  table: string;
  version: number;
  columns: string[];
  /** The snapshot job queued for the table; null: none (not requested, or one is already pending). */
  job: string | null;
}

/** A table whose rows were rewritten with new values at the source (rewriteSql). */
export interface RewriteReport {
  schema: string;
  table: string;
  /** The snapshot job queued for the table; null: none (not requested, or one is already pending). */
  job: string | null;
}

/** A table met in the stream that capture did not snapshot, whose snapshot job was queued. */
export interface UnsnapshottedReport {
  schema: string;
  table: string;
  job: string;
  /** Another relation than the one recorded under the name (dropped and created again), not a first definition. */
  recreated: boolean;
}

/** A table's first definition under a new name, for a relation this slot replicated under another (ALTER TABLE ... RENAME TO). */
export interface RenameReport {
  schema: string;
  table: string;
  /** The name this slot replicated the relation under before. */
  from: { schema: string; table: string };
  /** The snapshot job queued for the table under its new name; null: none (not requested, or one is already pending). */
  job: string | null;
}

/**
 * The recorded definitions of `t`, oldest first, from the first of `slots` that has any (each
 * slot numbers its versions itself); empty when none are recorded.
 */
export async function readDefinitions(client: pg.ClientBase, stateSchema: string, slots: readonly string[], t: TableName): Promise<TableDefinition[]> {
  const { rows } = await client.query<{ slot_name: string; version: number; columns: RecordedColumn[] | null }>(
    `SELECT slot_name, version, columns FROM ${quoteQualified(stateSchema, 'schema_versions')}
      WHERE table_schema = $1 AND table_name = $2 AND slot_name = ANY($3) ORDER BY version`,
    [t.schema, t.table, slots],
  );
  const slot = slots.find((s) => rows.some((r) => r.slot_name === s));
  return rows.filter((r) => r.slot_name === slot).map((r) => ({ version: r.version, columns: r.columns ?? undefined }));
}
