import { rowKeyOf, tableLabelOf, type ChangeEvent, type Row } from '../core/change.js';
import { SynclineError } from '../core/errors.js';
import type { ApplyOutcome, Sink } from '../sink/sink.js';
import { MemoryGateStore, versionGatedSink, type GatedTarget } from '../sink/version-gated-sink.js';

/** Options of MemorySink. */
export interface MemorySinkOptions {
  /**
   * Failure injection: a change for which this returns a reason fails its whole batch with a
   * non-retriable error (nothing of the batch is written), as a target constraint would; apply
   * then dead-letters that change alone.
   */
  reject?: (change: ChangeEvent) => string | undefined;
}

/**
 * An in-memory Sink for unit tests: the version gate, tombstones, TRUNCATE watermarks and
 * positions of the built-in sinks (it passes the same contract suite), rows readable with
 * `row()` / `rows()`, and every write recorded in `writes`. Tables need no creating.
 */
export class MemorySink implements Sink {
  readonly storesPositions = true;
  /** Every batch the gate let through, in order (after folding; stale changes left out). */
  readonly writes: ChangeEvent[][] = [];
  private readonly tables = new Map<string, Map<string, { row: Row; version: bigint }>>();
  private readonly inner: Sink;

  constructor(private readonly options: MemorySinkOptions = {}) {
    const target: GatedTarget = { write: async (changes) => this.write(changes) };
    this.inner = versionGatedSink({ store: new MemoryGateStore(), target });
  }

  prepare(): Promise<void> {
    return this.inner.prepare();
  }

  apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    return this.inner.apply(changes, positions, group);
  }

  positions(group: string): Promise<Map<number, bigint>> {
    return this.inner.positions(group);
  }

  async close(): Promise<void> {}

  /** The stored row of `table` (`schema.table`, or `table` for public) with this key, or undefined. */
  row(table: string, key: Row): Row | undefined {
    const stored = this.tables.get(qualified(table))?.get(rowKeyOf({ key }));
    return stored ? { ...stored.row } : undefined;
  }

  /** Every stored row of `table`, in key order of first write. */
  rows(table: string): Row[] {
    return [...(this.tables.get(qualified(table))?.values() ?? [])].map((r) => ({ ...r.row }));
  }

  private write(changes: readonly ChangeEvent[]): void {
    // All or nothing, like a transaction: check everything before changing anything.
    for (const c of changes) {
      const reason = this.options.reject?.(c);
      if (reason !== undefined) throw new SynclineError('MEMORY_SINK_REJECTED', `${tableLabelOf(c)} row ${rowKeyOf(c)}: ${reason}`, { retriable: false });
    }
    for (const c of changes) {
      const label = tableLabelOf(c);
      let table = this.tables.get(label);
      if (!table) this.tables.set(label, (table = new Map()));
      const version = BigInt(c._version);
      if (c.op === 'TRUNCATE') {
        for (const [k, r] of table) if (r.version < version) table.delete(k);
        continue;
      }
      const key = rowKeyOf(c);
      if (c.op === 'DELETE') {
        table.delete(key);
        continue;
      }
      const stored = table.get(key);
      const row: Row = c.unchanged && stored ? { ...stored.row, ...(c.payload ?? {}) } : { ...(c.payload ?? {}) };
      table.set(key, { row, version });
    }
    this.writes.push([...changes]);
  }
}

function qualified(table: string): string {
  return table.includes('.') ? table : `public.${table}`;
}
