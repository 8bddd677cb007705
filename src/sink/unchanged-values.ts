import { rowKeyOf, tableLabelOf, type ChangeEvent } from '../core/change.js';
import { SynclineError } from '../core/errors.js';

/**
 * Changes that left TOASTed values unchanged (`unchanged`) carry no value for them: the row
 * stored at the target must supply it. For `absent` ones, whose row the target lacks (and no
 * newer delete or truncation makes them stale), returns those to skip: capture marked them
 * `superseded_at_source` (the row had already left that key at the source, so a later change
 * of the key in the stream decides it). Any other absent one is refused rather than written
 * with NULL or a default: UNCHANGED_VALUE_MISSING, and it is dead-lettered.
 */
export function skippableWithoutStoredValues(absent: readonly ChangeEvent[]): Set<ChangeEvent> {
  const skip = new Set<ChangeEvent>();
  for (const change of absent) {
    if (change.superseded_at_source) {
      skip.add(change);
      continue;
    }
    throw new SynclineError(
      'UNCHANGED_VALUE_MISSING',
      `${change.op} of ${tableLabelOf(change)} row ${rowKeyOf(change)} left ${change.unchanged?.join(', ') ?? 'TOASTed values'} unchanged, but the target has no such row to keep them from; refused rather than writing NULL (fix: syncline repair, or snapshot the table, then replay this dead letter)`,
      { retriable: false },
    );
  }
  return skip;
}
