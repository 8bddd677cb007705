/**
 * kafkajs errors → SynclineError. kafkajs already keeps Kafka's broker error codes as a
 * table with a `retriable` flag (kafkajs/src/protocol/error.js) and sets that flag on every
 * error it throws, so the mapping keeps it: `retriable` is kafkajs's own verdict. The one
 * adjustment: KafkaJSNumberOfRetriesExceeded (kafkajs gave up after its own retries) is
 * marked non-retriable by kafkajs but is as retriable as the error that exhausted the
 * retries (a broker that is down now may be up in a minute), as kafkajs itself treats it
 * when deciding to restart a crashed consumer. The same holds for KafkaJSNonRetriableError
 * when it wraps a retriable cause: nested kafkajs retriers wrap an inner
 * NumberOfRetriesExceeded of a connection error that way (seen in the chaos run: publishing
 * during a broker restart failed with "KafkaJSNonRetriableError: Connection error: connect
 * ECONNREFUSED"), and KafkaJSGroupCoordinatorNotFound, which kafkajs throws when no broker
 * answers as coordinator, passes when the broker is back (also wrapped: a consumer that
 * crashed during a broker restart ended `syncline run` with it in the chaos run).
 */
import { SynclineError } from '../../core/errors.js';

interface KafkaJSErrorLike extends Error {
  retriable: boolean;
  /** Broker error name for protocol errors, e.g. `UNKNOWN_TOPIC_OR_PARTITION`. */
  type?: string;
  cause?: unknown;
}

function isKafkaJSError(err: unknown): err is KafkaJSErrorLike {
  return err instanceof Error && err.name.startsWith('KafkaJS') && typeof (err as { retriable?: unknown }).retriable === 'boolean';
}

function rootCause(err: KafkaJSErrorLike): KafkaJSErrorLike {
  let e = err;
  for (let i = 0; i < 10 && isKafkaJSError(e.cause); i++) e = e.cause;
  return e;
}

/** Wraps any error thrown by kafkajs; a SynclineError passes through unchanged. */
export function kafkaError(err: unknown, doing: string): SynclineError {
  if (err instanceof SynclineError) return err;
  if (!isKafkaJSError(err)) {
    return new SynclineError('KAFKA_UNKNOWN', `Kafka: ${doing} failed: ${String(err)}`, { retriable: false, cause: err });
  }
  const wrapper = err.name === 'KafkaJSNumberOfRetriesExceeded' || (err.name === 'KafkaJSNonRetriableError' && isKafkaJSError(err.cause));
  const root = wrapper ? rootCause(err) : err;
  // Wrapped too: a consumer's crash reports it after kafkajs's retries (a broker restarting).
  const retriable = root.name === 'KafkaJSGroupCoordinatorNotFound' || (wrapper ? root.retriable : err.retriable);
  const what = root.type ?? root.name;
  const message = root === err ? err.message : `${err.message} (after kafkajs retries: ${root.name})`;
  return new SynclineError(`KAFKA_${what}`, `Kafka: ${doing} failed: ${what}: ${message}`, { retriable, cause: err });
}
