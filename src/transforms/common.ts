import { createHash, createHmac } from 'node:crypto';
import type { ChangeEvent, ChangeOp, Row } from '../core/change.js';
import { ConfigError } from '../core/errors.js';
import { parseTableName } from '../core/sql.js';
import type { Transform } from './transform.js';

/**
 * The common transforms. Tables are written as in the config: `schema.table`, or `table`
 * for `public.table` (quoted parts keep their case); `*` matches every table. Column
 * transforms change `key`, `payload` and `before` alike, and skip columns the change lists as
 * `unchanged` (their value was not sent; the sink keeps what it stored, already transformed).
 */

/** A table selector → value map; `*` applies to every table (a named table wins). */
export type PerTable<T> = Readonly<Record<string, T>>;

/** Keeps the changes `predicate` accepts and drops the others. */
export function filter(predicate: (change: ChangeEvent) => boolean): Transform {
  return named('filter', (c) => (predicate(c) ? c : null));
}

/** Drops every change of these tables (`schema.table`, or `table` in public). */
export function dropTables(...tables: string[]): Transform {
  const set = tableSet(tables, 'dropTables');
  return named('dropTables', (c) => (set.has(labelOf(c)) ? null : c));
}

/** Keeps only the changes of these tables (`schema.table`, or `table` in public). */
export function keepTables(...tables: string[]): Transform {
  const set = tableSet(tables, 'keepTables');
  return named('keepTables', (c) => (set.has(labelOf(c)) ? c : null));
}

/** Keeps only changes with these operations (snapshot rows are `READ`). */
export function keepOps(...ops: ChangeOp[]): Transform {
  const set = new Set<string>(ops);
  return named('keepOps', (c) => (set.has(c.op) ? c : null));
}

/** Drops changes with these operations, e.g. `dropOps('DELETE', 'TRUNCATE')` for an append-only target. */
export function dropOps(...ops: ChangeOp[]): Transform {
  const set = new Set<string>(ops);
  return named('dropOps', (c) => (set.has(c.op) ? null : c));
}

/**
 * Leaves columns out, e.g. `dropColumns({ 'public.users': ['ssn'] })`. A key column cannot be
 * dropped (the row would lose its identity): such a change is dead-lettered.
 */
export function dropColumns(columns: PerTable<readonly string[]>): Transform {
  const lookup = perTable(columns, 'dropColumns');
  return named('dropColumns', (c) => {
    const drop = lookup(c);
    if (!drop || drop.length === 0) return c;
    const set = new Set(drop);
    for (const k in c.key) if (set.has(k)) throw new Error(`${k} is a key column of ${labelOf(c)}; key columns cannot be dropped (rename or hash it instead)`);
    return mapColumns(c, (name, value) => (set.has(name) ? SKIP : [name, value]), set);
  });
}

/**
 * Renames columns, e.g. `renameColumns({ users: { email: 'mail' } })`. Key columns may be
 * renamed: they keep their position, so the row key stays canonical. Renaming onto a column
 * that stays is refused (dead-lettered).
 */
export function renameColumns(renames: PerTable<Readonly<Record<string, string>>>): Transform {
  const lookup = perTable(renames, 'renameColumns');
  return named('renameColumns', (c) => {
    const map = lookup(c);
    if (!map) return c;
    const from = new Set(Object.keys(map));
    return mapColumns(c, (name, value) => [Object.prototype.hasOwnProperty.call(map, name) ? (map[name] as string) : name, value], from, (name) => (Object.prototype.hasOwnProperty.call(map, name) ? map[name] : name));
  });
}

/**
 * Replaces values with `mask` (default `'***'`; a function gets the value, column and change;
 * NULL stays NULL), e.g. `maskColumns({ 'public.users': ['email'] })`. Key columns cannot be
 * masked (rows would collide); hash them instead.
 */
export function maskColumns(columns: PerTable<readonly string[]>, mask: string | ((value: string, column: string, change: ChangeEvent) => string) = '***'): Transform {
  const lookup = perTable(columns, 'maskColumns');
  return named('maskColumns', (c) => {
    const cols = lookup(c);
    if (!cols || cols.length === 0) return c;
    const set = new Set(cols);
    for (const k in c.key) if (set.has(k)) throw new Error(`${k} is a key column of ${labelOf(c)}; masking it would merge rows (use hashColumns)`);
    return mapColumns(c, (name, value) => [name, set.has(name) && value !== null ? (typeof mask === 'string' ? mask : mask(value, name, c)) : value], set);
  });
}

/** Options of hashColumns. */
export interface HashOptions {
  /** Hash algorithm of node:crypto; default `sha256`. */
  algorithm?: string;
  /** With a secret, an HMAC: values cannot be confirmed by hashing guesses. */
  secret?: string;
  /** Output encoding; default `hex`. */
  encoding?: 'hex' | 'base64' | 'base64url';
}

/**
 * Replaces values with their hash (hex SHA-256 by default, HMAC with `secret`); NULL stays
 * NULL. Deterministic, so it may hash key columns: equal keys stay equal, distinct keys stay
 * distinct (barring collisions), and the row key stays canonical.
 */
export function hashColumns(columns: PerTable<readonly string[]>, options: HashOptions = {}): Transform {
  const lookup = perTable(columns, 'hashColumns');
  const algorithm = options.algorithm ?? 'sha256';
  const encoding = options.encoding ?? 'hex';
  const hash = (v: string): string => (options.secret === undefined ? createHash(algorithm) : createHmac(algorithm, options.secret)).update(v).digest(encoding);
  hash('probe'); // an unknown algorithm fails here, not per change
  return named('hashColumns', (c) => {
    const cols = lookup(c);
    if (!cols || cols.length === 0) return c;
    const set = new Set(cols);
    return mapColumns(c, (name, value) => [name, set.has(name) && value !== null ? hash(value) : value], set);
  });
}

/**
 * Sends a table's changes to another table, e.g. `routeTables({ 'public.users': 'crm.contacts' })`
 * (a target without a schema keeps the source's). Two sources must not share a target: their
 * keys, versions and tombstones would mix; this is refused when the transform is made.
 */
export function routeTables(routes: PerTable<string>): Transform {
  const map = new Map<string, { schema: string; table: string }>();
  const targets = new Map<string, string>();
  const problems: string[] = [];
  for (const [from, to] of Object.entries(routes)) {
    try {
      const source = parseTableName(from);
      const target = parseTableName(to, source.schema);
      const label = `${target.schema}.${target.table}`;
      const other = targets.get(label);
      if (other !== undefined) problems.push(`routeTables.${from}: ${label} is already the target of ${other}`);
      targets.set(label, from);
      map.set(`${source.schema}.${source.table}`, target);
    } catch (err) {
      problems.push(`routeTables.${from}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return named('routeTables', (c) => {
    const target = map.get(labelOf(c));
    return target ? { ...c, schema: target.schema, table: target.table } : c;
  });
}

/**
 * Adds a computed column to the new row image (INSERT, UPDATE, READ), e.g.
 * `addColumn('orders', 'total_cents', (c) => String(Math.round(Number(c.payload?.total) * 100)))`.
 * `compute` gets the change and returns the column's text value or null. When a column it
 * reads was not sent (listed in `unchanged`), return `undefined` to leave the stored value.
 * A column that already exists is refused (dead-lettered).
 */
export function addColumn(table: string, column: string, compute: (change: ChangeEvent) => string | null | undefined): Transform {
  const match = table === '*' ? undefined : tableSet([table], 'addColumn');
  return named('addColumn', (c) => {
    if (match && !match.has(labelOf(c))) return c;
    if (!c.payload) return c;
    if (Object.prototype.hasOwnProperty.call(c.payload, column)) throw new Error(`${labelOf(c)} already has a column ${column}`);
    const value = compute(c);
    if (value === undefined) return { ...c, unchanged: [...(c.unchanged ?? []), column] };
    return { ...c, payload: withColumn(c.payload, column, value) };
  });
}

/** Runs `transforms` in order as one transform (a reusable chain). */
export function chain(...transforms: Transform[]): Transform {
  return named('chain', async (c) => {
    let current: ChangeEvent[] = [c];
    for (const t of transforms) {
      const next: ChangeEvent[] = [];
      for (const x of current) {
        const r = await t(x);
        if (r === null) continue;
        if (Array.isArray(r)) next.push(...(r as readonly ChangeEvent[]));
        else next.push(r as ChangeEvent);
      }
      current = next;
    }
    return current;
  });
}

const SKIP = Symbol('skip');

/**
 * Rebuilds key, payload, before and unchanged through `fn` (name, value) → [name, value] or
 * SKIP, for changes that touch one of `touched`. Columns in `unchanged` keep their absence.
 */
function mapColumns(c: ChangeEvent, fn: (name: string, value: string | null) => [string, string | null] | typeof SKIP, touched: ReadonlySet<string>, rename?: (name: string) => string | undefined): ChangeEvent {
  if (!touchesAny(c, touched)) return c;
  const row = (r: Row): Row => {
    const out: Row = {};
    for (const name in r) {
      if (!Object.prototype.hasOwnProperty.call(r, name)) continue;
      const mapped = fn(name, r[name] ?? null);
      if (mapped === SKIP) continue;
      if (Object.prototype.hasOwnProperty.call(out, mapped[0])) throw new Error(`two columns of ${labelOf(c)} would be named ${mapped[0]}`);
      Object.defineProperty(out, mapped[0], { value: mapped[1], enumerable: true, writable: true, configurable: true });
    }
    return out;
  };
  const out: ChangeEvent = { ...c, key: row(c.key), payload: c.payload && row(c.payload) };
  if (c.before) out.before = row(c.before);
  if (c.unchanged) {
    out.unchanged = c.unchanged.flatMap((name) => {
      if (rename) {
        const to = rename(name);
        return to === undefined ? [] : [to];
      }
      return fn(name, null) === SKIP ? [] : [name];
    });
  }
  return out;
}

function touchesAny(c: ChangeEvent, columns: ReadonlySet<string>): boolean {
  for (const name of columns) {
    if (Object.prototype.hasOwnProperty.call(c.key, name)) return true;
    if (c.payload && Object.prototype.hasOwnProperty.call(c.payload, name)) return true;
    if (c.before && Object.prototype.hasOwnProperty.call(c.before, name)) return true;
    if (c.unchanged?.includes(name)) return true;
  }
  return false;
}

function withColumn(row: Row, column: string, value: string | null): Row {
  const out: Row = { ...row };
  Object.defineProperty(out, column, { value, enumerable: true, writable: true, configurable: true });
  return out;
}

function labelOf(c: Pick<ChangeEvent, 'schema' | 'table'>): string {
  return `${c.schema}.${c.table}`;
}

function tableSet(tables: readonly string[], what: string): Set<string> {
  const problems: string[] = [];
  const set = new Set<string>();
  for (const t of tables) {
    try {
      const n = parseTableName(t);
      set.add(`${n.schema}.${n.table}`);
    } catch (err) {
      problems.push(`${what}: ${t}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return set;
}

function perTable<T>(spec: PerTable<T>, what: string): (c: ChangeEvent) => T | undefined {
  const byTable = new Map<string, T>();
  let fallback: T | undefined;
  const problems: string[] = [];
  for (const [key, value] of Object.entries(spec)) {
    if (key === '*') {
      fallback = value;
      continue;
    }
    try {
      const n = parseTableName(key);
      byTable.set(`${n.schema}.${n.table}`, value);
    } catch (err) {
      problems.push(`${what}.${key}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return (c) => byTable.get(labelOf(c)) ?? fallback;
}

function named(name: string, fn: Transform): Transform {
  Object.defineProperty(fn, 'name', { value: name });
  return fn;
}
