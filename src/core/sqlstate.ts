/**
 * Which PostgreSQL errors are worth retrying, as data. SQLSTATE classes and codes not
 * listed are permanent: retrying the same statement would fail the same way. Each entry
 * carries a delay hint: how long, at least, the cause usually takes to pass (a lost server
 * takes seconds to come back, a lock conflict milliseconds).
 */
export interface PgErrorKind {
  name: string;
  retriable: boolean;
  /** The shortest wait worth making before trying again. */
  minDelayMs: number;
}

/** By the code's first two characters (its class). */
const CLASSES: ReadonlyMap<string, PgErrorKind> = new Map([
  ['08', { name: 'connection exception', retriable: true, minDelayMs: 1000 }],
  ['53', { name: 'insufficient resources (disk full, out of memory, too many connections)', retriable: true, minDelayMs: 1000 }],
  ['57', { name: 'operator intervention (admin shutdown, crash shutdown, cannot connect now)', retriable: true, minDelayMs: 1000 }],
  ['58', { name: 'system error (I/O)', retriable: true, minDelayMs: 1000 }],
  // Permanent, listed for the reader (any class not above is permanent): 22 data exception,
  // 23 integrity constraint violation, 28 invalid authorization, 42 syntax error or access
  // rule violation (missing table or column), 3D invalid catalog name.
]);

/** Single codes, which win over their class. */
const CODES: ReadonlyMap<string, PgErrorKind> = new Map([
  ['40001', { name: 'serialization_failure', retriable: true, minDelayMs: 0 }],
  ['40P01', { name: 'deadlock_detected', retriable: true, minDelayMs: 0 }],
  ['55P03', { name: 'lock_not_available', retriable: true, minDelayMs: 0 }],
  ['55006', { name: 'object_in_use', retriable: true, minDelayMs: 0 }],
  // A file that is gone does not come back by trying again; on the replication connection:
  // "requested WAL segment ... has already been removed" (the slot's WAL), which capture
  // retried in a loop since connection errors there became retriable (30e86aa).
  ['58P01', { name: 'undefined_file', retriable: false, minDelayMs: 0 }],
]);

/** Node socket errors: the server was unreachable or the connection dropped. */
const ERRNOS: ReadonlyMap<string, PgErrorKind> = new Map(
  ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN'].map((code) => [code, { name: code, retriable: true, minDelayMs: 1000 }]),
);

/**
 * node-postgres reports a dropped or unusable connection as a plain Error without a code, so
 * for those its messages are the only evidence. Each pattern is one such message family.
 */
const CODELESS_MESSAGES: readonly { pattern: RegExp; kind: PgErrorKind }[] = [
  // "Connection terminated unexpectedly" / "... due to connection timeout": the server went away.
  { pattern: /Connection terminated/i, kind: { name: 'connection terminated', retriable: true, minDelayMs: 1000 } },
  // "Connection is closed" and the like, from pg and pg-pool once the socket is gone.
  { pattern: /connection.*closed/i, kind: { name: 'connection closed', retriable: true, minDelayMs: 1000 } },
  // pg-pool's "timeout exceeded when trying to connect", pg's "Query read timeout".
  { pattern: /timeout/i, kind: { name: 'client timeout', retriable: true, minDelayMs: 1000 } },
  // "Client has encountered a connection error and is not queryable": a pooled client whose
  // connection died, used again before the pool dropped it (seen when the target restarted under load).
  { pattern: /not queryable/i, kind: { name: 'client not queryable', retriable: true, minDelayMs: 1000 } },
];

const PERMANENT: PgErrorKind = { name: 'permanent', retriable: false, minDelayMs: 0 };

/** What kind of failure a node-postgres error is (by SQLSTATE, socket errno, or message). */
export function classifyPgError(err: unknown): PgErrorKind {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') {
    const msg = err instanceof Error ? err.message : '';
    return CODELESS_MESSAGES.find((m) => m.pattern.test(msg))?.kind ?? PERMANENT;
  }
  return ERRNOS.get(code) ?? CODES.get(code) ?? CLASSES.get(code.slice(0, 2)) ?? PERMANENT;
}

export function isRetriablePgError(err: unknown): boolean {
  return classifyPgError(err).retriable;
}
