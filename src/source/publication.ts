import { serverVersionNumber } from '../postgres/server-version.js';
import type pg from 'pg';
import { PrerequisiteError } from '../core/errors.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';

/**
 * Makes sure the publication exists. A missing one is created for the configured tables
 * (or FOR ALL TABLES when none are listed) unless `create` is false; configured tables
 * missing from an existing publication are added. Partitioned tables are published through
 * their root (`publish_via_partition_root`, PostgreSQL 13+): their changes carry the table's
 * own name, as its snapshot does, whatever the target makes of partitions (a plain table,
 * another partitioning, MySQL); an existing publication of syncline's is switched to it.
 */
export async function ensurePublication(client: pg.Client, name: string, tables: readonly TableName[], create: boolean): Promise<void> {
  for (const t of tables) {
    const { rows } = await client.query('SELECT to_regclass($1) AS oid', [quoteQualified(t.schema, t.table)]);
    if (!rows[0]?.oid) {
      throw new PrerequisiteError(`source table ${t.schema}.${t.table} does not exist`, `create it, or remove it from source.slots[].tables`);
    }
  }
  const viaRoot = await hasViaRoot(client);
  const existing = await client.query<{ puballtables: boolean; pubviaroot: boolean }>(
    `SELECT puballtables, ${viaRoot ? 'pubviaroot' : 'false AS pubviaroot'} FROM pg_publication WHERE pubname = $1`,
    [name],
  );
  const pub = existing.rows[0];
  const tableList = tables.map((t) => quoteQualified(t.schema, t.table)).join(', ');
  if (!pub) {
    if (!create) {
      throw new PrerequisiteError(`publication ${name} does not exist on the source`, `CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ...; or set create_publication: true`);
    }
    await client.query(`CREATE PUBLICATION ${quoteIdent(name)} ${tables.length > 0 ? `FOR TABLE ${tableList}` : 'FOR ALL TABLES'}${viaRoot ? ' WITH (publish_via_partition_root = true)' : ''}`);
    return;
  }
  if (viaRoot && !pub.pubviaroot && (await publishesPartitions(client, name))) {
    const fix = `ALTER PUBLICATION ${quoteIdent(name)} SET (publish_via_partition_root = true)`;
    if (!create) throw new PrerequisiteError(`publication ${name} publishes partitioned tables by partition: their changes would name each partition, not the table`, fix);
    await client.query(fix);
  }
  if (pub.puballtables || tables.length === 0) return;
  const missing: TableName[] = [];
  for (const t of tables) if (!(await isPublished(client, name, t))) missing.push(t);
  if (missing.length === 0) return;
  if (!create) {
    throw new PrerequisiteError(
      `publication ${name} lacks table(s) ${missing.map((t) => `${t.schema}.${t.table}`).join(', ')}`,
      `ALTER PUBLICATION ${quoteIdent(name)} ADD TABLE ${missing.map((t) => quoteQualified(t.schema, t.table)).join(', ')}`,
    );
  }
  await client.query(`ALTER PUBLICATION ${quoteIdent(name)} ADD TABLE ${missing.map((t) => quoteQualified(t.schema, t.table)).join(', ')}`);
}

/** Adds `table` to the publication unless it publishes it already (or every table); true when it was added. */
export async function addPublicationTable(client: pg.ClientBase, publication: string, table: TableName): Promise<boolean> {
  const all = await client.query<{ puballtables: boolean }>('SELECT puballtables FROM pg_publication WHERE pubname = $1', [publication]);
  if (all.rows[0]?.puballtables || (await isPublished(client, publication, table))) return false;
  await client.query(`ALTER PUBLICATION ${quoteIdent(publication)} ADD TABLE ${quoteQualified(table.schema, table.table)}`);
  return true;
}

/**
 * The publication publishes `table`: it, or (a partitioned table published by partition, or
 * through a schema) one of its partitions, is among pg_publication_tables' rows. Comparing
 * names alone would miss a partitioned table and add it again, which PostgreSQL refuses.
 */
export async function isPublished(client: pg.ClientBase, publication: string, table: TableName): Promise<boolean> {
  const { rows } = await client.query(
    `WITH tree AS (SELECT $2::regclass AS relid UNION SELECT relid FROM pg_partition_tree($2::regclass))
     SELECT 1 FROM pg_publication_tables pt JOIN tree ON to_regclass(format('%I.%I', pt.schemaname, pt.tablename)) = tree.relid
      WHERE pt.pubname = $1 LIMIT 1`,
    [publication, quoteQualified(table.schema, table.table)],
  );
  return rows.length > 0;
}

/** Some table the publication publishes is a partition. */
export async function publishesPartitions(client: pg.ClientBase, publication: string): Promise<boolean> {
  const { rows } = await client.query(
    `SELECT 1 FROM pg_publication_tables pt JOIN pg_class c ON c.oid = to_regclass(format('%I.%I', pt.schemaname, pt.tablename))
      WHERE pt.pubname = $1 AND c.relispartition LIMIT 1`,
    [publication],
  );
  return rows.length > 0;
}

/** PostgreSQL 13+ has publish_via_partition_root. */
export async function hasViaRoot(client: pg.ClientBase): Promise<boolean> {
  return (await serverVersionNumber(client)) >= 130000;
}
