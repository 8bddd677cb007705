import type { ChangeEvent, Row } from './change.js';

/**
 * A column of a recorded table definition, as capture stores it in the source's
 * `<state_schema>.schema_versions.columns` (jsonb, one object per column, in order).
 */
export interface RecordedColumn {
  name: string;
  /** `format_type(type_oid, typmod)`: the type with its modifiers (`character varying(20)`). */
  type: string;
  type_oid: number;
  typmod: number;
  /** pg_attribute.attnum; null when the column was renamed or dropped before it was recorded. */
  attnum: number | null;
  not_null: boolean;
  /** Part of the primary key. */
  key: boolean;
}

/** One `_schema_version` of a table. */
export interface TableDefinition {
  version: number;
  /** Undefined: recorded before definitions were kept (nothing to evolve from). */
  columns: RecordedColumn[] | undefined;
}

/**
 * Where a sink reads the source's table definitions (`sink.schema_evolution`). Names are the
 * target's: a `sink.tables` route is applied by the lookup (see compose/definitions.ts).
 */
export interface DefinitionLookup {
  /**
   * Every recorded definition of the table, oldest first, re-read when the newest known is
   * older than `version`. Throws when the source cannot be reached.
   */
  history(schema: string, table: string, version: number): Promise<TableDefinition[]>;
  /**
   * Whether capture may still record a definition carried by changes committed at these LSNs
   * (not all of the source's slots confirmed past one of them, and the source's WAL reaches
   * it). False means a definition not recorded by now never will be. Throws when the source
   * cannot be reached.
   */
  mayStillRecord?(commitLsns: readonly string[]): Promise<boolean>;
}

/**
 * `history` with the attnums capture could not record filled in from the next definition,
 * only where the name is the same (a column that kept its name). A column renamed, or dropped
 * and another added, before its definition was recorded keeps attnum null: its position and
 * type cannot tell a rename from a drop plus an add (a red-team repro moved a dropped
 * column's values into a new column that way). An earlier definition recorded in time still
 * knows it; when none does, planEvolution holds the table instead of guessing (`ambiguous`).
 */
export function withKnownAttnums(history: readonly TableDefinition[]): TableDefinition[] {
  const out = history.map((d) => ({ version: d.version, columns: d.columns?.map((c) => ({ ...c })) }));
  for (let k = out.length - 2; k >= 0; k--) {
    const older = out[k]?.columns;
    const newer = out[k + 1]?.columns;
    if (!older || !newer) continue;
    for (const c of older) {
      if (c.attnum !== null) continue;
      const same = newer.find((n) => n.name === c.name);
      if (same) c.attnum = same.attnum;
    }
  }
  return out;
}

/**
 * A target column the newest definition no longer has, while it gained columns the target
 * lacks, and no definition knows that column's attnum (every definition with it was recorded
 * after later DDL, and the DDL history did not cover it): whether it was renamed or dropped
 * and another added cannot be told.
 * Returns the reason, or undefined when every such column is known.
 */
function ambiguous(defs: readonly { version: number; columns: RecordedColumn[] }[], present: ReadonlySet<string>, newestNames: ReadonlySet<string>): string | undefined {
  const came = [...newestNames].filter((n) => !present.has(n));
  if (came.length === 0) return undefined;
  const known = new Set(defs.flatMap((d) => d.columns.filter((c) => c.attnum !== null).map((c) => c.name)));
  const unknownGone = [...new Set(defs.flatMap((d) => d.columns.map((c) => c.name)))].filter((n) => present.has(n) && !newestNames.has(n) && !known.has(n));
  if (unknownGone.length === 0) return undefined;
  return `every recorded definition with ${unknownGone.join(', ')} was recorded after later DDL had changed the table, so whether it became ${came.join(', ')} (renamed) or was dropped and another added cannot be told (no DDL history covered it: README "Schema evolution at the sink"); alter the target table by hand to the source's columns, then its held changes apply`;
}

/** `sink.schema_evolution`. */
export type EvolutionMode = 'none' | 'add_columns' | 'full';

/** What the target knows of one of its columns. */
export interface TargetColumnShape {
  /** The type as the target spells it (compared with `SchemaSteps.typeFor`). */
  type: string;
  notNull: boolean;
}

export type SchemaStep =
  | { kind: 'add'; column: RecordedColumn }
  | { kind: 'rename'; from: string; to: string }
  | { kind: 'widen'; column: RecordedColumn; notNull: boolean }
  | { kind: 'drop'; name: string }
  | { kind: 'nullable'; name: string };

export interface EvolutionPlan {
  steps: SchemaStep[];
  /** Definition changes the target cannot follow (a narrowing type change): SCHEMA_MISMATCH. */
  mismatches: string[];
}

/** The code in the reason of a table held because its target does not fit its changes' schema. */
export const SCHEMA_MISMATCH = 'SCHEMA_MISMATCH';

/**
 * The steps that bring a target table to the newest definition in `history`, decided from
 * the target's present columns (so a plan made again after a crash, half applied or not,
 * only holds what is left):
 * - a column of the newest definition the target lacks: renamed when an earlier name of its
 *   attnum is still at the target, added when the column appeared after the first recorded
 *   definition (a column the source had all along is a target problem, not an evolution);
 * - (full) a column whose type changed at the source and whose target still has the earlier
 *   type: widened if the change is a widening, else a mismatch;
 * - a target column the source dropped (it is in an earlier definition, not the newest, and
 *   not a key): made nullable (`keep`), or (full, `drop`) dropped.
 * `typeFor` spells a source column's type as the target does (mapped for mysql and sqlite).
 */
export function planEvolution(
  history: readonly TableDefinition[],
  target: ReadonlyMap<string, TargetColumnShape>,
  options: { mode: EvolutionMode; dropColumns: 'keep' | 'drop'; typeFor: (c: RecordedColumn) => string },
): EvolutionPlan {
  const plan: EvolutionPlan = { steps: [], mismatches: [] };
  const defs = history.filter((d): d is TableDefinition & { columns: RecordedColumn[] } => d.columns !== undefined);
  const newest = defs[defs.length - 1];
  if (options.mode === 'none' || !newest || defs.length < 2) return plan;
  const earlier = defs.slice(0, -1).reverse(); // newest first
  const first = defs[0] as { columns: RecordedColumn[] };
  const present = new Set(target.keys());
  const newestNames = new Set(newest.columns.map((c) => c.name));
  const unclear = ambiguous(defs, present, newestNames);
  if (unclear !== undefined) {
    plan.mismatches.push(unclear);
    return plan;
  }
  // A name the newest definition gives another column (known attnums differ): `RENAME a TO x;
  // ADD a` frees the old name for a new column, so the old column is still renamed.
  const reused = (name: string, attnum: number): boolean => newest.columns.some((n) => n.name === name && n.attnum !== null && n.attnum !== attnum);
  // Renames are decided first (a new column may take the name a renamed one leaves), the
  // steps are made in column order.
  const renamedFrom = new Map<string, string>();
  for (const col of newest.columns) {
    if (present.has(col.name) || col.attnum === null) continue;
    const attnum = col.attnum;
    const oldName = earlier
      .map((d) => d.columns.find((c) => sameColumn(c, col))?.name)
      .find((n) => n !== undefined && n !== col.name && present.has(n) && ![...renamedFrom.values()].includes(n) && (!newestNames.has(n) || reused(n, attnum)));
    if (oldName !== undefined) renamedFrom.set(col.name, oldName);
  }
  for (const from of renamedFrom.values()) present.delete(from);
  // A name the source gave a new column after dropping the column that had it (`DROP c, ADD c
  // text`, or two statements with no change of the table between): the target's column of
  // that name is still the dropped one while it has that one's type and not the new one's,
  // and cannot take the new column's values (each change failed alone, thousands of dead
  // letters). With the same type the two cannot be told apart here.
  const replaced = (col: RecordedColumn): RecordedColumn | undefined => {
    const shape = target.get(col.name);
    if (col.attnum === null || col.key || !shape || options.typeFor(col) === shape.type) return undefined;
    const gone = (c: RecordedColumn): boolean => c.attnum !== null && c.attnum !== col.attnum && !newest.columns.some((n) => n.attnum === c.attnum);
    return earlier.map((d) => d.columns.find((c) => c.name === col.name && gone(c))).find((c) => c !== undefined && options.typeFor(c) === shape.type);
  };
  for (const col of newest.columns) {
    const from = renamedFrom.get(col.name);
    const old = from === undefined && present.has(col.name) ? replaced(col) : undefined;
    if (from !== undefined) {
      plan.steps.push({ kind: 'rename', from, to: col.name });
      present.add(col.name);
    } else if (old !== undefined) {
      if (options.mode === 'full' && options.dropColumns === 'drop') plan.steps.push({ kind: 'drop', name: col.name }, { kind: 'add', column: col });
      else
        plan.mismatches.push(
          `column ${col.name} (${old.type}) was dropped at the source and another column ${col.name} (${col.type}) added; the target's ${col.name} is the dropped one: rename it (the new column is then added) or set sink.schema_evolution: full with sink.drop_columns: drop`,
        );
    } else if (present.has(col.name)) {
      if (options.mode === 'full') widen(col, earlier, target, options.typeFor, plan);
    } else if (!first.columns.some((c) => sameColumn(c, col))) {
      // Same attnum when known, else same name: a column the source had all along is not added.
      plan.steps.push({ kind: 'add', column: col });
      present.add(col.name);
    }
  }
  const dropped = new Set(earlier.flatMap((d) => d.columns.filter((c) => !c.key && !newestNames.has(c.name)).map((c) => c.name)));
  for (const name of dropped) {
    const shape = target.get(name);
    if (!shape || !present.has(name)) continue;
    if (options.mode === 'full' && options.dropColumns === 'drop') plan.steps.push({ kind: 'drop', name });
    else if (shape.notNull) plan.steps.push({ kind: 'nullable', name });
  }
  return plan;
}

/** Same attnum (when both are known), else same name. */
function sameColumn(a: RecordedColumn, b: RecordedColumn): boolean {
  return a.attnum !== null && b.attnum !== null ? a.attnum === b.attnum : a.name === b.name;
}

function widen(col: RecordedColumn, earlier: readonly { columns: RecordedColumn[] }[], target: ReadonlyMap<string, TargetColumnShape>, typeFor: (c: RecordedColumn) => string, plan: EvolutionPlan): void {
  const shape = target.get(col.name) as TargetColumnShape;
  const wanted = typeFor(col);
  if (shape.type === wanted) return;
  // The type this column had before its latest change at the source; the target still having
  // it means that change is not applied yet. Any other target type is the user's choice.
  const before = earlier.map((d) => d.columns.find((c) => sameColumn(c, col))).find((c) => c !== undefined && c.type !== col.type);
  if (!before || typeFor(before) !== shape.type) return;
  if (isWidening(before.type, col.type)) plan.steps.push({ kind: 'widen', column: col, notNull: shape.notNull });
  else plan.mismatches.push(`column ${col.name} changed type at the source from ${before.type} to ${col.type}, which is not a widening`);
}

const INTEGER_RANK: Record<string, number> = { smallint: 1, integer: 2, bigint: 3 };

/**
 * A type change every old value survives unchanged: a larger integer (or numeric), real to
 * double precision, a longer or unbounded varchar (or text), a numeric with at least as
 * many digits on both sides of the point.
 */
export function isWidening(from: string, to: string): boolean {
  if (from === to) return true;
  const fi = INTEGER_RANK[from];
  if (fi !== undefined) return (INTEGER_RANK[to] ?? 0) > fi || to === 'numeric';
  if (from === 'real') return to === 'double precision';
  const fv = /^character varying(?:\((\d+)\))?$/.exec(from);
  if (fv) {
    if (to === 'text') return true;
    const tv = /^character varying(?:\((\d+)\))?$/.exec(to);
    return tv !== null && (tv[1] === undefined || (fv[1] !== undefined && Number(tv[1]) >= Number(fv[1])));
  }
  const fn = /^numeric\((\d+),(\d+)\)$/.exec(from);
  if (fn) {
    if (to === 'numeric') return true;
    const tn = /^numeric\((\d+),(\d+)\)$/.exec(to);
    if (!tn) return false;
    const [fp, fs, tp, ts] = [fn[1], fn[2], tn[1], tn[2]].map(Number) as [number, number, number, number];
    return ts >= fs && tp - ts >= fp - fs;
  }
  return false;
}

/**
 * Column renames (old name → newest name) for changes of `version` against the newest
 * definition of `history`: a change made before a rename still carries the old name.
 */
export function renamesSince(history: readonly TableDefinition[], version: number): Map<string, string> {
  const renames = new Map<string, string>();
  const newest = history[history.length - 1]?.columns;
  const then = history.find((d) => d.version === version)?.columns;
  if (!newest || !then || version === history[history.length - 1]?.version) return renames;
  for (const c of then) {
    if (c.attnum === null) continue;
    const now = newest.find((n) => n.attnum === c.attnum);
    if (now && now.name !== c.name) renames.set(c.name, now.name);
  }
  return renames;
}

/** `change` with its columns renamed (a copy; the original stays as the stream carries it). */
export function withRenamedColumns(change: ChangeEvent, renames: ReadonlyMap<string, string>): ChangeEvent {
  if (renames.size === 0) return change;
  const rename = (row: Row): Row => {
    const out: Row = {};
    for (const [k, v] of Object.entries(row)) out[renames.get(k) ?? k] = v;
    return out;
  };
  const out: ChangeEvent = { ...change, key: rename(change.key), payload: change.payload ? rename(change.payload) : change.payload };
  if (change.before) out.before = rename(change.before);
  if (change.unchanged) out.unchanged = change.unchanged.map((c) => renames.get(c) ?? c);
  return out;
}
