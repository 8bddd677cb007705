import type { ChangeEvent } from '../core/change.js';

/**
 * An external record of applied changes (`consumer.deduplication.backend` other than `sink`),
 * for sinks without a version gate such as webhooks. Apply asks it before the sink and
 * tells it after: a change is recorded only once the sink applied it, so a failed apply
 * is retried, never skipped as a duplicate.
 */
export interface Dedup {
  /**
   * For each change (same order), whether it was applied before. A change that occurs twice
   * in `changes` counts as seen the second time. Throws a SynclineError (retriable or not).
   */
  seen(changes: readonly ChangeEvent[]): Promise<boolean[]>;
  /** Records `changes` as applied. Called only after the sink committed them. */
  mark(changes: readonly ChangeEvent[]): Promise<void>;
  close(): Promise<void>;
}
