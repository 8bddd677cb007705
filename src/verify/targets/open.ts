import pg from 'pg';
import { PrerequisiteError } from '../../core/errors.js';
import { postgresTarget } from './postgres.js';
import type { TargetType, VerifyTarget } from './target.js';

/** The sink types verify can compare against. */
export const VERIFIABLE_SINKS: readonly TargetType[] = ['postgres', 'mysql', 'sqlite'];

export function isVerifiable(type: string): type is TargetType {
  return (VERIFIABLE_SINKS as readonly string[]).includes(type);
}

/**
 * A fresh connection to a `sink.type` / `sink.url` target; close() releases it. The mysql and
 * sqlite targets (and their client libraries) are loaded only when compared against.
 */
export async function openVerifyTarget(type: string, url: string): Promise<VerifyTarget> {
  switch (type) {
    case 'postgres': {
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => undefined);
      await client.connect();
      return postgresTarget(client, true);
    }
    case 'mysql':
      return (await import('./mysql.js')).openMysqlTarget(url);
    case 'sqlite':
      return (await import('./sqlite.js')).openSqliteTarget(url);
    default:
      throw new PrerequisiteError(`verify compares postgres, mysql and sqlite sinks; sink.type is ${type}`, 'verify the target with its own tools');
  }
}
