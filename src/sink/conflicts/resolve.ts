import type { ChangeEvent, Row } from '../../core/change.js';

/** `sink.conflict_strategy`, or `custom` for a resolver given to createPipeline. */
export type ConflictStrategy = 'source_lsn_priority' | 'last_write_wins' | 'source_priority' | 'custom';

/** What a target row holds when a write of another writer arrives. */
export interface StoredVersion {
  /** The stored values, as text (syncline's own columns left out). */
  row: Row;
  /** Who wrote it last: a source name, or the target itself (`sink.local_source`, default `local`). */
  writer: string;
  /** True when the target itself (not syncline) wrote it last. */
  local: boolean;
  /** The stored version is a delete (of another source): `row` is empty. */
  deleted?: boolean;
  /** Its clock for last_write_wins (`sink.lww_column`'s value, else its commit time); null when unknown. */
  clock: string | null;
}

/** A write of one writer to a row another writer wrote last. */
export interface Conflict {
  /** `schema.table`. */
  table: string;
  strategy: ConflictStrategy;
  incoming: ChangeEvent;
  /**
   * The changes of the row this batch folded into `incoming` (itself the last), oldest first,
   * newer than what the target holds of their source: delta counters sum their differences.
   */
  run: readonly ChangeEvent[];
  /** The incoming write's clock (`sink.lww_column`'s value, else the source commit time). */
  incomingClock: string | null;
  stored: StoredVersion;
  /** `sink.delta_columns` of the table: counters merged by difference whoever wins. */
  deltaColumns: readonly string[];
}

/**
 * The decision: which version stays, and (`row`) the values to write when they are neither
 * version as it is (a delta merge). With `winner: 'stored'` and a `row`, the row is written
 * (its counters moved) but the stored version's other values stay.
 */
export interface Resolution {
  winner: 'incoming' | 'stored';
  row?: Row;
}

/** Decides a conflict. Must be deterministic: both sides of a bidirectional pair decide alike. */
export type ConflictResolver = (conflict: Conflict) => Resolution;

/** The resolver of a built-in strategy (delta columns merged on top, see withDeltas). */
export function builtInResolver(strategy: Exclude<ConflictStrategy, 'custom'>, priority: readonly string[] = []): ConflictResolver {
  switch (strategy) {
    case 'source_lsn_priority':
      // One writer per entity: LSNs of different writers are not comparable, so the newest
      // arrival wins (the conflict is recorded; declare `sink.writers` to forbid it).
      return () => ({ winner: 'incoming' });
    case 'last_write_wins':
      return (c) => ({ winner: lastWriteWins(c.incomingClock, c.incoming.source, c.stored.clock, c.stored.writer) });
    case 'source_priority':
      return (c) => ({ winner: rank(priority, c.incoming.source) <= rank(priority, c.stored.writer) ? 'incoming' : 'stored' });
  }
}

/**
 * last_write_wins: the later clock wins; equal clocks: the writer whose name sorts first.
 * A stored clock that is unknown (a row written at the target without `lww_column` nor
 * track_commit_timestamp) loses: the incoming write is the only one with a time.
 */
export function lastWriteWins(incomingClock: string | null, incomingWriter: string, storedClock: string | null, storedWriter: string): 'incoming' | 'stored' {
  if (storedClock === null) return 'incoming';
  if (incomingClock === null) return 'stored';
  const order = compareClocks(incomingClock, storedClock);
  if (order !== 0) return order > 0 ? 'incoming' : 'stored';
  return incomingWriter <= storedWriter ? 'incoming' : 'stored';
}

/** Position in the priority list; unlisted writers come after every listed one. */
function rank(priority: readonly string[], writer: string): number {
  const i = priority.indexOf(writer);
  return i < 0 ? priority.length : i;
}

/**
 * Compares two clock values: integers (a hybrid logical clock) numerically, timestamps
 * (PostgreSQL text or ISO-8601, any offset) to the microsecond, anything else as text.
 */
export function compareClocks(a: string, b: string): number {
  const x = clockValue(a);
  const y = clockValue(b);
  if (typeof x === 'bigint' && typeof y === 'bigint') return x < y ? -1 : x > y ? 1 : 0;
  return a < b ? -1 : a > b ? 1 : 0;
}

const INTEGER = /^-?\d+$/;
const TIMESTAMP = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/;

/** A clock as an integer (microseconds since the epoch for a timestamp), or the text itself. */
function clockValue(v: string): bigint | string {
  if (INTEGER.test(v)) return BigInt(v);
  const m = TIMESTAMP.exec(v.trim());
  if (!m) return v;
  let zone = m[4] ?? 'Z';
  if (zone !== 'Z' && /^[+-]\d{2}$/.test(zone)) zone += ':00';
  else if (zone !== 'Z' && !zone.includes(':')) zone = `${zone.slice(0, 3)}:${zone.slice(3)}`;
  const ms = Date.parse(`${m[1]}T${m[2]}${zone}`);
  if (Number.isNaN(ms)) return v;
  return BigInt(ms) * 1000n + BigInt((m[3] ?? '').padEnd(6, '0'));
}

/**
 * Adds `sink.delta_columns` to a resolver: whoever wins, each counter becomes the stored
 * value plus the incoming change's difference (new - old), so concurrent increments on both
 * sides all count. Needs the change's old values (`before`: REPLICA IDENTITY FULL at the
 * source); without them, or for a non-numeric value, the resolver's decision stands.
 */
export function withDeltas(resolver: ConflictResolver): ConflictResolver {
  return (c) => {
    const decided = resolver(c);
    const merged = mergeCounters(c.run, c.stored.row, c.deltaColumns);
    if (!merged) return decided;
    const base = decided.row ?? (decided.winner === 'incoming' ? (c.incoming.payload ?? {}) : pick(c.stored.row, Object.keys(c.incoming.payload ?? {})));
    return { winner: decided.winner, row: { ...base, ...merged } };
  };
}

/**
 * The counters (`deltaColumns`) of `storedRow` moved by the differences (new - old) of `run`
 * (a row's changes, oldest first), or undefined when there is nothing to merge (no counters,
 * a change without old values, not numbers). Applied to every UPDATE of a row with
 * counters, conflict or not: a later change of one source must not overwrite the increments
 * another writer's conflict merged in before it.
 */
export function mergeCounters(run: readonly ChangeEvent[], storedRow: Row, deltaColumns: readonly string[]): Row | undefined {
  if (deltaColumns.length === 0 || run.length === 0) return undefined;
  const out: Row = {};
  for (const col of deltaColumns) {
    let value = storedRow[col];
    for (const change of run) {
      const next = change.payload?.[col];
      // An INSERT counts from zero: its whole value is the difference.
      const prev = change.op === 'INSERT' ? '0' : change.before?.[col];
      if (value == null || next == null || prev == null) return undefined;
      value = addDifference(value, next, prev);
    }
    if (value == null) return undefined;
    out[col] = value;
  }
  return out;
}

/** `stored + (next - prev)`, exact for integers, else in floating point; undefined if not numbers. */
export function addDifference(stored: string, next: string, prev: string): string | undefined {
  if (INTEGER.test(stored) && INTEGER.test(next) && INTEGER.test(prev)) return String(BigInt(stored) + BigInt(next) - BigInt(prev));
  const [s, n, p] = [Number(stored), Number(next), Number(prev)];
  if (![s, n, p].every(Number.isFinite)) return undefined;
  return String(s + (n - p));
}

function pick(row: Row, columns: readonly string[]): Row {
  const out: Row = {};
  for (const c of columns) out[c] = row[c] ?? null;
  return out;
}
