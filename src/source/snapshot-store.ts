import type pg from 'pg';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import { serializedDdl, STATE_DDL_LOCK } from '../postgres/serialized-ddl.js';
import { hasRelation, type StateFacts } from './state-facts.js';

/**
 * A finished chunk: the rows whose key is in (after, upper], key values as text; `after`
 * null from the start, `upper` null to the end.
 */
export interface KeyRange {
  after: string[] | null;
  upper: string[] | null;
}

/** `skipped`: never read, recorded so (see skipLoadedByOperator); never run. */
export type SnapshotStatus = 'pending' | 'running' | 'done' | 'failed' | 'cancelled' | 'skipped';

export interface SnapshotJob {
  id: string;
  table: TableName;
  status: SnapshotStatus;
  /**
   * Every row up to this key (text values) has been read; null before the first chunk.
   * With parallel chunks, the end of the finished prefix.
   */
  lastKey: string[] | null;
  /** Chunks past `lastKey` that finished out of order, in key order: a resume skips them. */
  doneRanges: KeyRange[];
  /** Optional bounds on the first key column (text values, inclusive). */
  keyFrom: string | null;
  keyTo: string | null;
  rows: number;
  chunks: number;
  error: string | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  /**
   * A keyless table's read: when its cut was taken (the target's copy reset at it). From then
   * on the job cannot be cancelled: stopping would leave the target with part of the table.
   */
  cutAt: Date | null;
}

/** The job table's name in the state schema. */
export const SNAPSHOTS_TABLE = 'snapshots';
/** Columns that prepare() adds to a table created by an older version (the table is in place with them). */
const ADDED_COLUMNS = ['done_ranges', 'cut_at'];

/**
 * Snapshot jobs and their progress, kept in the source database (`<schema>.snapshots`) so
 * that any capture process of the slot — after a kill -9, or a standby taking over —
 * resumes a snapshot from its last finished chunk, and so that `syncline snapshot` can ask
 * a running capture for one.
 */
export class SnapshotStore {
  private readonly table: string;

  constructor(private readonly client: pg.ClientBase, private readonly schema: string, private readonly slot: string) {
    this.table = quoteQualified(schema, SNAPSHOTS_TABLE);
  }

  /**
   * Creates the table unless it exists (and adds the columns added since), under the state
   * DDL lock. With `facts` (state-facts.ts) that show it in place, nothing is run.
   */
  async prepare(facts?: StateFacts): Promise<void> {
    if (facts && hasRelation(facts, SNAPSHOTS_TABLE, ADDED_COLUMNS)) return;
    await serializedDdl(this.client, STATE_DDL_LOCK, async () => {
      await this.client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema)}`);
      await this.client.query(`CREATE TABLE IF NOT EXISTS ${this.table} (
        id bigserial PRIMARY KEY,
        slot_name text NOT NULL,
        table_schema text NOT NULL,
        table_name text NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        last_key jsonb,
        done_ranges jsonb,
        key_from text,
        key_to text,
        rows bigint NOT NULL DEFAULT 0,
        chunks integer NOT NULL DEFAULT 0,
        error text,
        requested_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        cut_at timestamptz)`);
      // Tables created by a version without parallel chunks; checked first, as ALTER TABLE
      // would queue for a lock behind the running capture's progress updates.
      const has = await this.client.query(`SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'done_ranges' AND NOT attisdropped`, [this.table]);
      if (has.rowCount === 0) await this.client.query(`ALTER TABLE ${this.table} ADD COLUMN IF NOT EXISTS done_ranges jsonb`);
      const hasCut = await this.client.query(`SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'cut_at' AND NOT attisdropped`, [this.table]);
      if (hasCut.rowCount === 0) await this.client.query(`ALTER TABLE ${this.table} ADD COLUMN IF NOT EXISTS cut_at timestamptz`);
      // A column added here joins ADDED_COLUMNS, or a table without it is taken as in place.
    });
  }

  async request(table: TableName, keyFrom: string | null = null, keyTo: string | null = null): Promise<string> {
    const { rows } = await this.client.query<{ id: string }>(
      `INSERT INTO ${this.table} (slot_name, table_schema, table_name, key_from, key_to) VALUES ($1, $2, $3, $4, $5) RETURNING id::text`,
      [this.slot, table.schema, table.table, keyFrom, keyTo],
    );
    return (rows[0] as { id: string }).id;
  }

  /**
   * Records a `skipped` job, with `reason`, for each of `tables` when the slot never had any
   * job; returns the tables recorded. For a slot made outside syncline, whose tables' rows
   * the operator took to the target: a job of the table is what tells capture's
   * first-definition rule (SchemaVersionStore) that the table was not added behind its back.
   * A slot with jobs was made by syncline (an initial snapshot is queued before the slot) or
   * had its first start on a slot made outside already: a table without a job joined the
   * publication since (by hand, while syncline was stopped), and is left to that rule, which
   * reads it. Recorded as skipped, its rows never reached the target.
   */
  async skipLoadedByOperator(tables: readonly TableName[], reason: (t: TableName) => string): Promise<TableName[]> {
    // One statement: a crash leaves every table recorded or none (a start that recorded some
    // would leave the rest, with jobs of the slot in place, to the first-definition rule).
    const { rows } = await this.client.query<{ table_schema: string; table_name: string }>(
      `INSERT INTO ${this.table} (slot_name, table_schema, table_name, status, error, finished_at)
       SELECT $1, t.s, t.n, 'skipped', t.reason, now() FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS t(s, n, reason, ord)
        WHERE NOT EXISTS (SELECT 1 FROM ${this.table} WHERE slot_name = $1)
        ORDER BY t.ord
       RETURNING table_schema, table_name`,
      [this.slot, tables.map((t) => t.schema), tables.map((t) => t.table), tables.map((t) => reason(t))],
    );
    return rows.map((r) => ({ schema: r.table_schema, table: r.table_name }));
  }

  /**
   * Queues a job for each of `tables` without an unfinished (pending or running) one, in one
   * statement, in the order given; resolves the ids queued. One statement: a slot made outside
   * syncline has its initial jobs queued after the slot exists, and a slot with a job is
   * taken as one whose jobs were queued (anyJob), so a start that ended between two inserts
   * left the rest of its tables without a job for good (01a9b28; red17b: 295 of 300 tables of a
   * `FOR ALL TABLES` publication never reached the target after a kill -9 there).
   */
  async requestTables(tables: readonly TableName[]): Promise<string[]> {
    const { rows } = await this.client.query<{ id: string }>(
      `INSERT INTO ${this.table} (slot_name, table_schema, table_name)
       SELECT $1, t.s, t.n FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(s, n, ord)
        WHERE NOT EXISTS (SELECT 1 FROM ${this.table} j WHERE j.slot_name = $1 AND j.table_schema = t.s AND j.table_name = t.n AND j.status IN ('running', 'pending'))
        ORDER BY t.ord
       RETURNING id::text`,
      [this.slot, tables.map((t) => t.schema), tables.map((t) => t.table)],
    );
    return rows.map((r) => r.id);
  }

  /** The oldest unfinished job of the slot (a running one first: it is resumed). */
  async next(): Promise<SnapshotJob | undefined> {
    const jobs = await this.list(`status IN ('running', 'pending')`, `CASE status WHEN 'running' THEN 0 ELSE 1 END, id`, 1);
    return jobs[0];
  }

  /** The slot has a job, whatever its status: syncline queued or recorded one for it before. */
  async anyJob(): Promise<boolean> {
    const { rowCount } = await this.client.query(`SELECT 1 FROM ${this.table} WHERE slot_name = $1 LIMIT 1`, [this.slot]);
    return (rowCount ?? 0) > 0;
  }

  /** `schema.table` of every table with an unfinished (pending or running) job of the slot. */
  async unfinishedTables(): Promise<Set<string>> {
    const { rows } = await this.client.query<{ t: string }>(
      `SELECT DISTINCT table_schema || '.' || table_name AS t FROM ${this.table} WHERE slot_name = $1 AND status IN ('running', 'pending')`,
      [this.slot],
    );
    return new Set(rows.map((r) => r.t));
  }

  /** The slot's running jobs: the ones a capture that stopped was in the middle of. */
  async running(): Promise<SnapshotJob[]> {
    return this.list(`status = 'running'`, 'id', 1000);
  }

  async get(id: string): Promise<SnapshotJob | undefined> {
    return (await this.list('id = $2', 'id', 1, [id]))[0];
  }

  /**
   * The jobs of `ids` that exist, in one query. Waiting for several jobs by one `get` each
   * under Promise.all put overlapping queries on this one connection (`repair` waiting for
   * three re-reads printed pg's DeprecationWarning; pg 9 removes the queueing it relied on).
   */
  async getMany(ids: readonly string[]): Promise<SnapshotJob[]> {
    if (ids.length === 0) return [];
    return this.list('id = ANY($2::bigint[])', 'id', ids.length, [ids]);
  }

  /**
   * The slot's newest 1000 jobs, in id order. Not the oldest: a repair queues a job per
   * differing key, and the jobs asked for since (the one running now) went missing.
   */
  async all(): Promise<SnapshotJob[]> {
    return (await this.list('true', 'id DESC', 1000)).reverse();
  }

  /**
   * False: the job was cancelled since it was picked. A keyless read interrupted past its cut
   * (kill -9) may be cancelled again until its new cut: one whose cut keeps failing (its
   * writers hold the lock) must not be stuck for good.
   */
  async markRunning(id: string): Promise<boolean> {
    const { rowCount } = await this.client.query(
      `UPDATE ${this.table} SET status = 'running', cut_at = NULL, started_at = coalesce(started_at, now()), updated_at = now() WHERE id = $1 AND status IN ('pending', 'running')`,
      [id],
    );
    return rowCount === 1;
  }

  /**
   * Records a finished chunk of `rows` rows and the job's progress after it. False: the job
   * is no longer running (cancelled meanwhile), and nothing was recorded.
   */
  async chunkDone(id: string, progress: { lastKey: readonly string[] | null; doneRanges: readonly KeyRange[] }, rows: number): Promise<boolean> {
    const { rowCount } = await this.client.query(
      `UPDATE ${this.table} SET last_key = $2::jsonb, done_ranges = $3::jsonb, rows = rows + $4, chunks = chunks + 1, updated_at = now() WHERE id = $1 AND status = 'running'`,
      [id, JSON.stringify(progress.lastKey), JSON.stringify(progress.doneRanges), rows],
    );
    return rowCount === 1;
  }

  /**
   * In the transaction that takes a keyless table's cut, on its connection `client`, before
   * the cut: records it, unless the job was cancelled (false: no cut may be taken). A cancel
   * committed before is seen here; one made meanwhile waits for this row until the cut's
   * transaction ends and then finds the job past its cut (see cancel).
   */
  async markCut(client: pg.ClientBase, id: string): Promise<boolean> {
    const { rowCount } = await client.query(`UPDATE ${this.table} SET cut_at = now(), updated_at = now() WHERE id = $1 AND status = 'running'`, [id]);
    return rowCount === 1;
  }

  /** The job is still running (not cancelled meanwhile). */
  async isRunning(id: string): Promise<boolean> {
    const { rows } = await this.client.query<{ status: string }>(`SELECT status FROM ${this.table} WHERE id = $1`, [id]);
    return rows[0]?.status === 'running';
  }

  /** A cancelled job stays cancelled: the runner may finish a read the user gave up on. */
  async finish(id: string, status: 'done' | 'failed', error: string | null = null): Promise<void> {
    await this.client.query(`UPDATE ${this.table} SET status = $2, error = $3, finished_at = now(), updated_at = now() WHERE id = $1 AND status <> 'cancelled'`, [id, status, error]);
  }

  /**
   * Cancels the slot's unfinished (pending or running) jobs among `ids`: the running capture
   * stops a running one after its current chunk. Returns the ids cancelled. A keyless table's
   * read past its cut is not cancelled: the target's copy was reset at the cut, and stopping
   * would leave it with only the rows read so far (it reads to its end).
   */
  async cancel(ids: readonly string[]): Promise<string[]> {
    const { rows } = await this.client.query<{ id: string }>(
      `UPDATE ${this.table} SET status = 'cancelled', error = 'cancelled (syncline snapshot --cancel)', finished_at = now(), updated_at = now()
        WHERE slot_name = $1 AND id = ANY($2::bigint[]) AND status IN ('pending', 'running') AND cut_at IS NULL RETURNING id::text AS id`,
      [this.slot, ids],
    );
    return rows.map((r) => r.id);
  }

  private async list(where: string, order: string, limit: number, extra: unknown[] = []): Promise<SnapshotJob[]> {
    const { rows } = await this.client.query<{
      job_id: string; table_schema: string; table_name: string; status: SnapshotStatus; last_key: string[] | null; done_ranges: KeyRange[] | null; key_from: string | null; key_to: string | null;
      rows: string; chunks: number; error: string | null; started_at: Date | null; finished_at: Date | null; cut_at: Date | null;
    }>(`SELECT id::text AS job_id, table_schema, table_name, status, last_key, done_ranges, key_from, key_to, rows::text, chunks, error, started_at, finished_at, cut_at
          FROM ${this.table} WHERE slot_name = $1 AND (${where}) ORDER BY ${order} LIMIT ${Number(limit)}`, [this.slot, ...extra]);
    // Selected as job_id: under the name id the text would be what ORDER BY id sorts by
    // ('10' before '9'), not the job's number.
    return rows.map((r) => ({
      id: r.job_id,
      table: { schema: r.table_schema, table: r.table_name },
      status: r.status,
      lastKey: r.last_key,
      doneRanges: r.done_ranges ?? [],
      keyFrom: r.key_from,
      keyTo: r.key_to,
      rows: Number(r.rows),
      chunks: r.chunks,
      error: r.error,
      startedAt: r.started_at,
      finishedAt: r.finished_at,
      cutAt: r.cut_at,
    }));
  }
}
