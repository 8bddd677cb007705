import type pg from 'pg';
import { redactUrl } from '../core/redact.js';
import { quoteQualified } from '../core/sql.js';
import { connectPostgres } from './connect.js';

/**
 * Read-only looks at syncline's bookkeeping tables in a PostgreSQL database, for `status`.
 * Not through PostgresSink.positions or PostgresDeadLetterQueue.depth: those need prepare(),
 * which creates the tables, and a status run writes nothing; and a dead-letter table of an
 * older layout must still get its count.
 */

/** The positions a postgres sink stored for `group`; undefined when it has none yet (no table). */
export async function peekSinkPositions(url: string, schema: string, group: string): Promise<Map<number, bigint> | undefined> {
  return withClient(url, async (c) => {
    if (!(await tableExists(c, schema, 'positions'))) return undefined;
    const { rows } = await c.query<{ p: number; o: string }>(`SELECT stream_partition AS p, next_offset::text AS o FROM ${quoteQualified(schema, 'positions')} WHERE group_id = $1`, [group]);
    return new Map(rows.map((r) => [r.p, BigInt(r.o)]));
  });
}

/** A table that holds the changes of a table the target cannot take yet (TABLE_BLOCKED). */
export interface BlockedTable {
  table: string;
  changes: number;
  reason: string;
}

/**
 * The depth of a dead-letter table and the tables it holds, for the pipeline of `source` (the
 * table may hold other pipelines' queues too: see PostgresDeadLetterQueue); undefined when it
 * was never created.
 */
export async function peekDeadLetterTable(url: string, schema: string, source: string): Promise<{ count: number; blockedTables: BlockedTable[] } | undefined> {
  return withClient(url, async (c) => {
    if (!(await tableExists(c, schema, 'dead_letter'))) return undefined;
    const table = quoteQualified(schema, 'dead_letter');
    // A table of an older layout may lack `source`: all of it is counted then.
    const { rows: cols } = await c.query('SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped', [table, 'source']);
    const mine = cols.length > 0 ? `source = $1 OR source = ''` : '$1::text IS NOT NULL';
    const { rows } = await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table} WHERE ${mine}`, [source]);
    // Held tables are a detail: a queue table of an older layout still gets its count.
    const held = await c
      .query<{ table_name: string; n: string; reason: string }>(
        `SELECT table_name, count(*)::text AS n, min(error) AS reason FROM ${table} WHERE (${mine}) AND error_code = 'TABLE_BLOCKED' GROUP BY table_name ORDER BY table_name`,
        [source],
      )
      .catch(() => ({ rows: [] }));
    return { count: Number(rows[0]?.n ?? 0), blockedTables: held.rows.map((h) => ({ table: h.table_name, changes: Number(h.n), reason: redactUrl(h.reason) })) };
  });
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = await connectPostgres({ connectionString: url });
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function tableExists(c: pg.Client, schema: string, table: string): Promise<boolean> {
  const { rows } = await c.query<{ oid: string | null }>('SELECT to_regclass($1)::oid::text AS oid', [quoteQualified(schema, table)]);
  return !!rows[0]?.oid;
}
