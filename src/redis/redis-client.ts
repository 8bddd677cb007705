import { Redis } from 'ioredis';
import { PrerequisiteError, SynclineError, errorMessage } from '../core/errors.js';

/**
 * A Redis connection for syncline's adapters (the Redis sink and the Redis dedup backend).
 * It connects on first use (so opening a sink does no I/O), fails a command after one
 * reconnect attempt instead of queueing it for long (apply's own backoff then retries the
 * batch), and never lets a dropped connection crash the process.
 */
export function openRedis(url: string): Redis {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 5_000,
    // A batch script of a few thousand changes takes milliseconds; this only catches a dead peer.
    commandTimeout: 30_000,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 2_000),
  });
  // Without a listener ioredis prints every reconnect error; the failing command reports it.
  client.on('error', () => undefined);
  return client;
}

/** Closes politely when connected, else just drops the (lazy or reconnecting) connection. */
export async function closeRedis(client: Redis): Promise<void> {
  if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
  else client.disconnect();
}

/**
 * Redis error replies as retry policy (the first word of the reply is its code). Anything
 * not listed is permanent: the same command would fail the same way.
 */
const RETRIABLE_REPLIES = new Set([
  'LOADING', // the server is loading its dataset after a restart
  'BUSY', // another script is running past busy-reply-threshold
  'TRYAGAIN',
  'CLUSTERDOWN',
  'MASTERDOWN',
  'READONLY', // connected to a replica after a failover
  'NOREPLICAS',
  'MISCONF', // writes refused while snapshots fail to save
  'OOM', // maxmemory reached: stall until memory is freed rather than dead-letter everything
]);

/** Replies meaning every command will fail until an operator acts: apply stops with the fix. */
const PREREQUISITE_REPLIES: Record<string, string> = {
  NOAUTH: 'put the password in the URL: redis://:password@host:6379 (or redis://user:password@...)',
  WRONGPASS: 'check the user and password in the Redis URL',
  NOPERM: 'grant the Redis user the commands and keys syncline uses (EVALSHA, EVAL, SCRIPT, HGETALL, SISMEMBER, SADD, EXPIRE)',
  SYNCLINE_STATE: "remove or rename the key named in the message: it holds another type than syncline's bookkeeping",
};

/** Transport failures (no reply from the server): the command may succeed on a new connection. */
const CONNECTION_ERROR = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|Connection is closed|Command timed out|Stream isn't writeable|connect/i;

/** Maps an ioredis error to a SynclineError with the right retry flag. */
export function classifyRedisError(err: unknown, what: string): SynclineError {
  if (err instanceof SynclineError) return err;
  const message = errorMessage(err);
  const name = err instanceof Error ? err.name : '';
  if (name === 'ReplyError') {
    const code = message.split(/\s/, 1)[0] ?? 'ERR';
    const fix = PREREQUISITE_REPLIES[code];
    if (fix !== undefined) return new PrerequisiteError(`${what} failed: ${message}`, fix);
    // The sink script's own refusal of one change: dead-letter it (see redis-sink.ts).
    if (code === 'UNCHANGED_VALUE_MISSING') return new SynclineError(code, `${what} failed: ${message}`, { retriable: false });
    return new SynclineError(`REDIS_${code}`, `${what} failed: ${message}`, { retriable: RETRIABLE_REPLIES.has(code), cause: err });
  }
  const code = (err as { code?: unknown } | null)?.code;
  const connection = name === 'MaxRetriesPerRequestError' || CONNECTION_ERROR.test(message) || (typeof code === 'string' && CONNECTION_ERROR.test(code));
  return new SynclineError(connection ? 'REDIS_CONNECTION' : 'REDIS_ERROR', `${what} failed: ${message}`, { retriable: connection, cause: err });
}
