import pg from 'pg';
import { rowKeyOf, tableLabelOf } from '../core/change.js';
import { errorMessage, SynclineError } from '../core/errors.js';
import { isRetriablePgError } from '../core/sqlstate.js';
import { quoteIdent, quoteQualified } from '../core/sql.js';
import { tableArgLabels } from '../core/table-arg.js';
import { FOLLOWER_CODES, WAITING_CODES, type DeadLetter, type DeadLetterEntry, type DeadLetterFilter, type DeadLetterQueue } from './dead-letter-queue.js';
import { serializedDdl, STATE_DDL_LOCK } from '../postgres/serialized-ddl.js';
import { withStoredKeyOrder } from './stored-key-order.js';

/** keepFirstError (dead-letter-queue.ts) in SQL, for an upsert of an entry into table `t`. */
const KEEP_FIRST_ERROR = (t: string): string => {
  const waiting = WAITING_CODES.map((c) => `'${c}'`).join(', ');
  return `(${t}.error_code NOT IN (${waiting}) AND (EXCLUDED.error_code IN (${waiting}) OR ${t}.error_code <> EXCLUDED.error_code))`;
};

/**
 * An id this table can hold (a bigserial). Another one (`dlq show abc`, or the topic store's
 * `<source>:<lsn>:<seq>` after switching stores) names no entry; before, it reached the SQL and
 * the command failed with "invalid input syntax for type bigint" instead of "no entry".
 */
function isEntryId(id: string): boolean {
  return /^[0-9]{1,18}$/.test(id);
}

/** A row of the table as `list` and `orphans` read it. */
interface EntryRow {
  id: string; table_name: string; row_key: string; commit_lsn: string | null; change: DeadLetterEntry['change'] | null; raw: string | null;
  error: string; error_code: string; attempts: number; first_failed_at: Date; last_failed_at: Date; stream_partition: number; stream_offset: string;
}

const ENTRY_COLUMNS = 'id::text, table_name, row_key, commit_lsn::text, change, raw, error, error_code, attempts, first_failed_at, last_failed_at, stream_partition, stream_offset::text';

function entryOf(r: EntryRow): DeadLetterEntry {
  return {
    id: r.id,
    table: r.table_name,
    rowKey: r.row_key,
    commitLsn: r.commit_lsn,
    // jsonb reorders the key's columns; the row key keeps their order.
    change: r.change ? withStoredKeyOrder(r.change, r.row_key) : undefined,
    ...(r.raw !== null ? { raw: r.raw } : {}),
    error: r.error,
    errorCode: r.error_code,
    attempts: r.attempts,
    firstFailedAt: r.first_failed_at,
    lastFailedAt: r.last_failed_at,
    partition: r.stream_partition,
    offset: BigInt(r.stream_offset),
  };
}

/**
 * The dead-letter queue as a table (`<schema>.dead_letter`) in a PostgreSQL database —
 * by default the sink's, next to the positions — so entries can be listed, filtered,
 * replayed and purged with SQL-grade precision and survive any process crash.
 *
 * One table may hold the queues of several pipelines (fan-in into one postgres sink, or one
 * `dead_letter.url` for many pipelines), so this queue is scoped to its pipeline's source name
 * (`source`): it holds rows behind, lists, counts, replays and removes only its own entries.
 * Before, a pipeline's change was dead-lettered BLOCKED_BY_EARLIER behind another pipeline's
 * poison of a row with the same table and key, and `dlq replay` applied the other pipeline's
 * entries to this sink (and removed them from that pipeline's queue). Entries written without
 * a source (undecodable records, before this scoping) stay visible to every pipeline.
 */
export class PostgresDeadLetterQueue implements DeadLetterQueue {
  private readonly pool: pg.Pool;
  private readonly table: string;
  /** SQL: the entry is this pipeline's; `$1` is the source name. */
  private readonly mine = `(source = $1 OR source = '')`;

  constructor(url: string, private readonly schema: string, private readonly source: string) {
    this.pool = new pg.Pool({ connectionString: url, max: 2 });
    this.pool.on('error', () => undefined);
    this.table = quoteQualified(schema, 'dead_letter');
  }

  async prepare(): Promise<void> {
    // Two applies sharing the target (fan-in) create the table together.
    const c = await this.pool.connect().catch((err: unknown) => {
      throw new SynclineError('DLQ_FAILED', `dead-letter queue: ${errorMessage(err)}`, { retriable: true, cause: err });
    });
    try {
      await serializedDdl(c, STATE_DDL_LOCK, async () => {
        await c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(this.schema)}`);
        await c.query(`CREATE TABLE IF NOT EXISTS ${this.table} (
          id bigserial PRIMARY KEY,
          source text NOT NULL,
          table_name text NOT NULL,
          row_key text NOT NULL,
          commit_lsn pg_lsn,
          seq integer,
          change jsonb,
          raw text,
          error text NOT NULL,
          error_code text NOT NULL,
          attempts integer NOT NULL,
          first_failed_at timestamptz NOT NULL DEFAULT now(),
          last_failed_at timestamptz NOT NULL DEFAULT now(),
          stream_partition integer NOT NULL,
          stream_offset bigint NOT NULL)`);
        // One entry per change (undecodable records: per stream position).
        await c.query(`CREATE UNIQUE INDEX IF NOT EXISTS dead_letter_change ON ${this.table} (source, commit_lsn, seq) WHERE commit_lsn IS NOT NULL`);
        // Per pipeline: two pipelines' streams have the same positions. Replaces the index of
        // (stream_partition, stream_offset) that tables created before the scoping have.
        await c.query(`CREATE UNIQUE INDEX IF NOT EXISTS dead_letter_raw_source ON ${this.table} (source, stream_partition, stream_offset) WHERE commit_lsn IS NULL`);
        await c.query(`DROP INDEX IF EXISTS ${quoteQualified(this.schema, 'dead_letter_raw')}`);
        // A row's entries in change order: orphans finds each row's head by walking it instead
        // of sorting the whole queue (with 200k entries, 2.8 s -> 1.1 s on a loaded 2-core box).
        await c.query(`CREATE INDEX IF NOT EXISTS dead_letter_row ON ${this.table} (source, table_name, row_key, commit_lsn, seq) WHERE commit_lsn IS NOT NULL`);
      });
    } catch (err) {
      throw new SynclineError('DLQ_FAILED', `dead-letter queue: ${errorMessage(err)}`, { retriable: isRetriablePgError(err), cause: err });
    } finally {
      c.release();
    }
  }

  async add(letters: readonly DeadLetter[]): Promise<void> {
    if (letters.length === 0) return;
    // One transaction for the batch's letters: a commit (and its WAL flush) per entry made a
    // poison flood wait on the disk for each dead-lettered change. All or none: adding is
    // idempotent, so a retry after a failure adds nothing twice.
    const c = await this.pool.connect().catch((err: unknown) => {
      throw new SynclineError('DLQ_FAILED', `dead-letter queue: ${errorMessage(err)}`, { retriable: true, cause: err });
    });
    let failed = false;
    try {
      await this.query('BEGIN', undefined, c);
      for (const l of letters) await this.insert(c, l);
      await this.query('COMMIT', undefined, c);
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      // A connection that failed inside the transaction is dropped, not given back to the pool.
      c.release(failed);
    }
  }

  private async insert(client: pg.PoolClient, l: DeadLetter): Promise<void> {
    const c = l.change;
    const params = [
      c?.source ?? this.source,
      c ? tableLabelOf(c) : '',
      c ? rowKeyOf(c) : '',
      c?.commit_lsn ?? null,
      c?.seq ?? null,
      c ? JSON.stringify(c) : null,
      l.raw ?? null,
      l.error,
      l.errorCode,
      l.attempts,
      l.partition,
      l.offset.toString(),
    ];
    const conflict = c
      ? '(source, commit_lsn, seq) WHERE commit_lsn IS NOT NULL'
      : '(source, stream_partition, stream_offset) WHERE commit_lsn IS NULL';
    await this.query(
      `INSERT INTO ${this.table} (source, table_name, row_key, commit_lsn, seq, change, raw, error, error_code, attempts, stream_partition, stream_offset)
       VALUES ($1, $2, $3, $4::pg_lsn, $5, $6::jsonb, $7, $8, $9, $10, $11, $12)
       ON CONFLICT ${conflict} DO UPDATE SET
         error = CASE WHEN ${KEEP_FIRST_ERROR(this.table)} THEN ${this.table}.error ELSE EXCLUDED.error END,
         error_code = CASE WHEN ${KEEP_FIRST_ERROR(this.table)} THEN ${this.table}.error_code ELSE EXCLUDED.error_code END,
         attempts = ${this.table}.attempts + EXCLUDED.attempts, last_failed_at = now()`,
      params,
      client,
    );
  }

  async list(filter: DeadLetterFilter): Promise<DeadLetterEntry[]> {
    const where: string[] = [this.mine];
    const params: unknown[] = [this.source];
    if (filter.ids && filter.ids.length > 0) {
      params.push(filter.ids.filter(isEntryId));
      where.push(`id = ANY($${params.length}::bigint[])`);
    }
    if (filter.table) {
      // The first reading of the name (as printed, or as SQL: see parseTableArg) the queue has entries of.
      params.push(tableArgLabels(filter.table));
      const n = params.length;
      where.push(
        `table_name = (SELECT l FROM unnest($${n}::text[]) WITH ORDINALITY AS u(l, i) WHERE EXISTS (SELECT 1 FROM ${this.table} d WHERE d.table_name = u.l AND (d.source = $1 OR d.source = '')) ORDER BY i LIMIT 1)`,
      );
    }
    if (filter.label !== undefined) {
      params.push(filter.label);
      where.push(`table_name = $${params.length}`);
    }
    if (filter.error) {
      params.push(`%${filter.error.replace(/[\\%_]/g, (m) => `\\${m}`)}%`);
      where.push(`(error ILIKE $${params.length} OR error_code ILIKE $${params.length})`);
    }
    if (filter.olderThanMs !== undefined) {
      params.push(filter.olderThanMs);
      where.push(`first_failed_at < now() - $${params.length}::double precision * interval '1 millisecond'`);
    }
    params.push(filter.limit ?? 1000);
    const { rows } = await this.query<EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM ${this.table} WHERE ${where.join(' AND ')} ORDER BY commit_lsn NULLS FIRST, seq, id LIMIT $${params.length}`, params);
    return rows.map(entryOf);
  }

  async orphans(limit: number): Promise<DeadLetterEntry[]> {
    // A row's head is its oldest entry (by change identity, as replay orders them).
    const { rows } = await this.query<EntryRow>(
      `WITH heads AS (
         SELECT DISTINCT ON (table_name, row_key) table_name, row_key, error_code AS head_code FROM ${this.table}
          WHERE source = $1 AND commit_lsn IS NOT NULL ORDER BY table_name, row_key, commit_lsn, seq)
       SELECT ${ENTRY_COLUMNS} FROM ${this.table} d JOIN heads h USING (table_name, row_key)
        WHERE d.source = $1 AND d.commit_lsn IS NOT NULL AND h.head_code = ANY($2::text[])
        ORDER BY d.commit_lsn, d.seq, d.id LIMIT $3`,
      [this.source, FOLLOWER_CODES, limit],
    );
    return rows.map(entryOf);
  }

  async remove(ids: readonly string[]): Promise<number> {
    const own = ids.filter(isEntryId);
    if (own.length === 0) return 0;
    const res = await this.query(`DELETE FROM ${this.table} WHERE ${this.mine} AND id = ANY($2::bigint[])`, [this.source, own]);
    return res.rowCount ?? 0;
  }

  async recordFailure(id: string, error: string, errorCode?: string): Promise<void> {
    if (!isEntryId(id)) return;
    await this.query(`UPDATE ${this.table} SET attempts = attempts + 1, last_failed_at = now(), error = $3, error_code = coalesce($4, error_code) WHERE ${this.mine} AND id = $2`, [this.source, id, error, errorCode ?? null]);
  }

  async depth(): Promise<{ count: number; oldestAgeSeconds: number }> {
    const { rows } = await this.query<{ n: number; age: number | null }>(
      `SELECT count(*)::int AS n, extract(epoch FROM now() - min(first_failed_at))::float8 AS age FROM ${this.table} WHERE ${this.mine}`,
      [this.source],
    );
    return { count: rows[0]?.n ?? 0, oldestAgeSeconds: rows[0]?.age ?? 0 };
  }

  async blockedRows(): Promise<Set<string>> {
    const { rows } = await this.query<{ table_name: string; row_key: string }>(`SELECT DISTINCT table_name, row_key FROM ${this.table} WHERE source = $1 AND commit_lsn IS NOT NULL`, [this.source]);
    return new Set(rows.map((r) => `${r.table_name}\u0000${r.row_key}`));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[], client?: pg.PoolClient): Promise<pg.QueryResult<R>> {
    try {
      return await (client ?? this.pool).query<R>(sql, params);
    } catch (err) {
      throw new SynclineError('DLQ_FAILED', `dead-letter queue: ${errorMessage(err)}`, { retriable: isRetriablePgError(err), cause: err });
    }
  }
}
