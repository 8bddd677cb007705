/**
 * nats.js errors → SynclineError. The retry policy is data: client error codes that a
 * reconnect or a later attempt can cure are retriable; JetStream API errors are not,
 * except "unavailable" (503: JetStream is starting or has no leader yet).
 */
import { SynclineError } from '../../core/errors.js';

/** nats.js `ErrorCode` values after which the same call may succeed later. */
const RETRIABLE_CODES: ReadonlySet<string> = new Set([
  'TIMEOUT', // no answer in time: server busy or a reconnect in progress
  '503', // no responders: JetStream not (yet) available on the server
  '408', // pull request expired server-side
  'DISCONNECT',
  'CONNECTION_REFUSED',
  'CONNECTION_TIMEOUT',
  'IDLE_HEARTBEAT', // missed heartbeats of a pull: the connection stalled
]);

/** JetStream API error codes (`err_code`) of a missing stream or consumer. */
export const JS_STREAM_NOT_FOUND = 10059;
export const JS_CONSUMER_NOT_FOUND = 10014;

interface NatsErrorLike extends Error {
  code: string;
  api_error?: { code: number; err_code?: number; description: string };
}

export function isNatsError(err: unknown): err is NatsErrorLike {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string';
}

/** The JetStream API error code of `err`, if it is one. */
export function apiErrorCode(err: unknown): number | undefined {
  return isNatsError(err) ? err.api_error?.err_code : undefined;
}

/** Wraps any error thrown by nats.js; a SynclineError passes through unchanged. */
export function natsError(err: unknown, doing: string): SynclineError {
  if (err instanceof SynclineError) return err;
  if (!isNatsError(err)) {
    return new SynclineError('NATS_UNKNOWN', `NATS: ${doing} failed: ${String(err)}`, { retriable: false, cause: err });
  }
  const api = err.api_error;
  if (api !== undefined) {
    return new SynclineError(`NATS_JS_${api.err_code ?? api.code}`, `NATS JetStream: ${doing} failed: ${api.description} (${api.code}/${api.err_code ?? '-'})`, {
      retriable: api.code === 503,
      cause: err,
    });
  }
  return new SynclineError(`NATS_${err.code}`, `NATS: ${doing} failed: ${err.message}`, { retriable: RETRIABLE_CODES.has(err.code), cause: err });
}

/**
 * A record over the server's `max_payload` even as a claim check (its key alone is: a value
 * over it goes through the object store, see claim-check.ts), for which nats.js says only MAX_PAYLOAD_EXCEEDED:
 * the record's size and key and the fix, as Kafka's KAFKA_MESSAGE_TOO_LARGE says them. Not
 * retriable: the record never fits until the server's limit is raised.
 */
export function payloadTooLarge(key: string, bytes: number, maxPayload: number, cause: unknown): SynclineError {
  const shown = key.length > 200 ? `${key.slice(0, 200)}…` : key;
  return new SynclineError(
    'NATS_MAX_PAYLOAD_EXCEEDED',
    `NATS: a record of ${bytes} bytes (key ${shown}) is larger than the server's max_payload of ${maxPayload} bytes: raise max_payload in the nats-server configuration beyond it (at most 64 MB), or keep such values out of the published tables`,
    { retriable: false, cause },
  );
}
