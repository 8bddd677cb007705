import type { ChangeEvent, Row } from './change.js';
import { ConfigError, PrerequisiteError } from './errors.js';
import { parseTableName, type TableName } from './sql.js';

/**
 * Table routing and column mapping (`sink.tables`): which target table a source table's
 * changes go to, which columns are renamed on the way and which are left out. Pure: the
 * sink decorator, verify, repair and `create_tables` all read the same routes.
 */

/** One `sink.tables` entry as written in the config. */
export interface TableRouteConfig {
  target?: string | undefined;
  columns?: Record<string, string> | undefined;
  exclude_columns?: string[] | undefined;
}

export interface TableRoute {
  /** The config path of the entry, for messages: `sink.tables.<key>`. */
  path: string;
  source: TableName;
  target: TableName;
  /** Source column → target column, renamed ones only. */
  renames: ReadonlyMap<string, string>;
  /** Source columns not written to the target. */
  excluded: ReadonlySet<string>;
}

/** A problem with a `sink.tables` entry, at its path below `sink.tables`. */
export interface RouteIssue {
  path: (string | number)[];
  message: string;
}

/** Columns syncline itself writes at the target; a rename must not take their names. */
const RESERVED_COLUMNS = new Set(['_syncline_lsn', '_syncline_seq', '_deleted_at']);

export function tableLabel(t: TableName): string {
  return `${t.schema}.${t.table}`;
}

/**
 * Parses and checks the `sink.tables` section: table names (`schema.table` or `table`, as in
 * `source.slots[].tables`), one entry per source table, distinct targets, no two columns
 * renamed to one name, no column both renamed and excluded, no reserved target column.
 * Returns the routes and every problem found (paths relative to `sink.tables`).
 */
export function parseTableRoutes(tables: Readonly<Record<string, TableRouteConfig>>): { routes: TableRoute[]; issues: RouteIssue[] } {
  const routes: TableRoute[] = [];
  const issues: RouteIssue[] = [];
  const sources = new Map<string, string>();
  const targets = new Map<string, string>();
  for (const [key, entry] of Object.entries(tables)) {
    let source: TableName;
    try {
      source = parseTableName(key);
    } catch (err) {
      issues.push({ path: [key], message: `${(err as Error).message}: source tables are written schema.table or table (schema public)` });
      continue;
    }
    const label = tableLabel(source);
    const earlier = sources.get(label);
    if (earlier !== undefined) {
      issues.push({ path: [key], message: `${label} is already mapped by sink.tables.${earlier}` });
      continue;
    }
    sources.set(label, key);
    let target = source;
    if (entry.target !== undefined) {
      try {
        target = parseTableName(entry.target, source.schema);
      } catch (err) {
        issues.push({ path: [key, 'target'], message: `${(err as Error).message}: a target is written schema.table, or table (the source's schema)` });
        continue;
      }
    }
    const renames = new Map(Object.entries(entry.columns ?? {}));
    const excluded = new Set(entry.exclude_columns ?? []);
    const renamedTo = new Map<string, string>();
    for (const [from, to] of renames) {
      if (excluded.has(from)) issues.push({ path: [key, 'columns', from], message: `column ${from} is both renamed and in exclude_columns` });
      if (RESERVED_COLUMNS.has(to)) issues.push({ path: [key, 'columns', from], message: `${to} is a column syncline writes itself; pick another name` });
      const other = renamedTo.get(to);
      if (other !== undefined) issues.push({ path: [key, 'columns', from], message: `columns ${other} and ${from} are both renamed to ${to}` });
      renamedTo.set(to, from);
    }
    const targetLabel = tableLabel(target);
    const sameTarget = targets.get(targetLabel);
    if (sameTarget !== undefined) {
      issues.push({ path: [key, 'target'], message: `${targetLabel} is already the target of sink.tables.${sameTarget}: one target table per source table (their keys, versions and tombstones would mix)` });
    }
    targets.set(targetLabel, key);
    routes.push({ path: `sink.tables.${key}`, source, target, renames, excluded });
  }
  return { routes, issues };
}

/**
 * The compiled `sink.tables`: looks up a change's route and maps it. Tables without an
 * entry pass through unchanged (the same object, no copy).
 */
export class TableMapping {
  private readonly bySource = new Map<string, Map<string, TableRoute>>();
  private readonly byTarget = new Map<string, TableRoute>();

  constructor(readonly routes: readonly TableRoute[]) {
    for (const r of routes) {
      let tables = this.bySource.get(r.source.schema);
      if (!tables) this.bySource.set(r.source.schema, (tables = new Map()));
      tables.set(r.source.table, r);
      this.byTarget.set(tableLabel(r.target), r);
    }
  }

  /** From the validated config section; throws ConfigError listing every problem. */
  static fromConfig(tables: Readonly<Record<string, TableRouteConfig>> | undefined): TableMapping {
    const { routes, issues } = parseTableRoutes(tables ?? {});
    if (issues.length > 0) throw new ConfigError(issues.map((i) => `sink.tables.${i.path.join('.')}: ${i.message}`));
    return new TableMapping(routes);
  }

  get isEmpty(): boolean {
    return this.routes.length === 0;
  }

  routeOf(t: TableName): TableRoute | undefined {
    return this.bySource.get(t.schema)?.get(t.table);
  }

  /** The route writing to target table `t`, if any. */
  routeTo(t: TableName): TableRoute | undefined {
    return this.byTarget.get(tableLabel(t));
  }

  /** The source table label of a target table label (itself when not routed). */
  sourceLabelOf(targetLabel: string): string {
    const r = this.byTarget.get(targetLabel);
    return r ? tableLabel(r.source) : targetLabel;
  }

  /**
   * The change as the target sees it: routed table, renamed columns, excluded columns left
   * out of key, payload, before and unchanged. Throws a PrerequisiteError (every change of
   * the table would fail alike, so apply stops with the fix rather than dead-lettering) when
   * an excluded column is a key column, when a rename collides with another column, or
   * when an unrouted table is another table's target.
   */
  map(change: ChangeEvent): ChangeEvent {
    const route = this.bySource.get(change.schema)?.get(change.table);
    if (!route) {
      if (this.byTarget.size > 0) {
        const other = this.byTarget.get(`${change.schema}.${change.table}`);
        if (other) {
          throw new PrerequisiteError(
            `${change.schema}.${change.table} is replicated to itself and is also the target of ${other.path}`,
            `route ${change.schema}.${change.table} elsewhere in sink.tables, or pick another target for ${other.path}`,
          );
        }
      }
      return change;
    }
    const out: ChangeEvent = { ...change, schema: route.target.schema, table: route.target.table, key: mapRow(route, change.key, true), payload: change.payload && mapRow(route, change.payload, false) };
    if (change.before) out.before = mapRow(route, change.before, false);
    if (change.unchanged) out.unchanged = mapColumns(route, change.unchanged);
    return out;
  }
}

/** The target name of source column `column` on `route`; undefined when excluded. */
export function targetColumnOf(route: TableRoute, column: string): string | undefined {
  if (route.excluded.has(column)) return undefined;
  return route.renames.get(column) ?? column;
}

function mapRow(route: TableRoute, row: Row, isKey: boolean): Row {
  if (route.renames.size === 0 && route.excluded.size === 0) return row;
  const out: Row = {};
  for (const column in row) {
    if (!Object.prototype.hasOwnProperty.call(row, column)) continue;
    const name = targetColumnOf(route, column);
    if (name === undefined) {
      if (isKey) throw excludedKey(route, column);
      continue;
    }
    if (Object.prototype.hasOwnProperty.call(out, name)) throw collision(route, name);
    // defineProperty: a column named __proto__ must stay a column, not set the prototype.
    Object.defineProperty(out, name, { value: row[column] ?? null, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function mapColumns(route: TableRoute, columns: readonly string[]): string[] {
  const out: string[] = [];
  for (const c of columns) {
    const name = targetColumnOf(route, c);
    if (name !== undefined) out.push(name);
  }
  return out;
}

export function excludedKey(route: TableRoute, column: string): PrerequisiteError {
  return new PrerequisiteError(
    `${route.path}.exclude_columns lists ${column}, a key column of ${tableLabel(route.source)}`,
    `key columns may be renamed (${route.path}.columns) but not excluded: remove ${column} from ${route.path}.exclude_columns`,
  );
}

function collision(route: TableRoute, name: string): PrerequisiteError {
  return new PrerequisiteError(
    `two columns of ${tableLabel(route.source)} map to target column ${name} of ${tableLabel(route.target)} (${route.path}.columns)`,
    `rename or exclude one of them in ${route.path}`,
  );
}
