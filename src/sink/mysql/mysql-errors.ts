/**
 * MySQL/MariaDB errors → what the apply loop does with them, as data. Errnos and client
 * codes not listed are permanent: retrying the same batch would fail the same way, so the
 * batch is split and the offending change goes to the dead-letter queue.
 */
import { PrerequisiteError, SynclineError, errorMessage } from '../../core/errors.js';

type Kind =
  /** May succeed later: locks, lost connections, a server restarting or overloaded. */
  | 'retriable'
  /** The target's structure or access is wrong for every change of the table: stop and say so. */
  | 'prerequisite';

const ERRNOS: ReadonlyMap<number, { name: string; kind: Kind }> = new Map([
  // Retriable.
  [1040, { name: 'ER_CON_COUNT_ERROR (too many connections)', kind: 'retriable' }],
  [1053, { name: 'ER_SERVER_SHUTDOWN', kind: 'retriable' }],
  [1205, { name: 'ER_LOCK_WAIT_TIMEOUT', kind: 'retriable' }],
  [1213, { name: 'ER_LOCK_DEADLOCK', kind: 'retriable' }],
  [1021, { name: 'ER_DISK_FULL', kind: 'retriable' }],
  [1037, { name: 'ER_OUTOFMEMORY', kind: 'retriable' }],
  [1038, { name: 'ER_OUT_OF_SORTMEMORY', kind: 'retriable' }],
  [1203, { name: 'ER_TOO_MANY_USER_CONNECTIONS', kind: 'retriable' }],
  [1927, { name: 'ER_CONNECTION_KILLED (MariaDB)', kind: 'retriable' }],
  [2002, { name: 'CR_CONNECTION_ERROR', kind: 'retriable' }],
  [2003, { name: 'CR_CONN_HOST_ERROR', kind: 'retriable' }],
  [2006, { name: 'CR_SERVER_GONE_ERROR', kind: 'retriable' }],
  [2013, { name: 'CR_SERVER_LOST', kind: 'retriable' }],
  [2055, { name: 'CR_SERVER_LOST_EXTENDED', kind: 'retriable' }],
  [4031, { name: 'ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)', kind: 'retriable' }],
  // The target's structure or access: fix it, then restart.
  [1044, { name: 'ER_DBACCESS_DENIED_ERROR', kind: 'prerequisite' }],
  [1045, { name: 'ER_ACCESS_DENIED_ERROR', kind: 'prerequisite' }],
  [1049, { name: 'ER_BAD_DB_ERROR (unknown database)', kind: 'prerequisite' }],
  [1054, { name: 'ER_BAD_FIELD_ERROR (unknown column)', kind: 'prerequisite' }],
  [1142, { name: 'ER_TABLEACCESS_DENIED_ERROR', kind: 'prerequisite' }],
  [1143, { name: 'ER_COLUMNACCESS_DENIED_ERROR', kind: 'prerequisite' }],
  [1146, { name: 'ER_NO_SUCH_TABLE', kind: 'prerequisite' }],
  // Permanent, listed for the reader (any errno not above is permanent):
  //   1048 column cannot be null, 1062 duplicate entry (a unique key other than the primary
  //   key), 1264 out of range, 1265 data truncated, 1292 incorrect date-time value,
  //   1366 incorrect value, 1406 data too long, 1451/1452 foreign key, 1690 BIGINT out of range,
  //   3140 invalid JSON, 3819 (MySQL) / 4025 (MariaDB) CHECK constraint violated.
]);

/** Client-side (Node socket and mysql2 protocol) codes for an unreachable or dropped server. */
const RETRIABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST', 'PROTOCOL_SEQUENCE_TIMEOUT', 'POOL_CLOSED',
]);

interface MysqlErrorShape {
  errno?: unknown;
  code?: unknown;
  sqlState?: unknown;
  fatal?: unknown;
}

function shape(err: unknown): MysqlErrorShape {
  return typeof err === 'object' && err !== null ? (err as MysqlErrorShape) : {};
}

/** Whether the error is worth retrying (by errno, else by client code). */
export function isRetriableMysqlError(err: unknown): boolean {
  const { errno, code } = shape(err);
  if (typeof errno === 'number') {
    const entry = ERRNOS.get(errno);
    if (entry) return entry.kind === 'retriable';
  }
  return typeof code === 'string' && RETRIABLE_CODES.has(code);
}

/** The connection cannot be reused (mysql2 marks such errors `fatal`). */
export function isFatalMysqlError(err: unknown): boolean {
  const { fatal, code } = shape(err);
  return fatal === true || (typeof code === 'string' && RETRIABLE_CODES.has(code));
}

/** The table's structure (or access to it) is wrong, not one row. */
export function isStructuralMysqlError(err: unknown): boolean {
  const { errno } = shape(err);
  return err instanceof PrerequisiteError || (typeof errno === 'number' && ERRNOS.get(errno)?.kind === 'prerequisite');
}

/** Wraps any mysql2 error as a SynclineError; a SynclineError passes through unchanged. */
export function classifyMysqlError(err: unknown, what: string): SynclineError {
  if (err instanceof SynclineError) return err;
  const { errno, code } = shape(err);
  // mysql2 names errnos from MySQL's list, where 4000 and up mean other things than on
  // MariaDB (its 4025, a CHECK constraint, was printed as ER_INNODB_AUTOEXTEND_SIZE_OUT_OF_RANGE):
  // there the server's own message says what it is, without a name that may be another server's.
  const named = typeof code === 'string' && !(typeof errno === 'number' && errno >= 4000);
  const id = typeof errno === 'number' ? `errno ${errno}${named ? ` ${String(code)}` : ''}` : typeof code === 'string' ? code : undefined;
  const detail = `${what} failed: ${errorMessage(err)}${id ? ` (${id})` : ''}`;
  if (isStructuralMysqlError(err)) {
    // Every change of the table would fail the same way: stop instead of dead-lettering them all.
    return new PrerequisiteError(detail, 'fix the MySQL target (database, tables, columns, primary key, grants) to match the source, then restart');
  }
  return new SynclineError(`SINK_MYSQL_${typeof errno === 'number' ? errno : typeof code === 'string' ? code : 'ERROR'}`, detail, {
    retriable: isRetriableMysqlError(err),
    cause: err,
  });
}
