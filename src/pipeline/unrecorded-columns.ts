import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import type { DefinitionLookup, TableDefinition } from '../core/schema-evolution.js';
import type { Item } from './apply-context.js';

const LOOKUP_TIMEOUT_MS = 5000;

/**
 * Changes that name a column their own `_schema_version`'s recorded definition lacks. Capture
 * records each definition before it confirms the changes that carry it, with every column
 * pgoutput sends, so such a change is not one capture wrote (another producer's record, a
 * hand-made one). Without this check it held its table for good: the target lacks the
 * column, which is a table's problem (held until the target is fixed), so every later real
 * change of the table waited behind a record no target fix could ever apply. Asked only when
 * a table is about to be held, so the happy path reads nothing.
 */
export class UnrecordedColumns {
  constructor(
    /** The source's recorded definitions, by source table (the stream's names). */
    private readonly definitions: DefinitionLookup,
    /**
     * The changes' `source` these definitions are of. Others (a fan-in's other servers,
     * whose tables may have other columns) are not judged by them.
     */
    private readonly source: string,
  ) {}

  /**
   * The changes of table `label` in `units` with a column their recorded definition lacks,
   * each with the columns it lacks. Empty when the definitions cannot be read or do not list
   * the change's version (nothing to tell then: the table is held as before).
   */
  async find(label: string, units: readonly (readonly Item[])[]): Promise<Map<ChangeEvent, string[]>> {
    const found = new Map<ChangeEvent, string[]>();
    const labelled = units.flat().map((i) => i.change).filter((c) => c.source === this.source && tableLabelOf(c) === label);
    const first = labelled[0];
    if (!first) return found;
    // Only the changes of the table whose definitions are read: quoted names with dots can give
    // two tables one label ("a.b".c and a."b.c").
    const changes = labelled.filter((c) => c.schema === first.schema && c.table === first.table);
    const newest = Math.max(...changes.map((c) => c._schema_version));
    let history: TableDefinition[] | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      // A source that does not answer must not keep the table from being held.
      const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), LOOKUP_TIMEOUT_MS)));
      history = await Promise.race([this.definitions.history(first.schema, first.table, newest), late]);
    } catch {
      return found;
    } finally {
      clearTimeout(timer);
    }
    if (!history) return found;
    // Every version's columns: a change presented in an older or newer version's terms (a
    // column renamed since) still names only columns the table had. (One slot per config: the
    // definitions read are the versions the changes are numbered by.)
    // But only for a version already recorded: a change may arrive a moment before capture
    // records the definition of a column just added.
    const recordedVersions = new Set(history.filter((d) => d.columns).map((d) => d.version));
    const everRecorded = new Set(history.flatMap((d) => (d.columns ?? []).map((col) => col.name)));
    for (const c of changes) {
      if (!recordedVersions.has(c._schema_version)) continue;
      const named = new Set([...Object.keys(c.payload ?? {}), ...Object.keys(c.before ?? {}), ...Object.keys(c.key), ...(c.unchanged ?? [])]);
      const lacking = [...named].filter((col) => !everRecorded.has(col));
      if (lacking.length > 0) found.set(c, lacking);
    }
    return found;
  }
}
