/**
 * The errors every broker raises the same way. `broker` names the adapter in messages
 * (`Kafka`, `NATS`, `embedded`); the codes are what callers match on.
 */
import { SynclineError } from '../../core/errors.js';

/** The stream, or one of its producers or consumers (`what`), was closed. */
export function streamClosedError(broker: string, what?: 'producer' | 'consumer'): SynclineError {
  return new SynclineError('STREAM_CLOSED', `${broker} stream ${what === undefined ? '' : `${what} `}is closed`, { retriable: false });
}

/**
 * The stream exists with another partition count than configured. `found` says what exists
 * (`Kafka topic t has 3 partitions`), `fix` how to proceed.
 */
export function partitionsMismatchError(found: string, configured: number, fix: string): SynclineError {
  return new SynclineError(
    'STREAM_PARTITIONS_MISMATCH',
    `${found} but ${configured} are configured. ` +
      'The count cannot change (keys would move to other partitions and lose their order): ' +
      `${fix}.`,
    { retriable: false },
  );
}

export function emptyGroupIdError(): SynclineError {
  return new SynclineError('STREAM_GROUP_INVALID', 'consumer group id is empty', { retriable: false });
}

export function concurrentPollError(): SynclineError {
  return new SynclineError('STREAM_CONCURRENT_POLL', 'poll() called while a previous poll() is still running', { retriable: false });
}
