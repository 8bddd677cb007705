import type { ColumnType } from './schema-version.js';

/**
 * One column of a table as the source's DDL history (`<state_schema>.ddl_history`) recorded
 * it, inside the DDL's own transaction: exact at that point of the WAL.
 */
export interface HistoryColumn {
  name: string;
  attnum: number;
  type_oid: number;
  typmod: number;
  not_null: boolean;
  key: boolean;
}

/**
 * The history's columns for a definition capture met (the Relation message's `columns`),
 * from the first of `entries` (newest first, each recorded at or before the definition's
 * LSN) that has every one of them, by name and type oid, in the same order. pgoutput leaves
 * out generated columns and columns outside a publication's column list, so the entry may
 * have more. Undefined when no entry matches (the history has a gap: DDL ran while the
 * event trigger was missing): the caller falls back to the catalog as it is now.
 *
 * Why the newest entry at or before the LSN is the definition: the event trigger runs at
 * the end of the DDL, which holds the table's ACCESS EXCLUSIVE lock until it commits, so
 * every change carrying the new definition is written after the entry's LSN; a DDL rolled
 * back leaves no entry.
 */
export function definitionAt(entries: readonly (readonly HistoryColumn[])[], columns: readonly ColumnType[]): HistoryColumn[] | undefined {
  for (const entry of entries) {
    const found: HistoryColumn[] = [];
    let from = 0;
    for (const c of columns) {
      const at = entry.findIndex((h, i) => i >= from && h.name === c.name);
      const h = entry[at];
      // Number(): an entry written by an older function may hold the oid as a jsonb string.
      if (!h || Number(h.type_oid) !== c.typeOid) break;
      found.push(h);
      from = at + 1;
    }
    if (found.length === columns.length) return found;
  }
  return undefined;
}
