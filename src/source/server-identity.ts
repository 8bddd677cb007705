import type pg from 'pg';

/**
 * The source cluster's system identifier (pg_control_system()): fixed when the cluster was
 * initialised, kept by its physical replicas, new on a cluster made by dump/restore or
 * pg_upgrade's initdb. LSNs compare only within one such history: a row versioned by one
 * cluster's LSN says nothing about another's changes (see sink/postgres/source-servers.ts).
 */
export async function systemIdentifierOf(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()');
  const id = rows[0]?.id;
  if (!id) throw new Error('server returned no system identifier');
  return id;
}
