import type { ChangeEvent } from '../core/change.js';
import type { PipelineEvents } from '../core/events.js';
import type { STOPPED } from '../core/retry.js';
import type { Logger } from '../log/logger.js';
import type { Sink } from '../sink/sink.js';
import type { StreamRecord } from '../stream/stream.js';
import type { ApplyOptions } from './apply.js';

/** A change read from the stream, with the record it came in. */
export interface Item {
  change: ChangeEvent;
  record: StreamRecord;
}

/** What the parts of apply (poison isolation, held tables, transactional mode) share. */
export interface ApplyContext {
  readonly sink: Sink;
  readonly events: PipelineEvents;
  readonly log: Logger;
  readonly options: ApplyOptions;
  /**
   * Rows (`rowIdOf`) with a change in the dead-letter queue: their later changes follow it
   * there. Replaced by each re-read of the queue (rows replayed or purged are released).
   */
  blocked: Set<string>;
  /**
   * Retries retriable failures with jittered exponential backoff; after `maxAttempts` it keeps
   * trying at the maximum delay (a sink outage must stall the pipeline, not drop changes);
   * permanent failures propagate. Returns STOPPED when stopped meanwhile.
   */
  withRetry<T>(fn: () => Promise<T>, signal: AbortSignal, what: string): Promise<T | typeof STOPPED>;
  /** Re-reads the dead-letter queue's depth and blocked rows. */
  refreshDeadLetters(signal: AbortSignal): Promise<void>;
}

/** Positions for a sink write that only applies changes (the batch's own write stores them). */
export const EMPTY_POSITIONS: ReadonlyMap<number, bigint> = new Map();
