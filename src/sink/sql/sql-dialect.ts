import { rowKeyOf, type ChangeEvent, type Row } from '../../core/change.js';
import { formatLsn, parseLsn } from '../../core/lsn.js';
import type { RecordedColumn, SchemaStep, TargetColumnShape } from '../../core/schema-evolution.js';

/** A target table as a SQL sink sees it. */
export interface SqlTable {
  /** `schema.table` of the source: bookkeeping rows and messages name the table by it. */
  label: string;
  /** The quoted target name, for SQL. */
  qualified: string;
  /** The target's columns by name (what a dialect knows of each: its type). */
  columns: ReadonlyMap<string, unknown>;
  primaryKey: string[];
  /**
   * The primary key is DEFERRABLE (postgres): \`ON CONFLICT\` cannot use it as its arbiter
   * (SQLSTATE 55000), so no upsert of the table can succeed.
   */
  deferrableKey?: boolean;
}

/** A keyless table's stored versions (see `../multiset.ts`). */
export interface MultisetVersions {
  /** The high water: the newest change applied, and whether the snapshot reset was. */
  high: { version: bigint; reset: boolean } | undefined;
  /** The table's truncation watermark, as a version. */
  truncation: bigint | undefined;
}

/** A target row as conflict tracking sees it (see `../conflicts/resolve.ts`). */
export interface StoredRow {
  /** Every column as text, syncline's own included. */
  row: Row;
  /** The source that wrote its version; null when syncline never wrote it. */
  source: string | null;
  /** True when the target itself wrote it last (or syncline never did). */
  local: boolean;
  /** Commit time of the version (a local write's, when the database tracks them); null when unknown. */
  clock: string | null;
  lsn: string | null;
  seq: number | null;
  /** The stored version is another source's delete (readDeletions): `row` is empty. */
  deleted?: boolean;
  /** ... its truncation of the table, which stays over the write (a write older than it). */
  truncation?: boolean;
}

/** A deleted row (a tombstone: of a source, or of the target itself), as conflict tracking sees it. */
export interface Deletion {
  source: string;
  lsn: string;
  seq: number;
  /** The delete's source commit time; null when unknown (a tombstone from before it was kept). */
  clock: string | null;
  /** A truncation of the whole table (readTruncations), not a delete of the key. */
  truncation?: boolean;
  /** Made at the target itself, not by syncline (postgres: recorded by a trigger, see local-writes.ts). */
  local?: boolean;
  /**
   * The deleted row's delta counters (`sink.delta_columns`), plus the differences of changes
   * made to that row elsewhere that arrived after it was deleted; null when unknown or when
   * a change that revived the row took them (see `../conflicts/incarnations.ts`).
   */
  counters?: Row | null;
}

/** New counters of one tombstone (Deletion.counters). */
export interface TombstoneCounters {
  rowKey: string;
  source: string;
  counters: Row | null;
}

/** A decided conflict, for `<state_schema>.conflicts`. */
export interface ConflictRecord {
  table: string;
  strategy: string;
  winner: 'incoming' | 'stored';
  /** The newest incoming change (of `run`). */
  incoming: ChangeEvent;
  /** Every change of the row the decision covers, oldest first: each is recorded (see decidedBefore). */
  run: readonly ChangeEvent[];
  incomingClock: string | null;
  storedWriter: string;
  storedClock: string | null;
  /** The stored version (its source's commit LSN and seq); null for a row the target wrote. */
  storedLsn: string | null;
  storedSeq: number | null;
  stored: Row;
  /** The values written, when a row was written (the incoming change's, or a merge). */
  written: Row | null;
}

/** Identity of an incoming change in the conflict record: row, source and version. */
export function conflictIdOf(change: Pick<ChangeEvent, 'key' | 'source' | 'commit_lsn' | 'seq'>): string {
  return `${rowKeyOf(change)}\u0000${change.source}\u0000${formatLsn(parseLsn(change.commit_lsn))}\u0000${change.seq}`;
}

/**
 * What one database contributes to `SqlSink`: its connections, its bookkeeping DDL and the
 * version-gated statements. `SqlSink` owns the order of things (metadata, the transaction,
 * per table truncate, keyless changes, upserts, deletes, then positions), the metadata cache,
 * the column checks and the counting; a dialect only says how each step is written in SQL.
 * Every write is gated on the row's stored version (commit LSN, seq) when the version gate
 * is on, so a replayed batch changes nothing.
 *
 * `C` is a connection, `T` the dialect's table metadata.
 */
export interface SqlDialect<C, T extends SqlTable> {
  /** `the MySQL sink`, for messages: `applying to <name> failed: ...`. */
  readonly name: string;
  /**
   * Runs `fn` on a connection and throws what fails as a SynclineError: retriable or not by
   * the database's error table, structural errors as PrerequisiteError (see `isStructural`).
   * A connection that broke is dropped, not reused.
   */
  withConnection<R>(what: string, fn: (c: C) => Promise<R>): Promise<R>;
  /** Creates the bookkeeping tables when missing. */
  createBookkeeping(c: C): Promise<void>;
  readPositions(c: C, group: string): Promise<Map<number, bigint>>;
  /** Records `positions` (partition → next offset) of `group`; called inside the transaction. */
  writePositions(c: C, group: string, positions: ReadonlyMap<number, bigint>): Promise<void>;
  /**
   * Reads a target table's columns and primary key, adding the version columns (and
   * `_deleted_at` for soft deletes) when missing. Runs outside the batch transaction.
   */
  loadTable(c: C, schema: string, table: string): Promise<T>;
  /** Opens the batch transaction; `changes` are the batch's (a dialect may tag the transaction with them). */
  begin(c: C, changes: readonly ChangeEvent[]): Promise<void>;
  commit(c: C): Promise<void>;
  rollback(c: C): Promise<void>;

  /**
   * Advances the table's truncation watermark to `change` and removes the rows older than
   * it (newer ones, applied from other partitions, stay). False: a newer truncation was
   * already recorded (stale). With conflict tracking the watermark is `change.source`'s and
   * gates that source's changes only.
   */
  truncate(c: C, target: T, change: ChangeEvent): Promise<boolean>;
  /**
   * Of `rows` (changes that left TOASTed values unchanged), those whose row the target lacks
   * and no newer delete or truncation makes stale (see skippableWithoutStoredValues).
   */
  absentRows(c: C, target: T, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]>;
  /**
   * The version-gated upsert of `rows`, which all sent exactly `columns`. Returns how many
   * were written; the others were stale.
   */
  upsert(c: C, target: T, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<number>;
  /**
   * Of `rows`, those whose key holds a stored row older than the change (its version, or no
   * version: a row syncline never wrote), not soft-deleted. A keyless INSERT adopted by the
   * target's key (see `../adopt-target-key.ts`) must not be written over such a row.
   */
  olderStored(c: C, target: T, keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]>;
  /**
   * Writes each DELETE's tombstone (advanced only by a newer delete) and removes (or, soft,
   * marks) the rows older than their delete. Returns how many deletes the version gate
   * accepted (applied): those that removed or marked their row, and those that advanced the
   * tombstone of a key with no row at the target and are newer than the table's truncation (a
   * delete whose insert the batch folded away, or that never reached the target: the
   * tombstone is its effect, and it is no duplicate). The others are stale: an equal or newer
   * tombstone (a replay), a newer stored row, or a truncation at or past it.
   */
  delete(c: C, target: T, keyColumns: string[], rows: ChangeEvent[]): Promise<number>;

  /**
   * Keyless tables: the stored versions, the high water locked for the transaction. With
   * conflict tracking they are `source`'s (a dialect without tracking ignores it).
   */
  readMultisetVersions(c: C, label: string, source: string): Promise<MultisetVersions>;
  /** Adds the new row (`payload`, exactly `columns`) of each change with its version; returns how many. */
  insertRows(c: C, target: T, columns: string[], changes: ChangeEvent[]): Promise<number>;
  /** Removes one row equal to `before` (every column, NULL-safe, as stored); false when there is none. */
  removeOne(c: C, target: T, before: Row): Promise<boolean>;
  /**
   * Records a keyless table's high water: `newest`'s version, or (undefined) only that the
   * snapshot reset was applied; `reset` never goes back to false.
   */
  writeMultisetVersion(c: C, label: string, newest: ChangeEvent | undefined, reset: boolean, source: string): Promise<void>;

  /**
   * Conflict tracking (a dialect that supports it): the stored rows of `rows`' keys, locked
   * for the transaction, by row key (rowKeyOf).
   */
  readStored?(c: C, target: T, keyColumns: string[], rows: ChangeEvent[]): Promise<Map<string, StoredRow>>;
  /**
   * Conflict tracking: the deletes of each key of `rows` (their tombstones, one per source,
   * the target's own included where the dialect records them), newest first, by row key: a
   * late write of another source conflicts with them, and a delta counter change older than
   * the newest one belongs to the deleted row, not to the one stored now.
   */
  readDeletions?(c: C, target: T, keyColumns: string[], rows: ChangeEvent[]): Promise<Map<string, Deletion[]>>;
  /**
   * Conflict tracking: sets the `counters` of tombstones (see Deletion.counters); only called
   * for tombstones that `readDeletions` returned with counters.
   */
  writeTombstoneCounters?(c: C, label: string, updates: readonly TombstoneCounters[]): Promise<void>;
  /**
   * Conflict tracking: makes sure that deletes and truncations the target's own application
   * makes in table `target` are recorded as tombstones of `sink.local_source` (postgres: a
   * trigger). Called when a table is loaded, and again for a batch of the table once
   * `trackLocalWritesEveryMs` passed (the table may have changed: a partition attached);
   * `keyColumns` in the source's order (the row key's), when the batch has them. Must not fail
   * for want of privileges (it warns).
   */
  trackLocalWrites?(c: C, target: T, keyColumns: readonly string[] | undefined): Promise<void>;
  /** How often (ms) trackLocalWrites looks at a table again; default: only when the table is loaded. */
  readonly trackLocalWritesEveryMs?: number;
  /**
   * Conflict tracking: the table's truncations, one per source that truncated it (its newest,
   * with its commit time): a late write of another source older than one of them is stale,
   * as it would have been removed had it arrived first.
   */
  readTruncations?(c: C, label: string): Promise<Deletion[]>;
  /**
   * Conflict tracking: inserts `rows` (all sent exactly `columns`), whose keys `readStored`
   * found absent, under the version gate, but never over a row: a row another writer inserted
   * since the read (which its lock could not cover) stays. Returns the rows not inserted,
   * for the conflict rules to decide against what is stored now.
   */
  insertAbsent?(c: C, target: T, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<ChangeEvent[]>;
  /**
   * Writes `values` into the stored row of `change`'s key and nothing else: the stored version
   * won a conflict, but its counters (delta columns) take the change's difference. Who wrote
   * the version stays as it was.
   */
  writeColumns?(c: C, target: T, keyColumns: string[], change: ChangeEvent, values: Row): Promise<void>;
  /** Records decided conflicts, one entry per change of each run. */
  recordConflicts?(c: C, conflicts: ConflictRecord[]): Promise<void>;
  /**
   * Of `changes` (of table `label`), the conflictIdOf those already settled: decided in a
   * recorded conflict; or applied before and since replaced (a conflict record names their
   * version as the stored one another writer's write replaced), truncated (their source's
   * truncation watermark, which another source's truncation advances over the rows it
   * removed, is at or past them), or, for a DELETE, applied (their source's tombstone of the
   * key is at or past them), or applied and then deleted at the target (postgres: the local
   * tombstone keeps the version the deleted row held). Republished after a capture restart,
   * none may act again.
   */
  decidedBefore?(c: C, label: string, changes: readonly ChangeEvent[]): Promise<Set<string>>;

  /** The target's structure (a table, a column, access), not a row, is wrong. */
  isStructural(err: unknown): boolean;
  /** Forgets what depends on the tables' structure beyond their metadata (prepared statements). */
  invalidate(): void;
  /**
   * Schema evolution (`sink.schema_evolution`). True: DDL joins the batch transaction
   * (PostgreSQL, SQLite); false: DDL commits implicitly (MySQL), so it runs before it.
   */
  readonly transactionalDdl: boolean;
  /** The target's columns as schema evolution compares them (the type as `typeFor` spells it). */
  describeColumns(c: C, target: T): Promise<Map<string, TargetColumnShape>>;
  /** A source column's type as this database spells it in a column it adds or widens. */
  typeFor(column: RecordedColumn): string;
  /**
   * `schema_evolution: full`: creates the target table, when it does not exist, with the
   * source's columns (`columns`, the newest definition) and primary key. Absent: the
   * dialect creates tables itself (postgres: `sink.create_tables`) or not at all.
   */
  createTable?(c: C, schema: string, table: string, columns: readonly RecordedColumn[]): Promise<void>;
  /** Applies schema steps to the target table, in order. */
  evolve(c: C, target: T, steps: readonly SchemaStep[]): Promise<void>;
  /** The fix for columns the target lacks. */
  addColumnsFix(target: T, missing: string[]): string;
  /** The fix for a target whose primary key differs from the source key. */
  primaryKeyFix(target: T, keyColumns: string[]): string;
  close(): Promise<void>;
}
