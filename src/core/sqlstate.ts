/**
 * Which PostgreSQL errors are worth retrying, as data. SQLSTATE classes and codes not
 * listed are permanent: retrying the same statement would fail the same way.
 */
const RETRIABLE_CLASSES = new Set([
  '08', // connection exception
  '53', // insufficient resources (disk full, out of memory, too many connections)
  '57', // operator intervention (admin shutdown, crash shutdown, cannot connect now)
  '58', // system error (I/O)
]);

const RETRIABLE_CODES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '55006', // object_in_use
]);

/** Node socket errors: the server was unreachable or the connection dropped. */
const RETRIABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

export function isRetriablePgError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') {
    // pg reports a dropped connection as a plain Error without a code.
    const msg = err instanceof Error ? err.message : '';
    // 'not queryable': a pooled client whose connection died, used again before it was dropped.
    return /Connection terminated|connection.*closed|timeout|not queryable/i.test(msg);
  }
  if (RETRIABLE_ERRNOS.has(code)) return true;
  return RETRIABLE_CODES.has(code) || RETRIABLE_CLASSES.has(code.slice(0, 2));
}
