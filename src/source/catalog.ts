import type pg from 'pg';
import type { TableName } from '../core/sql.js';

/** The source's primary keys, read in one query at capture start. */
export interface PrimaryKeys {
  /** `schema.table` → key columns, of every table of the database, not only the published ones. */
  columns: Map<string, string[]>;
  /** `schema.table` of the tables whose primary key is DEFERRABLE (see UnchangedValues.observeDeferrable). */
  deferrable: Set<string>;
}

/**
 * Primary keys of every table of the source database (`schema.table` → columns), not only
 * the published ones: a table added to the publication later is known too. A REPLICA
 * IDENTITY FULL table keeps its primary key as its key; one without is keyless. A DEFERRABLE
 * key is named as such: two of its rows may share a key inside a transaction.
 */
export async function primaryKeys(client: pg.ClientBase): Promise<PrimaryKeys> {
  const { rows } = await client.query<{ t: string; cols: string[]; deferrable: boolean }>(
    `SELECT n.nspname || '.' || c.relname AS t, array_agg(a.attname::text ORDER BY a.attnum) AS cols, NOT i.indimmediate AS deferrable
       FROM pg_index i
       JOIN pg_class c ON c.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
      WHERE i.indisprimary AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
      GROUP BY 1, 3`,
  );
  return { columns: new Map(rows.map((r) => [r.t, r.cols])), deferrable: new Set(rows.filter((r) => r.deferrable).map((r) => r.t)) };
}

/**
 * The tables a publication publishes, in name order; without those of `stateSchema`
 * (syncline's own bookkeeping, which `FOR ALL TABLES` publishes too: read by a snapshot, it
 * was copied to the target beside the sink's own state).
 */
export async function publicationTables(client: pg.ClientBase, publication: string, stateSchema?: string): Promise<TableName[]> {
  const { rows } = await client.query<{ schemaname: string; tablename: string }>(
    'SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname IS DISTINCT FROM $2 ORDER BY 1, 2',
    [publication, stateSchema ?? null],
  );
  return rows.map((r) => ({ schema: r.schemaname, table: r.tablename }));
}
