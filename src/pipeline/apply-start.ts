import { PrerequisiteError } from '../core/errors.js';
import { STOPPED } from '../core/retry.js';
import type { ApplyContext } from './apply-context.js';
import { RELEASED_MARK, type TransactionAssembler } from './transaction-assembler.js';

/**
 * Where apply starts reading its assigned partitions (the consumer's `startPositions`): the
 * replay position asked for (`syncline apply --from`, on the first assignment only), else the
 * positions the sink stored with the rows it applied. Those win over the stream's group
 * offsets, which are committed after the sink and may lag it.
 */
export function startPositions(
  ctx: ApplyContext,
  signal: AbortSignal,
  assembler: TransactionAssembler | undefined,
  /** Called with the positions the sink stored for the assigned partitions (not with a replay's). */
  onStored?: (positions: Map<number, bigint>) => void,
): (partitions: readonly number[]) => Promise<Map<number, bigint>> {
  const { sink, log, options } = ctx;
  const group = options.group;
  let replayFrom = options.from;
  return async (partitions) => {
    if (replayFrom) {
      const from = await replayFrom(partitions);
      replayFrom = undefined;
      for (const [p, o] of from) assembler?.startAt(p, o);
      log.info({ group, from: Object.fromEntries([...from].map(([p, o]) => [p, o.toString()])) }, 'replaying from the requested position');
      return from;
    }
    // Sinks without stored positions resume from the stream's committed group offsets.
    if (!sink.storesPositions) return new Map();
    const read = await ctx.withRetry(() => sink.positions(group), signal, 'reading sink positions');
    const stored = read === STOPPED ? new Map<number, bigint>() : read;
    const ends = await options.endOffsets();
    for (const p of partitions) {
      const at = stored.get(p);
      const end = ends.get(p);
      if (at !== undefined && end !== undefined && at > end) {
        // Resuming there would silently skip the records the new stream gets up to that offset.
        throw new PrerequisiteError(
          `the sink's position for stream partition ${p} (${at}) is past the stream's end (${end}): the stream was recreated or truncated`,
          `if the target should be rebuilt from the new stream, delete the group's positions at the sink (DELETE FROM <state_schema>.positions WHERE group_id = '${group}') and run syncline snapshot; otherwise restore the stream directory`,
        );
      }
    }
    // Transactional: every source transaction up to the stored mark was applied whole.
    const released = stored.get(RELEASED_MARK);
    if (assembler && released !== undefined) assembler.resumeAfter(released);
    // A partition the sink never recorded was never applied: start at its beginning.
    const start = new Map(partitions.map((p) => [p, stored.get(p) ?? 0n]));
    const known = new Map(partitions.flatMap((p) => { const at = stored.get(p); return at === undefined ? [] : [[p, at] as const]; }));
    if (known.size > 0) onStored?.(known);
    for (const [p, o] of start) assembler?.startAt(p, o);
    log.info({ group, positions: Object.fromEntries([...start].map(([p, o]) => [p, o.toString()])) }, 'partitions assigned');
    return start;
  };
}
