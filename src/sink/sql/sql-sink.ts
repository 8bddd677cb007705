import { rowKeyOf, tableLabelOf, type ChangeEvent, type Row } from '../../core/change.js';
import { columnsOf, lazyShapeOf, shapeKeyOf, type RowShape } from '../../core/lazy-row.js';
import { parseLsn } from '../../core/lsn.js';
import { PrerequisiteError } from '../../core/errors.js';
import { SharedExclusiveLock } from '../../core/shared-exclusive-lock.js';
import { SCHEMA_MISMATCH } from '../../core/schema-evolution.js';
import { adoptTargetKey } from '../adopt-target-key.js';
import { collapseBatch, type TableBatch } from '../collapse.js';
import { maxVersion, onMissingRow, planMultiset, removesRow } from '../multiset.js';
import type { ApplyOutcome, Sink } from '../sink.js';
import { forTable } from '../table-errors.js';
import { skippableWithoutStoredValues } from '../unchanged-values.js';
import { compareClocks, mergeCounters, type ConflictResolver, type ConflictStrategy, type Resolution } from '../conflicts/resolve.js';
import { addDifferences, countAcrossDelete } from '../conflicts/incarnations.js';
import { BOOKKEEPING_COLUMNS } from './bookkeeping.js';
import { conflictIdOf, type ConflictRecord, type Deletion, type SqlDialect, type SqlTable, type StoredRow, type TombstoneCounters } from './sql-dialect.js';
import { SchemaEvolver, type SchemaEvolution } from './schema-evolver.js';

type Counts = { applied: number; stale: number };
/** What resolveConflicts decided, to write in the batch's transaction: conflict records and tombstone counters by key and source. */
type Decisions = { records: ConflictRecord[]; tombstones: ReadonlyMap<string, TombstoneCounters> };

/** Conflict tracking between writers (fan-in, bidirectional), see README "Many writers". */
export interface ConflictOptions {
  strategy: ConflictStrategy;
  /** Decides each conflict (the strategy's, with the delta columns merged). */
  resolver: ConflictResolver;
  /** `sink.delta_columns` by `schema.table`. */
  deltaColumns: ReadonlyMap<string, readonly string[]>;
  /** `sink.lww_column`: the clock of both versions, when the row has it. */
  lwwColumn?: string;
  /** The writer name of writes made at the target itself (`sink.local_source`). */
  localSource: string;
}

/**
 * A SQL target: the apply template every SQL database shares, written in SQL by its
 * `SqlDialect`. Each batch is one transaction: per table its truncation (a watermark),
 * its keyless changes (a multiset, see `../multiset.ts`), version-gated upserts, deletes
 * with tombstones, then the consumer positions. A table whose target does not fit fails
 * as a StructuralError naming it, so apply holds that table alone.
 */
export class SqlSink<C, T extends SqlTable> implements Sink {
  readonly storesPositions = true;
  /** Target metadata by `schema.table`; cleared when a structural error says it may be stale. */
  private readonly tables = new Map<string, T>();
  private readonly evolver: SchemaEvolver<C, T> | undefined;
  /**
   * Concurrent batches (apply lanes, see Sink.applyLanes) hold it shared; a batch that may
   * run DDL (a table not loaded yet: created, or given the version columns; schema
   * evolution) holds it alone, so two transactions never race the same DDL.
   */
  private readonly ddl = new SharedExclusiveLock();
  /**
   * Conflict tracking: tables whose local writes the dialect was asked to record (see
   * SqlDialect.trackLocalWrites), and when (performance.now()); forgotten with the metadata, so
   * a changed table is checked again, and checked again after trackLocalWritesEveryMs.
   */
  private readonly tracked = new Map<string, number>();

  constructor(
    private readonly dialect: SqlDialect<C, T>,
    private readonly conflicts?: ConflictOptions,
    evolution?: SchemaEvolution,
  ) {
    this.evolver = evolution && evolution.mode !== 'none' ? new SchemaEvolver(dialect, evolution) : undefined;
  }

  async prepare(): Promise<void> {
    await this.dialect.withConnection(`preparing ${this.dialect.name}`, (c) => this.dialect.createBookkeeping(c));
  }

  async positions(group: string): Promise<Map<number, bigint>> {
    return this.dialect.withConnection('reading sink positions', (c) => this.dialect.readPositions(c, group));
  }

  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    const evolver = this.evolver;
    const incoming = changes.map(withoutBookkeeping);
    const prepared = evolver ? await evolver.prepare(incoming) : { changes: incoming, versions: new Map<string, number>() };
    const { tables, superseded } = collapseBatch(prepared.changes, this.conflicts !== undefined);
    const outcome: ApplyOutcome = { applied: 0, stale: 0, superseded, byTable: new Map() };
    const recorded: ConflictRecord[] = [];
    const d = this.dialect;
    const labels = tables.map((b) => tableLabelOf(b));
    const tracking = this.conflicts !== undefined && this.dialect.trackLocalWrites !== undefined;
    const now = performance.now();
    const every = d.trackLocalWritesEveryMs ?? Infinity;
    const untracked = (label: string): boolean => {
      const at = this.tracked.get(label);
      return at === undefined || now - at >= every;
    };
    const mayRunDdl = labels.some((l) => !this.tables.has(l) || (tracking && untracked(l))) || (evolver?.pending(prepared.versions) ?? false);
    await this.ddl.run(mayRunDdl, () => d.withConnection(`applying to ${d.name}`, async (c) => {
      // Table metadata (and adding the version columns: an ALTER TABLE, which commits
      // implicitly in MySQL) happens outside the batch transaction, so a rolled-back batch
      // cannot leave the cache believing in columns that were never committed.
      const targets = new Map<TableBatch, T>();
      for (const batch of tables) {
        const target = await forTable(batch, (err) => d.isStructural(err), () => this.target(c, batch.schema, batch.table));
        targets.set(batch, target);
        if (tracking && d.trackLocalWrites && untracked(target.label)) {
          const track = d.trackLocalWrites.bind(d);
          await forTable(batch, (err) => d.isStructural(err), () => track(c, target, keyColumnsOf(batch)));
          this.tracked.set(target.label, now);
        }
      }
      // Schema evolution: DDL before the first change that needs it, in the batch's
      // transaction where the database has transactional DDL, else just before it.
      const evolve = async (): Promise<void> => {
        if (!evolver) return;
        for (const batch of tables) {
          const changed = await forTable(batch, (err) => d.isStructural(err), () => evolver.evolve(c, targets.get(batch) as T, batch.schema, batch.table, prepared.versions));
          if (!changed) continue;
          this.tables.delete(tableLabelOf(batch));
          this.tracked.delete(tableLabelOf(batch));
          d.invalidate();
          targets.set(batch, await forTable(batch, (err) => d.isStructural(err), () => this.target(c, batch.schema, batch.table)));
        }
      };
      if (!d.transactionalDdl) {
        await evolve();
        evolver?.committed(prepared.versions);
      }
      await d.begin(c, changes);
      try {
        if (d.transactionalDdl) await evolve();
        for (const batch of tables) {
          const target = targets.get(batch) as T;
          const counts: Counts = { applied: 0, stale: 0 };
          await forTable(batch, (err) => d.isStructural(err), async () => {
            if (!this.conflicts && target.primaryKey.length > 0 && batch.multiset.length > 0 && !batch.snapshotReset) {
              // Replays of INSERTs the high water covers stay in the multiset, stale there.
              const { high } = await d.readMultisetVersions(c, target.label, '');
              outcome.superseded += adoptTargetKey(batch, target.primaryKey, high?.version ?? -1n);
            }
            if (batch.truncate) {
              if (await d.truncate(c, target, batch.truncate)) counts.applied += 1;
              else counts.stale += 1;
            }
            if (batch.multiset.length > 0 || batch.snapshotReset) {
              // Tracked: each source's changes against its own versions (LSNs of different servers do not compare).
              const sources = this.conflicts ? bySource(batch.multiset) : new Map([[batch.multiset[0]?.source ?? '', batch.multiset]]);
              // A snapshot reset alone is its truncation's source's.
              if (sources.size === 0) sources.set(batch.truncate?.source ?? '', []);
              for (const [source, changes] of sources) await this.keyless(c, target, changes, batch.snapshotReset, counts, source);
            }
            await this.upsert(c, target, batch, counts, recorded);
            await this.delete(c, target, batch, counts, recorded);
          });
          outcome.applied += counts.applied;
          outcome.stale += counts.stale;
          outcome.byTable.set(tableLabelOf(batch), counts);
        }
        if (recorded.length > 0) outcome.conflicts = countConflicts(recorded);
        if (positions.size > 0) await d.writePositions(c, group, positions);
        await d.commit(c);
        if (d.transactionalDdl) evolver?.committed(prepared.versions);
      } catch (err) {
        await d.rollback(c).catch(() => undefined);
        // The target's structure may have changed (or be the problem, or rolled back with
        // the batch's DDL): re-read it next time.
        if (d.isStructural(err) || (evolver && d.transactionalDdl)) {
          this.tables.clear();
          this.tracked.clear();
          d.invalidate();
        }
        throw err;
      }
    }));
    return outcome;
  }

  async close(): Promise<void> {
    await this.dialect.close();
  }

  private async target(c: C, schema: string, table: string): Promise<T> {
    const label = tableLabelOf({ schema, table });
    let t = this.tables.get(label);
    if (!t) {
      try {
        t = await this.dialect.loadTable(c, schema, table);
      } catch (err) {
        // schema_evolution full: a missing table is created from the source's newest definition.
        const columns = this.dialect.createTable && err instanceof PrerequisiteError ? await this.evolver?.columnsToCreate(schema, table) : undefined;
        if (!columns || !this.dialect.createTable) throw err;
        await this.dialect.createTable(c, schema, table, columns);
        t = await this.dialect.loadTable(c, schema, table);
      }
      this.tables.set(label, t);
    }
    return t;
  }

  private async upsert(c: C, target: T, batch: TableBatch, counts: Counts, recorded: ConflictRecord[]): Promise<void> {
    for (let rows of groupBySentColumns(batch.rows.filter((r) => r.op !== 'DELETE' && r.payload))) {
      const first = rows[0] as ChangeEvent;
      const columns = [...columnsOf(first.payload ?? {})];
      const keyColumns = Object.keys(first.key);
      this.checkColumns(target, columns, keyColumns);
      if (this.conflicts && this.dialect.insertAbsent) {
        // Changes that left TOASTed values unchanged too: their absent keys are settled there,
        // in the one pass through the conflict rules.
        await this.upsertTracked(c, target, columns, keyColumns, rows, batch.runs, counts, recorded);
        continue;
      }
      const keeping = rows.filter((r) => (r.unchanged?.length ?? 0) > 0);
      if (keeping.length > 0) {
        const skip = skippableWithoutStoredValues(await this.dialect.absentRows(c, target, keyColumns, keeping));
        if (skip.size > 0) {
          counts.stale += skip.size;
          rows = rows.filter((r) => !skip.has(r));
          if (rows.length === 0) continue;
        }
      }
      const adopted = batch.adopted;
      if (adopted && adopted.size > 0) await this.refuseSecondRows(c, target, columns, keyColumns, rows.filter((r) => adopted.has(r)));
      const n = await this.dialect.upsert(c, target, columns, keyColumns, rows);
      counts.applied += n;
      counts.stale += rows.length - n;
    }
  }

  /**
   * Keyless INSERTs adopted by the target's key (`../adopt-target-key.ts`): one whose key holds
   * an older row is the source's second row of a key its table does not enforce, which the
   * version-gated upsert would write over the first, silently. Inserted as the keyless row it
   * is instead, it fails on the target's key as it did before the adoption, for apply's
   * per-row failure handling (dead-lettered, the table's later keyless changes behind it).
   * A stored row at or past its version (the reordered keyed update, its own replay) is left
   * to the upsert's gate: stale.
   */
  private async refuseSecondRows(c: C, target: T, columns: string[], keyColumns: string[], rows: ChangeEvent[]): Promise<void> {
    if (rows.length === 0) return;
    const older = await this.dialect.olderStored(c, target, keyColumns, rows);
    if (older.length > 0) await this.dialect.insertRows(c, target, columns, older);
  }

  private async delete(c: C, target: T, batch: TableBatch, counts: Counts, recorded: ConflictRecord[]): Promise<void> {
    let rows = batch.rows.filter((r) => r.op === 'DELETE');
    if (rows.length === 0) return;
    const keyColumns = Object.keys((rows[0] as ChangeEvent).key);
    this.checkColumns(target, [], keyColumns);
    if (this.conflicts && this.dialect.insertAbsent) {
      // Deleting a row another writer wrote is a conflict like any write; deleting an absent
      // row only leaves the tombstone, whoever inserts the key meanwhile.
      const { write, absent } = await this.resolveConflicts(c, target, [], keyColumns, rows, batch.runs, counts, recorded);
      rows = [...write, ...absent];
      if (rows.length === 0) return;
    }
    const n = await this.dialect.delete(c, target, keyColumns, rows);
    counts.applied += n;
    counts.stale += rows.length - n;
  }

  /**
   * A keyless table's changes, in stream order, after the batch's truncation; `sawReset`: the
   * batch holds the table's snapshot reset. The rules are in `../multiset.ts`.
   */
  private async keyless(c: C, target: T, changes: readonly ChangeEvent[], sawReset: boolean, counts: Counts, source: string): Promise<void> {
    const d = this.dialect;
    const label = target.label;
    const { high, truncation } = await d.readMultisetVersions(c, label, source);
    const wasReset = high?.reset === true;
    const reset = wasReset || sawReset;
    const plan = planMultiset(label, changes, maxVersion(high?.version ?? -1n, truncation), counts);
    let adds: ChangeEvent[] = [];
    const flushAdds = async (): Promise<void> => {
      for (const group of groupBySentColumns(adds)) {
        // Rows with the same columns share statements (a column added at the source mid-batch makes two).
        const columns = Object.keys((group[0] as ChangeEvent).payload ?? {});
        this.checkColumns(target, columns, undefined);
        counts.applied += await d.insertRows(c, target, columns, group);
      }
      adds = [];
    };
    for (const change of plan.changes) {
      if (removesRow(change)) {
        await flushAdds(); // a row added earlier in this batch may be the one to remove
        const before = change.before ?? {};
        this.checkColumns(target, Object.keys(before), undefined);
        if (!(await d.removeOne(c, target, before))) {
          // Tracked: another writer removed the row first (both sides deleted it): not drift.
          if (!onMissingRow(label, change, reset && !this.conflicts, counts)) continue;
        } else if (change.op === 'DELETE') {
          counts.applied++;
          continue;
        }
      }
      if (change.payload) adds.push(change);
    }
    await flushAdds();
    if (plan.newest || (reset && !wasReset)) await d.writeMultisetVersion(c, label, plan.newest, reset, source);
  }

  /**
   * Conflict tracking's upsert. The stored rows are read under their locks and each conflict
   * decided; but a key with no row has nothing to lock, and another writer (another source's
   * apply, the application at the target) may insert it before this transaction writes. So
   * the absent keys are inserted without overwriting, and the ones another writer got to
   * first go through the conflict rules again against that row (now locked). A key that is
   * still absent and still refused after that is stale (a newer delete or truncation).
   */
  private async upsertTracked(
    c: C,
    target: T,
    columns: string[],
    keyColumns: string[],
    rows: ChangeEvent[],
    runs: ReadonlyMap<string, ChangeEvent[]> | undefined,
    counts: Counts,
    recorded: ConflictRecord[],
  ): Promise<void> {
    const d = this.dialect;
    if (!d.insertAbsent) throw new Error(`${d.name} sink does not track conflicts`);
    let pending = rows;
    for (let round = 0; pending.length > 0; round++) {
      const { write, absent, deferred } = await this.resolveConflicts(c, target, columns, keyColumns, pending, runs, counts, recorded, true);
      if (write.length > 0) {
        const n = await d.upsert(c, target, columns, keyColumns, write);
        counts.applied += n;
        counts.stale += write.length - n;
      }
      if (absent.length === 0) return;
      // A change that left TOASTed values unchanged is not inserted: no row keeps them. The
      // resolver decided it against a delete, or nothing, as for any change of an absent key;
      // but its decision holds only if it is written, like a refused insert's (below). Still
      // absent and not gated by its own source's tombstone or truncation: skipped (stale)
      // when capture found the row gone at the source (superseded_at_source), else refused.
      // Otherwise (another writer inserted the key since it was read, or its source deleted or
      // truncated it later) it is refused here and decided again, as a refused insert.
      // (Before, such changes were decided once before this pass, their decisions written at
      // once: a winner over another source's delete left a conflict record, and cleared the
      // deleted row's counters, though the change, skipped as superseded, wrote nothing.)
      const lacking = absent.filter((r) => (r.unchanged?.length ?? 0) > 0);
      const insert = lacking.length === 0 ? absent : absent.filter((r) => (r.unchanged?.length ?? 0) === 0);
      const refused = insert.length > 0 ? await d.insertAbsent(c, target, columns, keyColumns, insert) : [];
      counts.applied += insert.length - refused.length;
      if (lacking.length > 0) {
        const ungated = new Set(await d.absentRows(c, target, keyColumns, lacking));
        const skip = skippableWithoutStoredValues([...ungated]);
        counts.stale += skip.size;
        refused.push(...lacking.filter((r) => !ungated.has(r)));
      }
      // The decisions of the keys inserted hold; a refused key's is made again (or is stale) and
      // must not be on record: its tombstone's counters are not spent, nor is its change decided.
      const undone = new Set([...refused, ...lacking].map((r) => rowKeyOf(r)));
      await this.writeDecisions(c, target, {
        records: deferred.records.filter((r) => !undone.has(rowKeyOf(r.incoming))),
        tombstones: new Map([...deferred.tombstones].filter(([, t]) => !undone.has(t.rowKey))),
      }, recorded);
      // A refused key whose row is still absent was refused by the gate: stale. Twice is
      // enough to tell (a row that came and went in between is as good as a newer delete).
      if (round === 1) {
        counts.stale += refused.length;
        return;
      }
      pending = refused;
    }
  }

  /**
   * Conflict tracking: of `rows`, those to write (`write`: over a stored row, `absent`: no
   * row was stored, see upsertTracked). A row whose stored version another writer
   * made (another source, or the target itself since syncline wrote it) is a conflict,
   * decided by the resolver and recorded; the loser is skipped (counted stale) and a merge
   * replaces the incoming values. Rows of the same source go to the version gate as they are.
   */
  private async resolveConflicts(
    c: C,
    target: T,
    columns: string[],
    keyColumns: string[],
    rows: ChangeEvent[],
    runs: ReadonlyMap<string, ChangeEvent[]> | undefined,
    counts: Counts,
    recorded: ConflictRecord[],
    deferAbsent = false,
  ): Promise<{ write: ChangeEvent[]; absent: ChangeEvent[]; deferred: Decisions }> {
    const cf = this.conflicts as ConflictOptions;
    const d = this.dialect;
    if (!d.readStored || !d.recordConflicts || !d.decidedBefore || !d.readDeletions || !d.readTruncations) throw new Error(`${d.name} sink does not track conflicts`);
    const deltas = cf.deltaColumns.get(target.label) ?? [];
    const stored = await d.readStored(c, target, keyColumns, rows);
    // A key another writer deleted: that delete is the stored version (a write arriving after
    // it must not win only by arriving later). A delete of an absent key has nothing to do.
    // With delta counters the deletes of stored keys matter too: the row may have been
    // inserted anew since (see ../conflicts/incarnations.ts).
    const writes = rows.filter((r) => r.op !== 'DELETE' && !stored.has(rowKeyOf(r)));
    const looked = deltas.length > 0 ? rows : writes;
    const deletions = looked.length > 0 ? await d.readDeletions(c, target, keyColumns, looked) : new Map<string, Deletion[]>();
    const truncations = looked.length > 0 ? await d.readTruncations(c, target.label) : [];
    const out: ChangeEvent[] = [];
    const absent: ChangeEvent[] = [];
    const clockOf = (r: ChangeEvent): string | null => (cf.lwwColumn !== undefined && r.payload && cf.lwwColumn in r.payload ? (r.payload[cf.lwwColumn] ?? null) : r.commit_ts);
    const tombstones = new Map<string, TombstoneCounters>();
    const setCounters = (key: string, x: Deletion, counters: Row | null): void => {
      tombstones.set(`${key}\u0000${x.source}`, { rowKey: key, source: x.source, counters });
    };
    // Of several writers' deletes of the key (and truncations of the table), the one that
    // decides: the first that stays over the write (then the write loses), else the newest
    // delete (the write wins them all). A delete is decided by the resolver; a truncation by
    // time alone (whatever the strategy, it removes only what was written before it).
    const decidingDeletion = (r: ChangeEvent, all: readonly Deletion[] | undefined): { s: StoredRow; x: Deletion } | undefined => {
      const deletes = all?.filter((x) => x.source !== r.source) ?? [];
      const list = [...deletes, ...truncations.filter((t) => t.source !== r.source)];
      if (list.length === 0) return undefined;
      const asStored = (x: Deletion): { s: StoredRow; x: Deletion } => ({
        s: { row: {}, source: x.source, local: x.local === true, clock: x.clock, lsn: x.lsn, seq: x.seq, deleted: true, ...(x.truncation ? { truncation: true } : {}) },
        x,
      });
      const keeps = (x: Deletion): boolean =>
        x.truncation
          ? x.clock !== null && compareClocks(r.commit_ts, x.clock) <= 0
          : cf.resolver({ table: target.label, strategy: cf.strategy, incoming: r, run: [r], incomingClock: clockOf(r), stored: { row: {}, writer: x.source, local: x.local === true, clock: x.clock, deleted: true }, deltaColumns: deltas }).winner === 'stored';
      const deciding = list.find(keeps);
      if (deciding) return asStored(deciding);
      // Newer than every truncation and winning every delete: no conflict unless there was a delete.
      const first = deletes[0];
      return first && asStored(first);
    };
    // The changes of `run` whose counter differences count on the stored row: not those
    // older than the key's newest delete (see ../conflicts/incarnations.ts).
    const counting = (key: string, run: ChangeEvent[]): ChangeEvent[] => {
      let newest: { clock: string; tombstone?: Deletion } | undefined;
      for (const x of [...(deletions.get(key) ?? []), ...truncations]) {
        if (x.clock !== null && (!newest || compareClocks(x.clock, newest.clock) > 0)) newest = x.truncation ? { clock: x.clock } : { clock: x.clock, tombstone: x };
      }
      if (!newest) return run;
      const counted = countAcrossDelete(run, { clock: newest.clock, counters: newest.tombstone?.counters ?? null }, clockOf, cf.lwwColumn, deltas);
      if (counted.counters !== undefined && newest.tombstone) setCounters(key, newest.tombstone, counted.counters);
      return counted.run;
    };
    const candidates: { r: ChangeEvent; s: StoredRow; x: Deletion | undefined; run: ChangeEvent[] }[] = [];
    for (const r of rows) {
      const key = rowKeyOf(r);
      const row = stored.get(key);
      const deciding = row ? undefined : decidingDeletion(r, deletions.get(key));
      const s = row ?? deciding?.s;
      if (!s) {
        absent.push(r);
        continue;
      }
      // The row's changes in this batch that the target does not hold yet (a republished run
      // may start with ones it does).
      const run = (runs?.get(key) ?? [r]).filter((ch) => s.source !== ch.source || s.lsn === null || newerThan(ch, s.lsn, s.seq ?? 0));
      if (!s.local && s.source === r.source) {
        // The same source: the version gate decides; counters still take the difference.
        const counted = deltas.length > 0 && r.op !== 'DELETE' ? counting(key, run) : run;
        let counters = r.op === 'UPDATE' && counted.length > 0 ? mergeCounters(counted, s.row, deltas) : undefined;
        // Every change older than a delete since: the stored counters stay.
        if (counted.length === 0 && run.length > 0 && r.payload) counters = pickPresent(s.row, deltas);
        out.push(counters ? { ...r, payload: { ...r.payload, ...counters } } : r);
        continue;
      }
      // Changed at the target since this source's version: a replay of that version or an
      // older one is stale, not a conflict.
      if (run.length === 0) {
        counts.stale++;
        continue;
      }
      candidates.push({ r, s, x: deciding?.x, run });
    }
    // `deferAbsent`: the decisions of keys to insert are written once the insert holds (see upsertTracked).
    const settle = async (records: ConflictRecord[]): Promise<{ write: ChangeEvent[]; absent: ChangeEvent[]; deferred: Decisions }> => {
      const later = new Set(deferAbsent ? absent.map((r) => rowKeyOf(r)) : []);
      const now = { records: records.filter((r) => !later.has(rowKeyOf(r.incoming))), tombstones: new Map([...tombstones].filter(([, t]) => !later.has(t.rowKey))) };
      await this.writeDecisions(c, target, now, recorded);
      const deferred = { records: records.filter((r) => later.has(rowKeyOf(r.incoming))), tombstones: new Map([...tombstones].filter(([, t]) => later.has(t.rowKey))) };
      return { write: out, absent, deferred };
    };
    if (candidates.length === 0) return settle([]);
    // A change decided in a conflict before (republished) has no effect again: a losing write
    // leaves no version of its source on the row, so its record is what remembers it.
    const decided = await d.decidedBefore(c, target.label, candidates.flatMap((x) => x.run));
    const records: ConflictRecord[] = [];
    for (const { s, x, run: all } of candidates) {
      const run = all.filter((ch) => !decided.has(conflictIdOf(ch)));
      const r = run.at(-1);
      if (!r) {
        counts.stale++;
        continue;
      }
      const key = rowKeyOf(r);
      let storedRow = withoutColumns(s.row);
      // Counters across deletes: over a stored row, only the changes since the newest delete
      // count; over a deleted row, a run of updates revives its counters.
      const revives = x !== undefined && !x.truncation && deltas.length > 0 && x.counters != null;
      let counted = run;
      if (!s.deleted && deltas.length > 0 && run.some((ch) => ch.op !== 'DELETE')) counted = counting(key, run);
      else if (revives && x.counters && run.every((ch) => ch.op === 'UPDATE')) storedRow = { ...x.counters };
      const storedClock = cf.lwwColumn !== undefined && cf.lwwColumn in s.row ? (s.row[cf.lwwColumn] ?? null) : s.clock;
      const incomingClock = clockOf(r);
      const writer = s.local ? cf.localSource : (s.source ?? cf.localSource);
      // Deletes among the row's changes: the last one decides the row (a delete the batch folded
      // into a later write, as when deleted and inserted anew, either removed the stored row, and
      // the counters start anew from the insert, or lost to it, and the insert adds its values);
      // the updates before a losing one still move the counters.
      let fresh = false;
      const removal = lastDelete(counted);
      if (!s.deleted && removal && deltas.length > 0) {
        if (r.op !== 'DELETE') {
          const stays = { row: storedRow, writer, local: s.local, clock: storedClock };
          fresh = cf.resolver({ table: target.label, strategy: cf.strategy, incoming: removal, run: [removal], incomingClock: clockOf(removal), stored: stays, deltaColumns: [] }).winner === 'incoming';
        }
        counted = fresh ? [] : counted.filter((ch) => ch.op !== 'DELETE');
      }
      const decision: Resolution = s.truncation ? { winner: 'stored' } : cf.resolver({
        table: target.label,
        strategy: cf.strategy,
        incoming: r,
        run: counted,
        incomingClock,
        stored: { row: storedRow, writer, local: s.local, clock: storedClock, ...(s.deleted ? { deleted: true } : {}) },
        deltaColumns: deltas,
      });
      if (revives && x.counters) {
        // The deleted row's counters come back with the winning write, or keep the losing one's differences.
        if (decision.winner === 'incoming') setCounters(key, x, null);
        else {
          const buried = addDifferences(x.counters, run, deltas);
          if (buried) setCounters(key, x, buried);
        }
      }
      let written: Row | null = null;
      if (decision.winner === 'incoming') {
        // A merge is written in the columns this statement writes.
        written = decision.row ? pickColumns({ ...r.payload, ...decision.row }, columns) : r.payload;
        // Every change older than a delete since: the stored counters stay.
        if (counted.length === 0 && !fresh && !s.deleted && written) written = { ...written, ...pickPresent(storedRow, deltas.filter((col) => columns.includes(col))) };
        const winner = written === r.payload ? r : { ...r, payload: written };
        // Over a deleted row: an insert, never over a row another writer inserted meanwhile.
        if (s.deleted) absent.push(winner);
        else out.push(winner);
      } else {
        counts.stale++;
        // A losing delete writes no columns, but the counters of the updates before it move.
        const changed = decision.row && !s.deleted ? changedColumns(storedRow, decision.row, r.op === 'DELETE' ? deltas : columns) : undefined;
        if (changed && this.dialect.writeColumns) {
          await this.dialect.writeColumns(c, target, keyColumns, r, changed);
          written = { ...storedRow, ...changed };
        }
      }
      records.push({ table: target.label, strategy: cf.strategy, winner: decision.winner, incoming: r, run, incomingClock, storedWriter: writer, storedClock, storedLsn: s.local ? null : s.lsn, storedSeq: s.local ? null : s.seq, stored: storedRow, written });
    }
    return settle(records);
  }

  /** Conflict records and tombstone counters changed (buried or revived) by resolveConflicts, in its transaction. */
  private async writeDecisions(c: C, target: T, decisions: Decisions, recorded: ConflictRecord[]): Promise<void> {
    if (decisions.records.length > 0 && this.dialect.recordConflicts) {
      await this.dialect.recordConflicts(c, decisions.records);
      recorded.push(...decisions.records);
    }
    const updates = decisions.tombstones;
    if (updates.size > 0 && this.dialect.writeTombstoneCounters) await this.dialect.writeTombstoneCounters(c, target.label, [...updates.values()]);
  }

  /**
   * Throws when the target lacks a column, or (`keyColumns` given) has another primary key
   * than the source. A keyless table (a multiset) needs no key at the target: rows are
   * matched whole.
   */
  private checkColumns(target: T, columns: string[], keyColumns: string[] | undefined): void {
    const missing = [...new Set([...columns, ...(keyColumns ?? [])])].filter((c) => !target.columns.has(c));
    if (missing.length > 0) {
      throw new PrerequisiteError(`${SCHEMA_MISMATCH}: target table ${target.label} lacks column(s) ${missing.join(', ')}`, this.dialect.addColumnsFix(target, missing));
    }
    if (!keyColumns) return;
    if ([...target.primaryKey].sort().join(',') !== [...keyColumns].sort().join(',')) {
      throw new PrerequisiteError(
        `target table ${target.label} has primary key (${target.primaryKey.join(', ') || 'none'}) but the source key is (${keyColumns.join(', ')})`,
        this.dialect.primaryKeyFix(target, keyColumns),
      );
    }
    if (target.deferrableKey) {
      // Every upsert would fail with 55000, which is no row's fault: hold the table with the
      // fix rather than dead-letter each of its changes as a poison.
      throw new PrerequisiteError(
        `target table ${target.label} has a DEFERRABLE primary key, which ON CONFLICT cannot use`,
        `make it NOT DEFERRABLE at the target (the source's may stay deferrable): ALTER TABLE ${target.qualified} DROP CONSTRAINT <its primary key>, ADD PRIMARY KEY (${keyColumns.join(', ')})`,
      );
    }
  }
}

/** The lazy row shape last checked for syncline's own columns, and the answer. */
let checkedShape: RowShape | undefined;
let shapeHasBookkeeping = false;

/** `change` without syncline's own columns (a chained or bidirectional source sends them too). */
function withoutBookkeeping(change: ChangeEvent): ChangeEvent {
  const has = (row: Row | null | undefined): boolean => {
    if (!row) return false;
    // A lazy row is not parsed for this (see core/lazy-row.ts); rows of a batch share shapes.
    const lazy = lazyShapeOf(row);
    if (lazy) {
      if (lazy !== checkedShape) {
        checkedShape = lazy;
        shapeHasBookkeeping = lazy.columns.some((c) => BOOKKEEPING_COLUMNS.has(c));
      }
      return shapeHasBookkeeping;
    }
    for (const c of BOOKKEEPING_COLUMNS) if (c in row) return true;
    return false;
  };
  if (!has(change.payload) && !has(change.before)) return change;
  const out = { ...change, payload: change.payload && withoutColumns(change.payload) };
  if (change.before) out.before = withoutColumns(change.before);
  if (change.unchanged) out.unchanged = change.unchanged.filter((c) => !BOOKKEEPING_COLUMNS.has(c));
  return out;
}

function withoutColumns(row: Row): Row {
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) if (!BOOKKEEPING_COLUMNS.has(k)) out[k] = v;
  return out;
}

/** The values of `row` (among `columns`, never a key's) that differ from `stored`; undefined if none. */
function changedColumns(stored: Row, row: Row, columns: readonly string[]): Row | undefined {
  let out: Row | undefined;
  for (const c of columns) {
    if (c in row && row[c] !== stored[c]) (out ??= {})[c] = row[c] ?? null;
  }
  return out;
}

/** The values of `columns` that `row` has. */
function pickPresent(row: Row, columns: readonly string[]): Row {
  const out: Row = {};
  for (const c of columns) if (c in row) out[c] = row[c] ?? null;
  return out;
}

function pickColumns(row: Row, columns: readonly string[]): Row {
  const out: Row = {};
  for (const c of columns) out[c] = row[c] ?? null;
  return out;
}

/** The change's version is newer than (lsn, seq). */
function newerThan(change: ChangeEvent, lsn: string, seq: number): boolean {
  const a = parseLsn(change.commit_lsn);
  const b = parseLsn(lsn);
  return a > b || (a === b && change.seq > seq);
}

function countConflicts(recorded: readonly ConflictRecord[]): NonNullable<ApplyOutcome['conflicts']> {
  const counts = new Map<string, { table: string; strategy: string; count: number }>();
  for (const r of recorded) {
    const k = `${r.table}\u0000${r.strategy}`;
    const e = counts.get(k) ?? { table: r.table, strategy: r.strategy, count: 0 };
    e.count++;
    counts.set(k, e);
  }
  return [...counts.values()];
}

/** The last DELETE of a row's run, if any. */
function lastDelete(run: readonly ChangeEvent[]): ChangeEvent | undefined {
  for (let i = run.length - 1; i >= 0; i--) if (run[i]?.op === 'DELETE') return run[i];
  return undefined;
}

/** The key columns of a table's batch, in the row key's order (the source's column order); undefined without keyed rows. */
function keyColumnsOf(batch: TableBatch): string[] | undefined {
  const keyed = batch.rows.find((r) => Object.keys(r.key).length > 0);
  return keyed && Object.keys(keyed.key);
}

/** Changes by source, each in stream order. */
function bySource(changes: readonly ChangeEvent[]): Map<string, ChangeEvent[]> {
  const out = new Map<string, ChangeEvent[]>();
  for (const ch of changes) {
    const list = out.get(ch.source);
    if (list) list.push(ch);
    else out.set(ch.source, [ch]);
  }
  return out;
}

/**
 * Changes grouped by the columns they sent, in first-seen order: rows with the same set share
 * one statement (an update leaves unchanged TOAST columns out).
 */
function groupBySentColumns(changes: readonly ChangeEvent[]): ChangeEvent[][] {
  const groups = new Map<string, ChangeEvent[]>();
  for (const change of changes) {
    const cols = shapeKeyOf(change.payload ?? {});
    const g = groups.get(cols);
    if (g) g.push(change);
    else groups.set(cols, [change]);
  }
  return [...groups.values()];
}
