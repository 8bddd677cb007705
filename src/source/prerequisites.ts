import { PrerequisiteError } from '../core/errors.js';

/** Refuses to start capture on a server that cannot do logical decoding (`walLevel`: its wal_level), saying how to fix it. */
export function requireLogicalReplication(walLevel: string): void {
  if (walLevel !== 'logical') {
    throw new PrerequisiteError(
      `source wal_level is '${walLevel}', logical decoding needs 'logical'`,
      "run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (e.g. pg_ctlcluster 15 main restart)",
    );
  }
}

/** The highest pgoutput protocol version this build decodes that the server supports. */
export function protocolVersionFor(serverVersion: number): number {
  if (serverVersion >= 160000) return 4;
  if (serverVersion >= 150000) return 3;
  if (serverVersion >= 140000) return 2;
  return 1;
}
