import type { ChangeEvent } from './change.js';
import type { Lsn } from './lsn.js';

/** Per-table counts of a sink write (the shape of the sink's ApplyOutcome). */
export interface AppliedCounts {
  applied: number;
  stale: number;
  /** Changes folded into a newer change to the same key within the batch. */
  superseded: number;
  /** By `schema.table`. */
  byTable: ReadonlyMap<string, { applied: number; stale: number }>;
  /** Conflicts between writers the sink decided (see sink.conflict_strategy). */
  conflicts?: readonly { table: string; strategy: string; count: number }[];
}

/** What an observer sees of a dead-lettered change (the dead-letter queue keeps the rest). */
export interface DeadLetteredChange {
  change: ChangeEvent | undefined;
  error: string;
  errorCode: string;
}

/**
 * What the pipeline reports as it works: metrics, status and library users subscribe; the
 * pipeline knows none of them. Tables are named `schema.table` (tableLabelOf) everywhere.
 */
export interface PipelineEventMap {
  /** Capture built a change from the slot (a snapshot row included), before publishing it. */
  'capture:change': ChangeEvent;
  /** The stream durably stored a batch of `changes` changes. */
  'capture:batch:published': { changes: number };
  /** The position confirmed to the source advanced. */
  'capture:confirmed': { lsn: Lsn };
  /** Capture met a new definition of `table` (a DDL): its `_schema_version` `version` starts at `lsn`. */
  'capture:schema:changed': { table: string; version: number; lsn: Lsn };
  /** Apply read `records` stream records; `changes` go to the sink now (until `apply:batch:applied`). */
  'apply:batch:started': { records: number; changes: readonly ChangeEvent[] };
  /** A change the dedup backend had recorded as applied was left out. */
  'apply:duplicate': ChangeEvent;
  /** A batch is committed at the sink with its positions, `seconds` after the write began; `at` is apply's clock. */
  'apply:batch:applied': { changes: readonly ChangeEvent[]; outcome: AppliedCounts; records: number; duplicates: number; seconds: number; at: number };
  /** Held changes of a table were applied again from the dead-letter queue. */
  'apply:held:applied': { outcome: AppliedCounts };
  /** A poll found nothing left to apply. */
  'apply:caught-up': Record<string, never>;
  /** A sink, stream or dead-letter operation failed and is tried again after `delayMs`. */
  'apply:retry': { what: string; attempt: number; delayMs: number; error: unknown };
  /** Changes were stored in the dead-letter queue. */
  'apply:dead-lettered': { letters: readonly DeadLetteredChange[] };
  /** The dead-letter queue's depth, as last read. */
  'apply:dead-letters': { count: number; oldestAgeSeconds: number };
  /** A table's target does not fit its changes: they wait in the dead-letter queue. */
  'apply:table:held': { table: string };
  /** A held table's waiting changes applied: it flows again. */
  'apply:table:released': { table: string };
  /** Records in the assigned partitions not applied yet. */
  'apply:consumer-lag': { records: number };
}

type Listener<P> = (payload: P) => void;

/**
 * A typed, synchronous event emitter. Emitting an event nobody listens to is one property
 * read; emitters whose payload costs something to build ask `listens` first. Listeners run
 * in the emitter's call and must not throw.
 */
export class Events<M extends object = PipelineEventMap> {
  private readonly listeners: { [K in keyof M]?: Listener<M[K]>[] } = {};

  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof M>(name: K, listener: Listener<M[K]>): () => void {
    (this.listeners[name] ??= []).push(listener);
    return () => {
      const list = this.listeners[name];
      const i = list?.indexOf(listener) ?? -1;
      if (list && i >= 0) list.splice(i, 1);
      if (list?.length === 0) delete this.listeners[name];
    };
  }

  listens(name: keyof M): boolean {
    return this.listeners[name] !== undefined;
  }

  emit<K extends keyof M>(name: K, payload: M[K]): void {
    const list = this.listeners[name];
    if (list === undefined) return;
    for (const listener of list) listener(payload);
  }
}

/** The events of one pipeline. */
export type PipelineEvents = Events<PipelineEventMap>;
