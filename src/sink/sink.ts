import type { ChangeEvent } from '../core/change.js';

/** What applying one batch did, per table. */
export interface ApplyOutcome {
  /** Changes whose effect was written. */
  applied: number;
  /** Changes the version gate skipped: the target already held this version or a newer one. */
  stale: number;
  /** Changes folded into a newer change to the same key within the batch. */
  superseded: number;
  /** Per-table breakdown, for metrics. */
  byTable: Map<string, { applied: number; stale: number }>;
  /** Conflicts between writers newly recorded, per table and strategy (sinks that track them). */
  conflicts?: { table: string; strategy: string; count: number }[];
}

/**
 * A target system. Implementations apply a batch idempotently (version-gated, so a replay
 * has no effect) and, where the target has transactions, store the consumer's stream
 * positions in the same transaction as the rows.
 */
export interface Sink {
  /**
   * True when `apply` stores stream positions atomically with the rows. Apply then resumes
   * from the sink's positions only (a partition the sink never saw starts at offset 0);
   * otherwise it resumes from the stream's committed group offsets.
   */
  readonly storesPositions: boolean;
  /**
   * How many `apply` calls this sink runs at once, each in its own transaction (a sink that
   * stores positions). Apply then splits a batch into that many lanes by stream partition,
   * each applied with its own partitions' positions: a row's changes share a partition, so
   * they stay in order in one lane. Absent: 1.
   */
  readonly applyLanes?: number;
  /**
   * True when the sink reads payloads through `columnsOf` and `lazyJsonOf` (core/lazy-row.ts)
   * on its hot path: apply then hands it change events as capture wrote them with their
   * payloads still text (lazy rows), parsed only if something reads them. Absent: plain rows.
   */
  readonly lazyPayloads?: boolean;
  /** Creates the sink's own bookkeeping (positions, tombstones) if missing. */
  prepare(): Promise<void>;
  /**
   * Applies `changes` (in stream order) and records `positions` (partition → next offset)
   * for `group` atomically with them. Throws a SynclineError whose `retriable` says whether
   * the same batch may succeed later.
   */
  apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome>;
  /** Positions stored by `apply` for `group`; empty if none. */
  positions(group: string): Promise<Map<number, bigint>>;
  close(): Promise<void>;
}
