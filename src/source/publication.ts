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
 * Resolves the tables it added to an existing publication, and on that switch the partitioned
 * tables it publishes (their rows were sent under their partitions' names): their rows from
 * before are in no change the slot will send under their name (the caller has them read by a
 * snapshot). `addMissing: false`
 * leaves them out (still refused without `create`): capture adds them once it leads and has
 * recorded what the slot's other tables need (PostgresSource.open).
 */
export async function ensurePublication(client: pg.Client, name: string, tables: readonly TableName[], create: boolean, options: { addMissing?: boolean } = {}): Promise<TableName[]> {
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
    return [];
  }
  // Partitioned tables published anew under their root's name: their rows were sent under
  // their partitions' names only, so they are read like added tables.
  let viaRootNow: TableName[] = [];
  if (viaRoot && !pub.pubviaroot && (await publishesPartitions(client, name))) {
    const fix = `ALTER PUBLICATION ${quoteIdent(name)} SET (publish_via_partition_root = true)`;
    if (!create) throw new PrerequisiteError(`publication ${name} publishes partitioned tables by partition: their changes would name each partition, not the table`, fix);
    // addMissing false: switched by the later call, whose answer the caller reads (before, the
    // switch was made here and its tables never read: a root made by pgbench -i --partitions
    // under a schema publication got only the rows changed since, red17c).
    if (options.addMissing === false) return [];
    await client.query(fix);
    viaRootNow = await publishedRoots(client, name);
  }
  if (pub.puballtables || tables.length === 0) return viaRootNow;
  const missing = (await unpublished(client, name, tables)).filter((t) => !viaRootNow.some((r) => r.schema === t.schema && r.table === t.table));
  if (missing.length === 0) return viaRootNow;
  if (!create) {
    throw new PrerequisiteError(
      `publication ${name} lacks table(s) ${missing.map((t) => `${t.schema}.${t.table}`).join(', ')}`,
      `ALTER PUBLICATION ${quoteIdent(name)} ADD TABLE ${missing.map((t) => quoteQualified(t.schema, t.table)).join(', ')}`,
    );
  }
  if (options.addMissing === false) return [];
  await client.query(`ALTER PUBLICATION ${quoteIdent(name)} ADD TABLE ${missing.map((t) => quoteQualified(t.schema, t.table)).join(', ')}`);
  return [...viaRootNow, ...missing];
}

/** The partitioned tables the publication publishes (through their root). */
async function publishedRoots(client: pg.ClientBase, publication: string): Promise<TableName[]> {
  const { rows } = await client.query<{ schemaname: string; tablename: string }>(
    `SELECT pt.schemaname, pt.tablename FROM pg_catalog.pg_publication_tables pt
       JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
       JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
      WHERE pt.pubname = $1 AND c.relkind = 'p' ORDER BY 1, 2`,
    [publication],
  );
  return rows.map((r) => ({ schema: r.schemaname, table: r.tablename }));
}

/** The tables of `tables` that publication `name` (an existing one, not FOR ALL TABLES) does not publish. */
export async function unpublished(client: pg.ClientBase, name: string, tables: readonly TableName[]): Promise<TableName[]> {
  const missing: TableName[] = [];
  for (const t of tables) if (!(await isPublished(client, name, t))) missing.push(t);
  return missing;
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
  const { rows } = await client.query<{ yes: boolean }>(
    `WITH published AS (${publishedRelationsSql('$1')}) SELECT ${publishesSql('published', '$2::regclass')} AS yes`,
    [publication, quoteQualified(table.schema, table.table)],
  );
  return rows[0]?.yes === true;
}

/**
 * SQL: the relations publication `pub` (an SQL expression) publishes, as pg_publication_tables
 * names them: columns `rel` (regclass), `schemaname`, `tablename`. Read once into a CTE by
 * the queries below (the view decodes the publication each time it is read).
 */
export function publishedRelationsSql(pub: string): string {
  return `SELECT to_regclass(format('%I.%I', pt.schemaname, pt.tablename)) AS rel, pt.schemaname, pt.tablename
     FROM pg_catalog.pg_publication_tables pt WHERE pt.pubname = ${pub}`;
}

/**
 * SQL (boolean) for isPublished: among `published` (the name of a CTE of publishedRelationsSql),
 * relation `rel` (a regclass expression; null is published by none) or one of its partitions.
 */
export function publishesSql(published: string, rel: string): string {
  return `EXISTS (SELECT 1 FROM ${published} p WHERE p.rel IN (SELECT ${rel} UNION SELECT relid FROM pg_partition_tree(${rel})))`;
}

/** Some table the publication publishes is a partition. */
export async function publishesPartitions(client: pg.ClientBase, publication: string): Promise<boolean> {
  const { rows } = await client.query<{ yes: boolean }>(`WITH published AS (${publishedRelationsSql('$1')}) SELECT ${publishesPartitionsSql('published')} AS yes`, [publication]);
  return rows[0]?.yes === true;
}

/** SQL (boolean) for publishesPartitions, among `published` (the name of a CTE of publishedRelationsSql). */
export function publishesPartitionsSql(published: string): string {
  return `EXISTS (SELECT 1 FROM ${published} p JOIN pg_catalog.pg_class c ON c.oid = p.rel WHERE c.relispartition)`;
}

/**
 * What ensurePublication would find, read by the start-up check (start-check.ts) in its one
 * query: whether it would have anything to create, alter or refuse.
 */
export interface PublicationFacts {
  /** Every configured table exists. */
  tablesExist: boolean;
  /** The publication's pg_publication row (puballtables, pubviaroot where the server has it); null when missing. */
  publication: { puballtables?: boolean; pubviaroot?: boolean } | null;
  /** Every configured table is published (isPublished). */
  tablesPublished: boolean;
  /** Some table the publication publishes is a partition (publishesPartitions). */
  publishesPartitions: boolean;
  serverVersion: number;
}

/** ensurePublication would do nothing and refuse nothing: the same conditions, in the same order. */
export function publicationInPlace(f: PublicationFacts, configuredTables: number): boolean {
  const pub = f.publication;
  if (!f.tablesExist || !pub) return false;
  if (f.serverVersion >= 130000 && pub.pubviaroot !== true && f.publishesPartitions) return false;
  return pub.puballtables === true || configuredTables === 0 || f.tablesPublished;
}

/** PostgreSQL 13+ has publish_via_partition_root. */
export async function hasViaRoot(client: pg.ClientBase): Promise<boolean> {
  return (await serverVersionNumber(client)) >= 130000;
}
