import { createHash } from 'node:crypto';
import type { Lsn } from './lsn.js';

/** A column as a Relation message describes it: what `_schema_version` tracks. */
export interface ColumnType {
  name: string;
  typeOid: number;
  typeMod: number;
}

/** One definition of a table: its version and the WAL position where it was first seen. */
export interface SchemaVersionEntry {
  schema: string;
  table: string;
  version: number;
  /** `columnSignature` of the definition. */
  signature: string;
  lsn: Lsn;
  /** The definition's columns (entries made in this process; not loaded back from the store). */
  columns?: readonly ColumnType[];
  /** The relation's oid (the Relation message's relid) when the definition came in one (entries made in this process). */
  relid?: number;
}

/**
 * `_schema_version` of each table as capture sees it. Resolution is synchronous (it runs on
 * the decode path); a version handed out for the first time is recorded in the background,
 * and `stored()` tells capture when it may acknowledge the events that carry it.
 */
export interface SchemaVersionRegistry {
  /**
   * The version of `schema.table` with these columns, seen at WAL position `lsn`; `relid`: the
   * relation's oid when the definition came in a Relation message (not for a snapshot's).
   */
  versionOf(schema: string, table: string, columns: readonly ColumnType[], lsn: Lsn, relid?: number): number;
  /** Resolves once every version handed out so far is durably recorded. */
  stored(): Promise<void>;
  /** Calls `listener` with each definition seen for the first time from now on (a DDL capture met). */
  listen?(listener: (entry: SchemaVersionEntry) => void): void;
}

/** Column names, types and type modifiers in order, hashed (SHA-256, hex). */
export function columnSignature(columns: readonly ColumnType[]): string {
  const h = createHash('sha256');
  for (const c of columns) h.update(`${c.name}\u0000${c.typeOid}\u0000${c.typeMod}\u0001`);
  return h.digest('hex');
}

/**
 * The versions of each table's definitions, oldest first (pure: no I/O). A definition equal
 * to the table's latest keeps its version, so a restart with the same table reads the same
 * version. A different one gets the next version — also when it equals an older definition
 * (a column added and dropped again): versions only increase. The one exception is WAL
 * replayed after a restart from before the latest definition appeared: there an older
 * definition is still the current one and keeps its own version, so a replayed change
 * carries the version it had the first time.
 */
export class SchemaVersionHistory implements SchemaVersionRegistry {
  private readonly tables = new Map<string, SchemaVersionEntry[]>();

  /**
   * @param entries definitions recorded earlier (any order)
   * @param onNew called with each definition seen for the first time, to record it
   */
  constructor(entries: readonly SchemaVersionEntry[] = [], private readonly onNew?: (entry: SchemaVersionEntry) => void) {
    for (const e of [...entries].sort((a, b) => a.version - b.version)) this.historyOf(e.schema, e.table).push(e);
  }

  versionOf(schema: string, table: string, columns: readonly ColumnType[], lsn: Lsn, relid?: number): number {
    const history = this.historyOf(schema, table);
    const signature = columnSignature(columns);
    const latest = history[history.length - 1];
    if (latest?.signature === signature) return latest.version;
    for (let i = history.length - 2; i >= 0; i--) {
      const e = history[i] as SchemaVersionEntry;
      if (e.signature === signature && lsn < (history[i + 1] as SchemaVersionEntry).lsn) return e.version;
    }
    const entry: SchemaVersionEntry = { schema, table, version: (latest?.version ?? 0) + 1, signature, lsn, columns, ...(relid === undefined ? {} : { relid }) };
    history.push(entry);
    this.onNew?.(entry);
    return entry.version;
  }

  /** Nothing to store: the in-memory registry (tests, benchmarks, no state schema). */
  stored(): Promise<void> {
    return Promise.resolve();
  }

  private historyOf(schema: string, table: string): SchemaVersionEntry[] {
    const key = JSON.stringify([schema, table]);
    let h = this.tables.get(key);
    if (!h) this.tables.set(key, (h = []));
    return h;
  }
}

/** A relation (its oid: the Relation message's relid) recorded under a table name from WAL position `since` on. */
export interface RelationSighting {
  schema: string;
  table: string;
  relid: number;
  since: Lsn;
}

/** What a Relation message's relid says of the relation under its name (RelationIds.see). */
export interface RelationChange {
  /**
   * 'same': the relation recorded under the name (or WAL replayed from before it was
   * recorded): nothing to do. 'record': the name had no relid recorded (a new name, or rows
   * recorded before relids were): record it, nothing more. 'new': another relation than the
   * one recorded under the name (dropped and created again, or swapped in by a rename), or
   * the recorded one come back from another name (`from`): the target's table of the name
   * lacks rows the slot never sent to it.
   */
  kind: 'same' | 'record' | 'new';
  /** The name the relation was recorded under more recently than this name's relation (a rename). */
  from?: { schema: string; table: string };
}

/**
 * Which relation each table name stands for, as Relation messages told (pure: no I/O).
 * `_schema_version` compares definitions by name and columns only, so a table dropped and
 * created again with the same columns, or renamed and renamed back, looks unchanged to it;
 * the relid tells them apart. WAL is met in LSN order, except when replayed after a restart:
 * a sighting older than the name's recorded one is taken as handled already, so a replay
 * finds nothing new and queues nothing twice.
 */
export class RelationIds {
  private readonly byName = new Map<string, RelationSighting>();
  /** relid → the keys of the names whose latest sighting it is. */
  private readonly byRelid = new Map<number, Set<string>>();

  constructor(sightings: readonly RelationSighting[] = []) {
    for (const s of [...sightings].sort((a, b) => (a.since < b.since ? -1 : a.since > b.since ? 1 : 0))) this.set(s);
  }

  /** Tells what `relid` under `schema.table` at `lsn` is, and records it unless 'same'. */
  see(schema: string, table: string, relid: number, lsn: Lsn): RelationChange {
    const key = JSON.stringify([schema, table]);
    const current = this.byName.get(key);
    if (current && lsn < current.since) return { kind: 'same' };
    // Recorded under another name (at or before `lsn`) since this name's sighting of the same
    // relation began; for another relation than the name's (or a name without one), whenever:
    // the newest such name is where its changes went. (A table renamed over a dropped one,
    // `b` seen before the old `a`, was passed over, taken for a table created under FOR ALL
    // TABLES, and never read: red17b.)
    let from: RelationSighting | undefined;
    for (const k of this.byRelid.get(relid) ?? []) {
      const s = this.byName.get(k) as RelationSighting;
      if (k === key || s.since > lsn || (current?.relid === relid && s.since <= current.since)) continue;
      if (!from || s.since > from.since) from = s;
    }
    if (current?.relid === relid && !from) return { kind: 'same' };
    this.set({ schema, table, relid, since: lsn });
    const moved = from ? { from: { schema: from.schema, table: from.table } } : {};
    if (current && current.relid !== relid) return { kind: 'new', ...moved };
    return { kind: from ? 'new' : 'record', ...moved };
  }

  private set(s: RelationSighting): void {
    const key = JSON.stringify([s.schema, s.table]);
    const before = this.byName.get(key);
    if (before) this.byRelid.get(before.relid)?.delete(key);
    this.byName.set(key, s);
    let names = this.byRelid.get(s.relid);
    if (!names) this.byRelid.set(s.relid, (names = new Set()));
    names.add(key);
  }
}
