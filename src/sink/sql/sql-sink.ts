import { tableLabelOf, type ChangeEvent } from '../../core/change.js';
import { PrerequisiteError } from '../../core/errors.js';
import { SCHEMA_MISMATCH } from '../../core/schema-evolution.js';
import { collapseBatch, type TableBatch } from '../collapse.js';
import { maxVersion, onMissingRow, planMultiset, removesRow } from '../multiset.js';
import type { ApplyOutcome, Sink } from '../sink.js';
import { forTable } from '../table-errors.js';
import { skippableWithoutStoredValues } from '../unchanged-values.js';
import { SchemaEvolver, type SchemaEvolution } from './schema-evolver.js';
import type { SqlDialect, SqlTable } from './sql-dialect.js';

type Counts = { applied: number; stale: number };

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

  constructor(
    private readonly dialect: SqlDialect<C, T>,
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
    const { tables, superseded } = collapseBatch(evolver ? await evolver.prepare(changes) : changes);
    const outcome: ApplyOutcome = { applied: 0, stale: 0, superseded, byTable: new Map() };
    const d = this.dialect;
    await d.withConnection(`applying to ${d.name}`, async (c) => {
      // Table metadata (and adding the version columns: an ALTER TABLE, which commits
      // implicitly in MySQL) happens outside the batch transaction, so a rolled-back batch
      // cannot leave the cache believing in columns that were never committed.
      const targets = new Map<TableBatch, T>();
      for (const batch of tables) targets.set(batch, await forTable(batch, (err) => d.isStructural(err), () => this.target(c, batch.schema, batch.table)));
      // Schema evolution: DDL before the first change that needs it, in the batch's
      // transaction where the database has transactional DDL, else just before it.
      const evolve = async (): Promise<void> => {
        if (!evolver) return;
        for (const batch of tables) {
          const changed = await forTable(batch, (err) => d.isStructural(err), () => evolver.evolve(c, targets.get(batch) as T, batch.schema, batch.table));
          if (!changed) continue;
          this.tables.delete(tableLabelOf(batch));
          d.invalidate();
          targets.set(batch, await forTable(batch, (err) => d.isStructural(err), () => this.target(c, batch.schema, batch.table)));
        }
      };
      if (!d.transactionalDdl) {
        await evolve();
        evolver?.committed(tables.map((b) => tableLabelOf(b)));
      }
      await d.begin(c);
      try {
        if (d.transactionalDdl) await evolve();
        for (const batch of tables) {
          const target = targets.get(batch) as T;
          const counts: Counts = { applied: 0, stale: 0 };
          await forTable(batch, (err) => d.isStructural(err), async () => {
            if (batch.truncate) {
              if (await d.truncate(c, target, batch.truncate)) counts.applied += 1;
              else counts.stale += 1;
            }
            if (batch.multiset.length > 0 || batch.snapshotReset) await this.keyless(c, target, batch.multiset, batch.snapshotReset, counts);
            await this.upsert(c, target, batch, counts);
            await this.delete(c, target, batch, counts);
          });
          outcome.applied += counts.applied;
          outcome.stale += counts.stale;
          outcome.byTable.set(tableLabelOf(batch), counts);
        }
        if (positions.size > 0) await d.writePositions(c, group, positions);
        await d.commit(c);
        if (d.transactionalDdl) evolver?.committed(tables.map((b) => tableLabelOf(b)));
      } catch (err) {
        await d.rollback(c).catch(() => undefined);
        // The target's structure may have changed (or be the problem, or rolled back with
        // the batch's DDL): re-read it next time.
        if (d.isStructural(err) || (evolver && d.transactionalDdl)) {
          this.tables.clear();
          d.invalidate();
        }
        throw err;
      }
    });
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

  private async upsert(c: C, target: T, batch: TableBatch, counts: Counts): Promise<void> {
    for (let rows of groupBySentColumns(batch.rows.filter((r) => r.op !== 'DELETE' && r.payload))) {
      const first = rows[0] as ChangeEvent;
      const columns = Object.keys(first.payload ?? {});
      const keyColumns = Object.keys(first.key);
      this.checkColumns(target, columns, keyColumns);
      const keeping = rows.filter((r) => (r.unchanged?.length ?? 0) > 0);
      if (keeping.length > 0) {
        const skip = skippableWithoutStoredValues(await this.dialect.absentRows(c, target, keyColumns, keeping));
        if (skip.size > 0) {
          counts.stale += skip.size;
          rows = rows.filter((r) => !skip.has(r));
          if (rows.length === 0) continue;
        }
      }
      const n = await this.dialect.upsert(c, target, columns, keyColumns, rows);
      counts.applied += n;
      counts.stale += rows.length - n;
    }
  }

  private async delete(c: C, target: T, batch: TableBatch, counts: Counts): Promise<void> {
    const rows = batch.rows.filter((r) => r.op === 'DELETE');
    if (rows.length === 0) return;
    const keyColumns = Object.keys((rows[0] as ChangeEvent).key);
    this.checkColumns(target, [], keyColumns);
    const n = await this.dialect.delete(c, target, keyColumns, rows);
    counts.applied += n;
    counts.stale += rows.length - n;
  }

  /**
   * A keyless table's changes, in stream order, after the batch's truncation; `sawReset`: the
   * batch holds the table's snapshot reset. The rules are in `../multiset.ts`.
   */
  private async keyless(c: C, target: T, changes: readonly ChangeEvent[], sawReset: boolean, counts: Counts): Promise<void> {
    const d = this.dialect;
    const label = target.label;
    const { high, truncation } = await d.readMultisetVersions(c, label);
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
          if (!onMissingRow(label, change, reset, counts)) continue;
        } else if (change.op === 'DELETE') {
          counts.applied++;
          continue;
        }
      }
      if (change.payload) adds.push(change);
    }
    await flushAdds();
    if (plan.newest || (reset && !wasReset)) await d.writeMultisetVersion(c, label, plan.newest, reset);
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
  }
}

/**
 * Changes grouped by the columns they sent, in first-seen order: rows with the same set share
 * one statement (an update leaves unchanged TOAST columns out).
 */
function groupBySentColumns(changes: readonly ChangeEvent[]): ChangeEvent[][] {
  const groups = new Map<string, ChangeEvent[]>();
  for (const change of changes) {
    const cols = Object.keys(change.payload ?? {}).join('\u0000');
    const g = groups.get(cols);
    if (g) g.push(change);
    else groups.set(cols, [change]);
  }
  return [...groups.values()];
}
