import type pg from 'pg';
import { PrerequisiteError } from '../core/errors.js';
import { quoteIdent, quoteQualified, type TableName } from '../core/sql.js';
import { publicationTables } from './catalog.js';

/**
 * Makes sure the publication exists. A missing one is created for the configured tables
 * (or FOR ALL TABLES when none are listed) unless `create` is false; configured tables
 * missing from an existing publication are added.
 */
export async function ensurePublication(client: pg.Client, name: string, tables: readonly TableName[], create: boolean): Promise<void> {
  for (const t of tables) {
    const { rows } = await client.query('SELECT to_regclass($1) AS oid', [quoteQualified(t.schema, t.table)]);
    if (!rows[0]?.oid) {
      throw new PrerequisiteError(`source table ${t.schema}.${t.table} does not exist`, `create it, or remove it from source.slots[].tables`);
    }
  }
  const existing = await client.query<{ puballtables: boolean }>('SELECT puballtables FROM pg_publication WHERE pubname = $1', [name]);
  const pub = existing.rows[0];
  const tableList = tables.map((t) => quoteQualified(t.schema, t.table)).join(', ');
  if (!pub) {
    if (!create) {
      throw new PrerequisiteError(`publication ${name} does not exist on the source`, `CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ...; or set create_publication: true`);
    }
    await client.query(`CREATE PUBLICATION ${quoteIdent(name)} ${tables.length > 0 ? `FOR TABLE ${tableList}` : 'FOR ALL TABLES'}`);
    return;
  }
  if (pub.puballtables || tables.length === 0) return;
  const have = new Set((await publicationTables(client, name)).map((t) => `${t.schema}.${t.table}`));
  const missing = tables.filter((t) => !have.has(`${t.schema}.${t.table}`));
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
  const published = await client.query(
    `SELECT 1 FROM pg_publication p WHERE p.pubname = $1 AND (p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_tables pt WHERE pt.pubname = p.pubname AND pt.schemaname = $2 AND pt.tablename = $3))`,
    [publication, table.schema, table.table],
  );
  if (published.rowCount !== 0) return false;
  await client.query(`ALTER PUBLICATION ${quoteIdent(publication)} ADD TABLE ${quoteQualified(table.schema, table.table)}`);
  return true;
}
