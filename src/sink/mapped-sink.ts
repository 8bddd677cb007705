import { tableLabelOf, type ChangeEvent } from '../core/change.js';
import { ConfigError, StructuralError, SynclineError } from '../core/errors.js';
import type { TableName } from '../core/sql.js';
import { tableLabel, type TableMapping } from '../core/table-mapping.js';
import type { ApplyOutcome, Sink } from './sink.js';

/** A source table's columns and primary key, as the mapped sink checks its routes against. */
export interface SourceTableShape {
  columns: readonly string[];
  primaryKey: readonly string[];
}

export interface MappedSinkOptions {
  /**
   * Reads the source tables' shapes, in order (undefined: no such table). When given,
   * `prepare` checks every route against the source and throws a ConfigError naming each
   * problem: a missing source table, an unknown column in `columns` / `exclude_columns`, an
   * excluded key column, a rename onto a column that keeps its name.
   */
  sourceTables?: (tables: readonly TableName[]) => Promise<(SourceTableShape | undefined)[]>;
}

/**
 * Applies `sink.tables` in front of any sink: each change is routed to its target table with
 * its columns renamed or left out (`TableMapping.map`) before the inner sink sees it. Only
 * the sink's view changes: apply, the stream and the dead-letter queue keep the original
 * change, and the outcome is reported per source table, as the metrics label tables.
 */
export class MappedSink implements Sink {
  readonly storesPositions: boolean;

  constructor(
    private readonly inner: Sink,
    private readonly mapping: TableMapping,
    private readonly options: MappedSinkOptions = {},
  ) {
    this.storesPositions = inner.storesPositions;
  }

  async prepare(): Promise<void> {
    await this.checkRoutes();
    await this.inner.prepare();
  }

  async apply(changes: readonly ChangeEvent[], positions: ReadonlyMap<number, bigint>, group: string): Promise<ApplyOutcome> {
    const mapped = changes.map((c) => this.mapping.map(c));
    let outcome: ApplyOutcome;
    try {
      outcome = await this.inner.apply(mapped, positions, group);
    } catch (err) {
      // The inner sink names the target table; apply holds tables by their source name.
      if (err instanceof StructuralError) {
        const i = mapped.findIndex((c) => tableLabelOf(c) === err.table);
        const source = i >= 0 ? changes[i] : undefined;
        if (source) throw new StructuralError(tableLabelOf(source), err.detail, err.fix);
      }
      throw err;
    }
    if (outcome.byTable.size === 0) return outcome;
    const byTable = new Map<string, { applied: number; stale: number }>();
    for (const [label, counts] of outcome.byTable) byTable.set(this.mapping.sourceLabelOf(label), counts);
    const relabelled: ApplyOutcome = { ...outcome, byTable };
    if (outcome.conflicts) relabelled.conflicts = outcome.conflicts.map((k) => ({ ...k, table: this.mapping.sourceLabelOf(k.table) }));
    return relabelled;
  }

  positions(group: string): Promise<Map<number, bigint>> {
    return this.inner.positions(group);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async checkRoutes(): Promise<void> {
    const read = this.options.sourceTables;
    const routes = this.mapping.routes;
    if (!read || routes.length === 0) return;
    let shapes: (SourceTableShape | undefined)[];
    try {
      shapes = await read(routes.map((r) => r.source));
    } catch (err) {
      // An unreachable source must not keep an apply-only process from starting: the key
      // check then happens per change (TableMapping.map stops apply with the fix).
      if (err instanceof SynclineError && !err.retriable) throw err;
      return;
    }
    const problems: string[] = [];
    for (const [i, route] of routes.entries()) {
      const shape = shapes[i];
      const source = tableLabel(route.source);
      if (!shape) {
        problems.push(`${route.path}: source table ${source} does not exist`);
        continue;
      }
      const columns = new Set(shape.columns);
      for (const c of route.renames.keys()) if (!columns.has(c)) problems.push(`${route.path}.columns.${c}: ${source} has no column ${c}`);
      for (const c of route.excluded) {
        if (!columns.has(c)) problems.push(`${route.path}.exclude_columns: ${source} has no column ${c}`);
        else if (shape.primaryKey.includes(c)) problems.push(`${route.path}.exclude_columns: ${c} is a key column of ${source}; key columns may be renamed but not excluded`);
      }
      // A rename onto a column that keeps its own name would give the target row two values for it.
      const kept = new Set(shape.columns.filter((c) => !route.renames.has(c) && !route.excluded.has(c)));
      for (const [from, to] of route.renames) if (kept.has(to)) problems.push(`${route.path}.columns.${from}: ${to} is also a column of ${source}; exclude or rename that one too`);
    }
    if (problems.length > 0) throw new ConfigError(problems);
  }
}
