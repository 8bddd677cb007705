import type pg from 'pg';
import type { TableName } from '../core/sql.js';

/**
 * Primary keys of every table of the source database (`schema.table` → columns), not only
 * the published ones: a table added to the publication later is known too. A REPLICA
 * IDENTITY FULL table keeps its primary key as its key; one without is keyless.
 */
export async function primaryKeys(client: pg.ClientBase): Promise<Map<string, string[]>> {
  const { rows } = await client.query<{ t: string; cols: string[] }>(
    `SELECT n.nspname || '.' || c.relname AS t, array_agg(a.attname::text ORDER BY a.attnum) AS cols
       FROM pg_index i
       JOIN pg_class c ON c.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
      WHERE i.indisprimary AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
      GROUP BY 1`,
  );
  return new Map(rows.map((r) => [r.t, r.cols]));
}

/**
 * `schema.table` of every table whose primary key is DEFERRABLE: two of its rows may share a
 * key inside a transaction (see UnchangedValues.observeDeferrable).
 */
export async function deferrablePrimaryKeys(client: pg.ClientBase): Promise<Set<string>> {
  const { rows } = await client.query<{ t: string }>(
    `SELECT n.nspname || '.' || c.relname AS t
       FROM pg_index i
       JOIN pg_class c ON c.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE i.indisprimary AND NOT i.indimmediate`,
  );
  return new Set(rows.map((r) => r.t));
}

/** The tables a publication publishes, in name order. */
export async function publicationTables(client: pg.ClientBase, publication: string): Promise<TableName[]> {
  const { rows } = await client.query<{ schemaname: string; tablename: string }>(
    'SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2',
    [publication],
  );
  return rows.map((r) => ({ schema: r.schemaname, table: r.tablename }));
}
