import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import { StructuralError } from '../core/errors.js';
import type { ApplyOutcome, Sink } from '../sink/sink.js';
import { runTransforms, type Transform } from './transform.js';

/** What one successful sink write did: the changes as the sink got them, and its outcome. */
export interface AppliedBatch {
  /** The changes written (after transforms), in stream order; stale ones included. */
  changes: readonly ChangeEvent[];
  /** Changes the transforms dropped from this write. */
  dropped: number;
  outcome: ApplyOutcome;
}

export interface TransformingSinkOptions {
  /** Called after each successful write of at least one change (not for positions-only writes). */
  onApplied?: (batch: AppliedBatch) => void;
}

/**
 * Runs the transforms in front of a sink, the way MappedSink runs `sink.tables`: apply, the
 * stream and the dead-letter queue keep the change as captured, only the sink sees the
 * result. Positions pass through untouched, so a dropped change still lets them advance. A
 * failing transform fails the batch with a non-retriable TransformError: apply then isolates
 * that change by bisection and dead-letters it while the rest is applied. Outcomes and
 * StructuralErrors are labelled with the source table (as metrics and held tables are) when
 * a transform routed a table elsewhere.
 */
export class TransformingSink implements Sink {
  readonly storesPositions: boolean;
  /**
   * The inner sink's lanes without transforms; one with them (a transform may route rows of
   * different stream partitions to one target row, which lanes would write concurrently).
   */
  readonly applyLanes: number;
  /** The inner sink's without transforms (they read and rebuild payloads). */
  readonly lazyPayloads: boolean;

  constructor(
    private readonly inner: Sink,
    private readonly transforms: readonly Transform[],
    private readonly options: TransformingSinkOptions = {},
  ) {
    this.storesPositions = inner.storesPositions;
    this.applyLanes = transforms.length === 0 ? (inner.applyLanes ?? 1) : 1;
    this.lazyPayloads = transforms.length === 0 && inner.lazyPayloads === true;
  }

  prepare(): Promise<void> {
    return this.inner.prepare();
  }

  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    let out: readonly ChangeEvent[] = changes;
    /** Target label → source label, when a transform renamed the table. */
    let sourceOf: Map<string, string> | undefined;
    let dropped = 0;
    if (this.transforms.length > 0 && changes.length > 0) {
      const mapped: ChangeEvent[] = [];
      for (const c of changes) {
        const result = await runTransforms(c, this.transforms);
        if (result.length === 0) dropped++;
        for (const t of result) {
          mapped.push(t);
          if (t.table !== c.table || t.schema !== c.schema) (sourceOf ??= new Map()).set(tableLabelOf(t), tableLabelOf(c));
        }
      }
      out = mapped;
    }
    let outcome: ApplyOutcome;
    try {
      outcome = await this.inner.apply(out, positions, group);
    } catch (err) {
      // Apply holds tables by the name the stream gives them.
      const source = err instanceof StructuralError ? sourceOf?.get(err.table) : undefined;
      if (err instanceof StructuralError && source !== undefined) throw new StructuralError(source, err.detail, err.fix);
      throw err;
    }
    if (sourceOf && outcome.byTable.size > 0) {
      const byTable = new Map<string, { applied: number; stale: number }>();
      for (const [label, counts] of outcome.byTable) {
        const key = sourceOf.get(label) ?? label;
        const sum = byTable.get(key) ?? { applied: 0, stale: 0 };
        byTable.set(key, { applied: sum.applied + counts.applied, stale: sum.stale + counts.stale });
      }
      outcome = { ...outcome, byTable };
    }
    if (out.length > 0 || changes.length > 0) this.options.onApplied?.({ changes: out, dropped, outcome });
    return outcome;
  }

  positions(group: string): Promise<Map<number, bigint>> {
    return this.inner.positions(group);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
