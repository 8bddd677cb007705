import { describe, expect, it } from 'vitest';
import { isRetriablePgError } from '../../src/core/sqlstate.js';

describe('which PostgreSQL errors are retried', () => {
  it('retries lost connections, shutdowns and deadlocks; not data or structure errors', () => {
    const pgError = (code: string): Error => Object.assign(new Error(code), { code });
    for (const code of ['08006', '57P01', '57P03', '53300', '40001', '40P01', 'ECONNREFUSED']) expect(isRetriablePgError(pgError(code)), code).toBe(true);
    for (const code of ['23505', '22001', '42P01', '42703', '28P01']) expect(isRetriablePgError(pgError(code)), code).toBe(false);
    // Class 58 (an I/O error) passes, but not a file that is gone: on the replication
    // connection 'requested WAL segment ... has already been removed', which no restart brings back.
    expect(isRetriablePgError(pgError('58030'))).toBe(true);
    expect(isRetriablePgError(pgError('58P01'))).toBe(false);
    // pg's own messages, without a code: a dropped connection, and a pooled client used again
    // after its connection died (seen when the target restarted under load).
    expect(isRetriablePgError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isRetriablePgError(new Error('Client has encountered a connection error and is not queryable'))).toBe(true);
    expect(isRetriablePgError(new Error('something else'))).toBe(false);
  });
});
