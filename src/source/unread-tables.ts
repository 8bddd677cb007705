import type pg from 'pg';
import { quoteQualified, type TableName } from '../core/sql.js';
import { DDL_HISTORY_TABLE } from './ddl-history.js';
import { SCHEMA_VERSIONS_TABLE } from './schema-version-store.js';

/** A snapshot job queued by queueUnreadTables. */
export interface UnreadTable {
  table: TableName;
  job: string;
}

/**
 * Queues a snapshot of each table in publication `publication` by name (pg_publication_rel:
 * `FOR TABLE`, `ADD TABLE`) that slot `slot` never recorded a definition of and never queued
 * a job for, in one statement; resolves the jobs queued. Such a table was added to the
 * publication by hand after the slot was made (the tables in it then had their initial
 * snapshot) and has not been written since: the first-definition check (SchemaVersionStore,
 * c174051) only sees a table at its first change, and a table nobody writes (reference data,
 * a lookup table) sends none, so its rows never reached the target. Only a table the
 * publication sends under its own name (pg_publication_tables): a partition added beside its
 * root under publish_via_partition_root travels as the root. Tables met through `FOR ALL
 * TABLES` or a schema are left to that check.
 */
export async function queueUnreadTables(client: pg.ClientBase, stateSchema: string, slot: string, publication: string, ddlHistory: boolean): Promise<UnreadTable[]> {
  const jobs = quoteQualified(stateSchema, 'snapshots');
  const versions = quoteQualified(stateSchema, SCHEMA_VERSIONS_TABLE);
  // A table this slot replicated under another name (the DDL history has its relid under a
  // name with recorded definitions) was renamed: its first definition under the new name
  // queues its snapshot with the rename's warning (SchemaVersionStore). Taken here, the
  // snapshot would record that definition first and the rename would go unreported; and a
  // partitioned table's changes keep its old name until the walsender restarts (PostgreSQL
  // sends no new Relation message for the root's rename), so the target's table of the new
  // name would miss the changes made until then.
  const renamed = ddlHistory
    ? `AND NOT EXISTS (SELECT 1 FROM ${quoteQualified(stateSchema, DDL_HISTORY_TABLE)} h
                        WHERE h.relid = c.oid AND (h.table_schema, h.table_name) IS DISTINCT FROM (n.nspname::text, c.relname::text)
                          AND EXISTS (SELECT 1 FROM ${versions} s WHERE s.slot_name = $1 AND s.table_schema = h.table_schema AND s.table_name = h.table_name))`
    : '';
  const { rows } = await client.query<{ id: string; table_schema: string; table_name: string }>(
    `INSERT INTO ${jobs} (slot_name, table_schema, table_name)
     SELECT $1, n.nspname, c.relname
       FROM pg_catalog.pg_publication_rel pr
       JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
       JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE p.pubname = $2
        -- Under the name its changes carry: not a partition published through its root.
        AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt WHERE pt.pubname = p.pubname AND pt.schemaname = n.nspname AND pt.tablename = c.relname)
        AND NOT EXISTS (SELECT 1 FROM ${jobs} j WHERE j.slot_name = $1 AND j.table_schema = n.nspname AND j.table_name = c.relname)
        AND NOT EXISTS (SELECT 1 FROM ${versions} s WHERE s.slot_name = $1 AND s.table_schema = n.nspname AND s.table_name = c.relname)
        ${renamed}
     RETURNING id::text AS id, table_schema, table_name`,
    [slot, publication],
  );
  return rows.map((r) => ({ table: { schema: r.table_schema, table: r.table_name }, job: r.id }));
}
