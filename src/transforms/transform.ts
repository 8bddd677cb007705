import { isKeyless, type ChangeEvent } from '../core/change.js';
import { errorMessage, isRetriable, SynclineError } from '../core/errors.js';

/**
 * A change on its way to the sink: return it (changed or not), several changes (fan-out),
 * or `null` / `[]` to drop it. Sync or async; pure (it may run again for the same change:
 * apply retries and replays batches). Transforms run in apply, in order, before the sink, on
 * the change as captured; what they return is what the sink writes.
 *
 * A transform must keep a change's identity — `source`, `lsn`, `commit_lsn`, `xid`, `seq`,
 * `_version` — since the version gate and the dead-letter queue depend on it; a result that
 * changes one is refused. It may rename the table and columns (key columns keep their
 * order, so the row key stays canonical) and hash key values, but not empty a key.
 *
 * A transform that throws dead-letters that change (code `TRANSFORM_FAILED`), unless it
 * throws a SynclineError with `retriable: true`: then the batch is retried with backoff.
 */
export type Transform = (change: ChangeEvent) => TransformResult | Promise<TransformResult>;

/** What a transform returns: the change to write, several, or `null` / `[]` to drop it. */
export type TransformResult = ChangeEvent | readonly ChangeEvent[] | null;

/** A transform failed or returned a change with another identity; the change is dead-lettered. */
export class TransformError extends SynclineError {
  constructor(message: string, cause?: unknown) {
    super('TRANSFORM_FAILED', message, { retriable: false, cause });
    this.name = 'TransformError';
  }
}

const IDENTITY = ['source', 'lsn', 'commit_lsn', 'xid', 'seq', '_version'] as const;

/**
 * Runs `transforms` in order over one change and returns what the sink gets (possibly
 * nothing). Throws a TransformError naming the transform (its index and function name), or
 * the transform's own error when it is a retriable SynclineError.
 */
export async function runTransforms(change: ChangeEvent, transforms: readonly Transform[]): Promise<ChangeEvent[]> {
  let current: ChangeEvent[] = [change];
  for (const [i, transform] of transforms.entries()) {
    const next: ChangeEvent[] = [];
    for (const c of current) {
      let result: TransformResult;
      try {
        const r = transform(c);
        result = isPromise(r) ? await r : r;
      } catch (err) {
        if (isRetriable(err)) throw err;
        throw new TransformError(`transform ${describe(transform, i)} failed on ${c.schema}.${c.table} ${c.op} at ${c.commit_lsn}/${c.seq}: ${errorMessage(err)}`, err);
      }
      if (result === null || result === undefined) continue;
      if (Array.isArray(result)) for (const r of result as readonly ChangeEvent[]) next.push(check(c, r, transform, i));
      else next.push(check(c, result as ChangeEvent, transform, i));
    }
    current = next;
    if (current.length === 0) break;
  }
  return current;
}

function check(input: ChangeEvent, output: ChangeEvent, transform: Transform, i: number): ChangeEvent {
  if (output === null || typeof output !== 'object' || typeof output.table !== 'string' || typeof output.schema !== 'string' || output.key === null || typeof output.key !== 'object') {
    throw new TransformError(`transform ${describe(transform, i)} returned something that is not a change event (${typeof output})`);
  }
  for (const field of IDENTITY) {
    if (output[field] !== input[field]) {
      throw new TransformError(`transform ${describe(transform, i)} changed ${field} (${String(input[field])} -> ${String(output[field])}); the version gate and the dead-letter queue need a change's identity unchanged`);
    }
  }
  if (!isKeyless(input) && isKeyless(output)) {
    throw new TransformError(`transform ${describe(transform, i)} emptied the key of a ${input.schema}.${input.table} change; a keyed row cannot become keyless`);
  }
  return output;
}

function describe(transform: Transform, i: number): string {
  return transform.name ? `#${i + 1} (${transform.name})` : `#${i + 1}`;
}

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}
