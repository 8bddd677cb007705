import { STOPPED } from '../core/retry.js';
import type { ApplyOutcome } from '../sink/sink.js';
import type { ApplyContext, Item } from './apply-context.js';
import { addOutcome, emptyOutcome } from './poison.js';

/** Lanes that failed for good: their changes (for isolation) and what the others applied. */
export interface LanesFailed {
  error: unknown;
  items: Item[];
  outcome: ApplyOutcome;
}

/**
 * A batch's changes applied in `lanes` concurrent sink transactions (Sink.applyLanes), split
 * by stream partition: each lane stores its own partitions' positions with its rows, so a
 * lane that commits is whole whatever the others do, and a row's changes (one partition)
 * stay in order in one lane. Each lane retries on its own. Returns the summed outcome,
 * STOPPED, or the lanes that failed permanently (the others are committed).
 */
export async function applyInLanes(ctx: ApplyContext, items: readonly Item[], positions: ReadonlyMap<number, bigint>, lanes: number, signal: AbortSignal): Promise<ApplyOutcome | typeof STOPPED | LanesFailed> {
  const split = Array.from({ length: lanes }, () => ({ items: [] as Item[], positions: new Map<number, bigint>() }));
  for (const item of items) split[item.record.partition % lanes]?.items.push(item);
  for (const [p, o] of positions) split[p % lanes]?.positions.set(p, o);
  const busy = split.filter((l) => l.items.length > 0 || l.positions.size > 0);
  const group = ctx.options.group;
  const results = await Promise.allSettled(
    busy.map((l) => ctx.withRetry(() => ctx.sink.apply(l.items.map((i) => i.change), l.positions, group), signal, 'applying a batch')),
  );
  const outcome = emptyOutcome();
  const failed: LanesFailed = { error: undefined, items: [], outcome };
  let stopped = false;
  for (const [i, r] of results.entries()) {
    if (r.status === 'rejected') {
      if (failed.items.length === 0) failed.error = r.reason;
      failed.items.push(...(busy[i]?.items ?? []));
    } else if (r.value === STOPPED) stopped = true;
    else addOutcome(outcome, r.value);
  }
  if (stopped) return STOPPED;
  return results.some((r) => r.status === 'rejected') ? failed : outcome;
}
