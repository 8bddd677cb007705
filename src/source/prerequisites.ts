import type pg from 'pg';
import { PrerequisiteError } from '../core/errors.js';

/** Refuses to start capture on a server that cannot do logical decoding, saying how to fix it. */
export async function checkLogicalReplication(client: pg.Client): Promise<{ serverVersion: number }> {
  const { rows } = await client.query<{ wal_level: string; version: string }>(
    "SELECT current_setting('wal_level') AS wal_level, current_setting('server_version_num') AS version",
  );
  const row = rows[0];
  if (!row) throw new Error('server returned no settings');
  if (row.wal_level !== 'logical') {
    throw new PrerequisiteError(
      `source wal_level is '${row.wal_level}', logical decoding needs 'logical'`,
      "run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (e.g. pg_ctlcluster 15 main restart)",
    );
  }
  return { serverVersion: Number(row.version) };
}

/** The highest pgoutput protocol version this build decodes that the server supports. */
export function protocolVersionFor(serverVersion: number): number {
  if (serverVersion >= 160000) return 4;
  if (serverVersion >= 150000) return 3;
  if (serverVersion >= 140000) return 2;
  return 1;
}
