import { tableLabeler, tableLabelOf, type ChangeEvent, type Row } from '../../core/change.js';
import { errorMessage, StructuralError, SynclineError } from '../../core/errors.js';
import {
  planEvolution,
  renamesSince,
  SCHEMA_MISMATCH,
  withKnownAttnums,
  withRenamedColumns,
  type DefinitionLookup,
  type EvolutionMode,
  type RecordedColumn,
  type TableDefinition,
} from '../../core/schema-evolution.js';
import type { SqlDialect, SqlTable } from './sql-dialect.js';

/** How long a change waits for its definition to be recorded by capture. */
const RECORDING_WAIT_MS = 5000;

const newestVersion = (history: readonly TableDefinition[]): number => history[history.length - 1]?.version ?? 0;

/** A batch's changes in their tables' newest known definitions' terms, and which versions those are (by label). */
export interface Prepared {
  changes: readonly ChangeEvent[];
  versions: ReadonlyMap<string, number>;
}

/** `sink.schema_evolution` and `sink.drop_columns` with where the definitions come from. */
export interface SchemaEvolution {
  mode: EvolutionMode;
  dropColumns: 'keep' | 'drop';
  definitions: DefinitionLookup;
}

/**
 * Brings SQL target tables to their source's newest definition before the changes that
 * carry it apply (see planEvolution for the steps), and presents older changes in the
 * newest definition's terms (renamed columns under their new name; with `drop_columns:
 * drop`, dropped columns left out). Tables whose changes are all `_schema_version` 1 ask the
 * source once per process (whether later definitions exist), then no more while they stay so.
 */
export class SchemaEvolver<C, T extends SqlTable> {
  /** The definitions of each table (by the target's `schema.table`), oldest first. */
  private readonly histories = new Map<string, TableDefinition[]>();
  /** The newest version each target table was brought to (in this process). */
  private readonly evolved = new Map<string, number>();
  /** Tables whose later definitions were looked for once (see laterThanFirst). */
  private readonly probed = new Set<string>();

  constructor(
    private readonly dialect: SqlDialect<C, T>,
    private readonly options: SchemaEvolution,
  ) {}

  /**
   * Reads the definitions the changes need, and returns the changes in their table's newest
   * definition's terms. A table whose definitions cannot be read is held (StructuralError).
   */
  async prepare(changes: readonly ChangeEvent[]): Promise<Prepared> {
    const versions = new Map<string, number>();
    if (this.options.mode === 'none') return { changes, versions };
    const newestOf = new Map<string, { schema: string; table: string; version: number; commitLsns: string[] }>();
    const labelOf = tableLabeler();
    for (const c of changes) {
      const label = labelOf(c);
      const seen = newestOf.get(label);
      if (!seen || seen.version < c._schema_version) newestOf.set(label, { schema: c.schema, table: c.table, version: c._schema_version, commitLsns: [c.commit_lsn] });
      else if (seen.version === c._schema_version) seen.commitLsns.push(c.commit_lsn);
    }
    for (const [label, { schema, table, version, commitLsns }] of newestOf) {
      let known = this.histories.get(label);
      if (version <= 1 && !known) {
        known = await this.laterThanFirst(label, schema, table);
        if (!known) continue;
      }
      if (!known || newestVersion(known) < version) this.histories.set(label, await this.read(label, schema, table, version, commitLsns));
    }
    // Decided in one go, after every read: a concurrent batch (apply lanes) may have read a
    // newer definition meanwhile, and the changes are presented in exactly the definitions
    // `versions` names, which are also the ones evolve brings the target to for them.
    let anyOlder = false;
    for (const label of newestOf.keys()) {
      const h = this.histories.get(label);
      if (h) versions.set(label, newestVersion(h));
    }
    for (const c of changes) if (c._schema_version < (versions.get(labelOf(c)) ?? 0)) anyOlder = true;
    return { changes: anyOlder ? changes.map((c) => this.inNewestTerms(c)) : changes, versions };
  }

  /**
   * Once per table and process, for a table whose changes are all of its first definition:
   * its history when the source has recorded later definitions (else undefined). The target
   * may already follow one of them: after a restart, a partition's older changes can arrive
   * after another partition's newer ones evolved the target (apply lanes commit partitions
   * independently), and they must be presented in the newest terms like any older change.
   * Not readable: undefined, as before (nothing is held for a table that may never evolve).
   */
  private async laterThanFirst(label: string, schema: string, table: string): Promise<TableDefinition[] | undefined> {
    if (this.probed.has(label)) return undefined;
    this.probed.add(label);
    const history = await this.options.definitions
      .history(schema, table, 1)
      .then(withKnownAttnums)
      .catch(() => undefined);
    if (!history || newestVersion(history) <= 1) return undefined;
    this.histories.set(label, history);
    return history;
  }

  /**
   * The table's definitions up to `version` (carried by the changes committed at
   * `commitLsns`). Capture records a definition while it publishes the first changes that
   * carry it, so a change may arrive a moment before its definition is readable: wait for it
   * a little. Not readable (the source unreachable, or still not recorded): the table is held
   * and tried again. But a version capture cannot be recording still, or not yet (every
   * change carrying it is at an LSN its slots were confirmed past, which capture does only
   * once the definition is stored, or beyond the source's WAL), is no table's problem: one
   * record that is not capture's (another producer's, a hand-made one) held every later change
   * of its table in the dead-letter queue, for good. It is that change's error
   * (SCHEMA_UNKNOWN, permanent): poison isolation dead-letters it alone and the table flows.
   */
  private async read(label: string, schema: string, table: string, version: number, commitLsns: readonly string[]): Promise<TableDefinition[]> {
    let problem: string;
    const deadline = Date.now() + RECORDING_WAIT_MS;
    let recordable: boolean | undefined;
    for (;;) {
      try {
        const history = withKnownAttnums(await this.options.definitions.history(schema, table, version));
        if (newestVersion(history) >= version) return history;
        problem = `_schema_version ${version} is not recorded in the source's schema_versions`;
        if (recordable === undefined) {
          recordable = (await this.options.definitions.mayStillRecord?.(commitLsns)) ?? true;
          // Read once more first: the definition may have been stored, and the slot confirmed
          // past it, between the read above and this check (red17b's guard test).
          if (!recordable) continue;
        } else if (!recordable) {
          throw new SynclineError(
            'SCHEMA_UNKNOWN',
            `change of ${label} carries _schema_version ${version}, which capture never recorded for this table (newest: ${newestVersion(history)}) and cannot be recording: its commit LSN ${commitLsns[0] ?? '?'} is one the source's slots were confirmed past, or beyond the source's WAL; not a change capture wrote from this source.\n  fix: find what else writes to the stream (stream.topic, stream.path); replay the entry (syncline dlq replay) once its definition is recorded, or purge it`,
            { retriable: false },
          );
        }
      } catch (err) {
        if (err instanceof SynclineError && err.code === 'SCHEMA_UNKNOWN') throw err;
        // Unreachable: no use waiting here (the held table is tried again later).
        problem = errorMessage(err);
        break;
      }
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new StructuralError(
      label,
      `cannot read the definition of ${label} (_schema_version ${version}) from the source for sink.schema_evolution: ${problem}`,
      'check that apply reaches the source (source.url) and that capture records definitions (<state_schema>.schema_versions); the table flows again by itself once it does',
    );
  }

  /**
   * The target table's DDL that its newest definition asks for, run on `c`; true when the
   * table was brought to a definition this process had not seen it in: the caller re-reads
   * it, also when no DDL was left to run here (another apply member of the group ran it: the
   * cached columns lacked the one it added, and the table was held as SCHEMA_MISMATCH). A
   * definition change the target cannot follow holds the table with SCHEMA_MISMATCH.
   */
  async evolve(c: C, target: T, schema: string, table: string, versions: ReadonlyMap<string, number>): Promise<boolean> {
    const label = tableLabelOf({ schema, table });
    // Only as far as the definition this batch's changes were presented in (prepare): a
    // newer one another lane just read is that lane's DDL, run with the other lanes held off.
    const upTo = versions.get(label);
    const history = this.histories.get(label)?.filter((d) => upTo !== undefined && d.version <= upTo);
    const newest = history?.[history.length - 1]?.version;
    if (!history || newest === undefined || (this.evolved.get(label) ?? 0) >= newest) return false;
    const d = this.dialect;
    const plan = planEvolution(history, await d.describeColumns(c, target), { mode: this.options.mode, dropColumns: this.options.dropColumns, typeFor: (col) => d.typeFor(col) });
    if (plan.mismatches.length > 0) {
      throw new StructuralError(
        label,
        `${SCHEMA_MISMATCH}: target table ${target.label} cannot follow the source's definition (_schema_version ${newest}): ${plan.mismatches.join('; ')}`,
        'change the target column yourself (the held changes then apply by themselves; one whose value the changed column refuses, such as an older value too large for a narrower type, becomes a dead letter of its own: syncline dlq list, then purge it), or resync the table',
      );
    }
    if (plan.steps.length > 0) await d.evolve(c, target, plan.steps);
    return true;
  }

  /**
   * `full`: the columns to create a missing target table with (the newest definition);
   * undefined when tables are not created or the definition cannot be read.
   */
  async columnsToCreate(schema: string, table: string): Promise<RecordedColumn[] | undefined> {
    if (this.options.mode !== 'full') return undefined;
    const label = tableLabelOf({ schema, table });
    let history = this.histories.get(label);
    if (!history) {
      history = await this.options.definitions
        .history(schema, table, 1)
        .then(withKnownAttnums)
        .catch(() => undefined);
      if (!history || history.length === 0) return undefined;
      this.histories.set(label, history);
    }
    const columns = history[history.length - 1]?.columns;
    return columns && columns.length > 0 ? columns : undefined;
  }

  /**
   * True when a table of `versions` (a batch's, see prepare) is at a definition whose DDL this
   * process has not run yet: the batch may evolve the table (see evolve), which concurrent
   * batches must not race.
   */
  pending(versions: ReadonlyMap<string, number>): boolean {
    for (const [label, version] of versions) if ((this.evolved.get(label) ?? 0) < version) return true;
    return false;
  }

  /** The DDL of the tables in `versions` committed: no need to plan it again. */
  committed(versions: ReadonlyMap<string, number>): void {
    for (const [label, version] of versions) if ((this.evolved.get(label) ?? 0) < version) this.evolved.set(label, version);
  }

  private inNewestTerms(change: ChangeEvent): ChangeEvent {
    const history = this.histories.get(tableLabelOf(change));
    const newest = history?.[history.length - 1];
    if (!history || !newest?.columns || change._schema_version >= newest.version) return change;
    const renamed = withRenamedColumns(change, renamesSince(history, change._schema_version));
    if (this.options.mode !== 'full' || this.options.dropColumns !== 'drop' || !renamed.payload) return renamed;
    // Dropped at the source and so at the target: an older change's value has nowhere to go.
    const names = new Set(newest.columns.map((c) => c.name));
    const gone = Object.keys(renamed.payload).filter((k) => !names.has(k));
    if (gone.length === 0) return renamed;
    const without = (row: Row): Row => Object.fromEntries(Object.entries(row).filter(([k]) => names.has(k)));
    return {
      ...renamed,
      payload: without(renamed.payload),
      ...(renamed.before ? { before: without(renamed.before) } : {}),
      ...(renamed.unchanged ? { unchanged: renamed.unchanged.filter((k) => names.has(k)) } : {}),
    };
  }
}
