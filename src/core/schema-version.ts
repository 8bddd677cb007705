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
  /** The definition's columns, in order: set when the definition is seen (not when loaded). */
  columns?: readonly ColumnType[];
}

/**
 * `_schema_version` of each table as capture sees it. Resolution is synchronous (it runs on
 * the decode path); a version handed out for the first time is recorded in the background,
 * and `stored()` tells capture when it may acknowledge the events that carry it.
 */
export interface SchemaVersionRegistry {
  /** The version of `schema.table` with these columns, seen at WAL position `lsn`. */
  versionOf(schema: string, table: string, columns: readonly ColumnType[], lsn: Lsn): number;
  /** Resolves once every version handed out so far is durably recorded. */
  stored(): Promise<void>;
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

  versionOf(schema: string, table: string, columns: readonly ColumnType[], lsn: Lsn): number {
    const history = this.historyOf(schema, table);
    const signature = columnSignature(columns);
    const latest = history[history.length - 1];
    if (latest?.signature === signature) return latest.version;
    for (let i = history.length - 2; i >= 0; i--) {
      const e = history[i] as SchemaVersionEntry;
      if (e.signature === signature && lsn < (history[i + 1] as SchemaVersionEntry).lsn) return e.version;
    }
    const entry: SchemaVersionEntry = { schema, table, version: (latest?.version ?? 0) + 1, signature, lsn, columns };
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
