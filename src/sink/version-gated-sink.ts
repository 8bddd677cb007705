import { isKeyless, rowKeyOf, tableLabelOf, type ChangeEvent, type Row } from '../core/change.js';
import { StructuralError, SynclineError } from '../core/errors.js';
import type { ApplyOutcome, Sink } from './sink.js';

/**
 * Version gate and positions for targets without transactions (a message broker, a search
 * index, an HTTP API): the bookkeeping the SQL sinks keep next to the rows, kept instead in a
 * small store (a PostgreSQL table: PostgresGateStore; memory: MemoryGateStore; or your own).
 *
 * Per batch: changes to one row are folded into the newest (unchanged TOAST values filled in
 * from the folded ones); each is compared with the row's stored version and its table's
 * TRUNCATE watermark, and only newer ones are written, in version order; then — only after
 * the target accepted them — their versions (and delete tombstones) are marked and the
 * positions stored. A replayed batch is therefore stale and writes nothing. What remains:
 * if the process dies after the target accepted a batch and before the marks, that batch
 * is written once more (at-least-once for it, as the seed's Redis dedup key).
 */

/** A row's last applied version; `deleted` after a DELETE (a tombstone). */
export interface RowVersion {
  version: bigint;
  deleted: boolean;
}

/** One mark: `table` is `schema.table`, `key` the canonical row key (rowKeyOf). */
export interface RowMark extends RowVersion {
  table: string;
  key: string;
}

/** Where the gate keeps versions, TRUNCATE watermarks and stream positions. */
export interface GateStore {
  /** Creates the store's tables or keys if missing; idempotent. */
  prepare(): Promise<void>;
  /** The stored version of each row (`table`, `key`), in order; undefined when never written. */
  versions(rows: readonly { table: string; key: string }[]): Promise<(RowVersion | undefined)[]>;
  /** The TRUNCATE watermark of each table that has one. */
  watermarks(tables: readonly string[]): Promise<Map<string, bigint>>;
  /**
   * Records marks, watermarks and positions, after the target accepted the changes. A
   * version never goes down (an older mark of a row leaves it alone); positions of other
   * partitions stay. Atomic where the store can do it.
   */
  commit(marks: readonly RowMark[], watermarks: ReadonlyMap<string, bigint>, positions: ReadonlyMap<number, bigint>, group: string): Promise<void>;
  positions(group: string): Promise<Map<number, bigint>>;
  close(): Promise<void>;
}

/** The target side: receives only changes the gate let through. */
export interface GatedTarget {
  prepare?(): Promise<void>;
  /**
   * Writes the changes, in version order (a TRUNCATE before newer changes of its table).
   * Throw a SynclineError with `retriable: true` for a failure that may pass (the batch is
   * retried), anything else for a change that can never be written (it is isolated and
   * dead-lettered). An UPDATE may list `unchanged` columns: keep their stored values.
   */
  write(changes: readonly ChangeEvent[]): Promise<void>;
  close?(): Promise<void>;
}

export interface VersionGatedSinkOptions {
  store: GateStore;
  target: GatedTarget;
}

/**
 * A Sink from a GatedTarget and a GateStore: the version gate, tombstones, TRUNCATE
 * watermarks and positions of the built-in sinks for a target that has no transactions.
 * Passes the sink contract suite (`syncline/testing`) when the target writes a batch
 * all-or-nothing; otherwise a failing batch may leave its earlier changes written, never
 * marked, and its replay writes them again.
 */
export function versionGatedSink(options: VersionGatedSinkOptions): Sink {
  return new VersionGatedSink(options.store, options.target);
}

class VersionGatedSink implements Sink {
  readonly storesPositions = true;

  constructor(
    private readonly store: GateStore,
    private readonly target: GatedTarget,
  ) {}

  async prepare(): Promise<void> {
    await this.store.prepare();
    await this.target.prepare?.();
  }

  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    const outcome: ApplyOutcome = { applied: 0, stale: 0, superseded: 0, byTable: new Map() };
    if (changes.length === 0) {
      if (positions.size > 0) await this.store.commit([], new Map(), positions, group);
      return outcome;
    }
    const { rows, truncates, superseded } = fold(changes);
    outcome.superseded = superseded;
    const tables = [...new Set(changes.map(tableLabelOf))];
    const [stored, marks] = await Promise.all([this.store.versions(rows.map((r) => ({ table: tableLabelOf(r), key: rowKeyOf(r) }))), this.store.watermarks(tables)]);
    const watermarks = new Map(marks);
    const newWatermarks = new Map<string, bigint>();
    const count = (c: ChangeEvent, applied: boolean): void => {
      const t = outcome.byTable.get(tableLabelOf(c)) ?? { applied: 0, stale: 0 };
      if (applied) t.applied++;
      else t.stale++;
      outcome.byTable.set(tableLabelOf(c), t);
      if (applied) outcome.applied++;
      else outcome.stale++;
    };
    const writes: ChangeEvent[] = [];
    for (const t of truncates) {
      const label = tableLabelOf(t);
      const v = BigInt(t._version);
      if (v <= (watermarks.get(label) ?? -1n)) {
        count(t, false);
        continue;
      }
      watermarks.set(label, v);
      newWatermarks.set(label, v);
      writes.push(t);
      count(t, true);
    }
    const rowMarks: RowMark[] = [];
    for (const [i, c] of rows.entries()) {
      const v = BigInt(c._version);
      const label = tableLabelOf(c);
      const watermark = watermarks.get(label) ?? -1n;
      const s = stored[i];
      if (v <= watermark || (s !== undefined && v <= s.version)) {
        count(c, false);
        continue;
      }
      // A row older than the table's truncation is gone.
      const live = s !== undefined && !s.deleted && s.version > watermark;
      if (c.unchanged && c.unchanged.length > 0 && c.op !== 'DELETE' && !live) {
        // Capture found the row gone from this key at the source: a later change decides it.
        if ((c as { superseded_at_source?: true }).superseded_at_source) {
          count(c, false);
          continue;
        }
        throw new SynclineError('UNCHANGED_VALUE_MISSING', `${label} row ${rowKeyOf(c)}: an update left TOASTed columns ${c.unchanged.join(', ')} unchanged, but the target has no stored row to keep them from`, { retriable: false });
      }
      writes.push(c);
      rowMarks.push({ table: label, key: rowKeyOf(c), version: v, deleted: c.op === 'DELETE' });
      count(c, true);
    }
    writes.sort((a, b) => compareVersions(a, b));
    if (writes.length > 0) await this.target.write(writes);
    await this.store.commit(rowMarks, newWatermarks, positions, group);
    return outcome;
  }

  positions(group: string): Promise<Map<number, bigint>> {
    return this.store.positions(group);
  }

  async close(): Promise<void> {
    await this.target.close?.();
    await this.store.close();
  }
}

function compareVersions(a: ChangeEvent, b: ChangeEvent): number {
  const x = BigInt(a._version);
  const y = BigInt(b._version);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * The newest change per row (older ones superseded, their values filling the newest one's
 * unchanged columns) and the batch's TRUNCATEs. Keyless tables are refused: without a key
 * there is no row to gate.
 */
function fold(changes: readonly ChangeEvent[]): { rows: ChangeEvent[]; truncates: ChangeEvent[]; superseded: number } {
  const byRow = new Map<string, ChangeEvent>();
  const truncates: ChangeEvent[] = [];
  let superseded = 0;
  for (const c of changes) {
    if (c.op === 'TRUNCATE') {
      truncates.push(c);
      continue;
    }
    if (isKeyless(c)) {
      throw new StructuralError(tableLabelOf(c), `${tableLabelOf(c)} has no key: a version-gated sink needs a primary key (or replica identity) to gate rows`, 'give the table a primary key, or leave it out of the publication');
    }
    const id = `${tableLabelOf(c)}\u0000${rowKeyOf(c)}`;
    const prev = byRow.get(id);
    if (!prev) {
      byRow.set(id, c);
      continue;
    }
    superseded++;
    const [older, newer] = compareVersions(prev, c) <= 0 ? [prev, c] : [c, prev];
    byRow.set(id, fillUnchanged(newer, older));
  }
  return { rows: [...byRow.values()], truncates, superseded };
}

function fillUnchanged(newer: ChangeEvent, older: ChangeEvent): ChangeEvent {
  if (!newer.unchanged || newer.unchanged.length === 0 || !newer.payload || !older.payload) return newer;
  const payload: Row = { ...newer.payload };
  const still: string[] = [];
  for (const col of newer.unchanged) {
    if (Object.prototype.hasOwnProperty.call(older.payload, col) && !older.unchanged?.includes(col)) payload[col] = older.payload[col] ?? null;
    else still.push(col);
  }
  const out: ChangeEvent = { ...newer, payload };
  if (still.length > 0) out.unchanged = still;
  else delete out.unchanged;
  return out;
}

/**
 * A GateStore in memory: for tests and for the in-memory fakes. Its commit is atomic (it
 * cannot fail halfway).
 */
export class MemoryGateStore implements GateStore {
  private readonly rows = new Map<string, RowVersion>();
  private readonly truncated = new Map<string, bigint>();
  private readonly groups = new Map<string, Map<number, bigint>>();

  async prepare(): Promise<void> {}

  async versions(rows: readonly { table: string; key: string }[]): Promise<(RowVersion | undefined)[]> {
    return rows.map((r) => this.rows.get(`${r.table}\u0000${r.key}`));
  }

  async watermarks(tables: readonly string[]): Promise<Map<string, bigint>> {
    const out = new Map<string, bigint>();
    for (const t of tables) {
      const w = this.truncated.get(t);
      if (w !== undefined) out.set(t, w);
    }
    return out;
  }

  async commit(marks: readonly RowMark[], watermarks: ReadonlyMap<string, bigint>, positions: ReadonlyMap<number, bigint>, group: string): Promise<void> {
    for (const m of marks) {
      const id = `${m.table}\u0000${m.key}`;
      const old = this.rows.get(id);
      if (!old || old.version < m.version) this.rows.set(id, { version: m.version, deleted: m.deleted });
    }
    for (const [t, w] of watermarks) if ((this.truncated.get(t) ?? -1n) < w) this.truncated.set(t, w);
    if (positions.size > 0) {
      const g = this.groups.get(group) ?? new Map<number, bigint>();
      for (const [p, o] of positions) g.set(p, o);
      this.groups.set(group, g);
    }
  }

  async positions(group: string): Promise<Map<number, bigint>> {
    return new Map(this.groups.get(group) ?? []);
  }

  async close(): Promise<void> {}
}
