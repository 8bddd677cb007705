import { existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { formatLsn } from '../../core/lsn.js';
import { firstPresent } from '../../core/table-arg.js';
import type { RecordedConflictRow } from '../conflicts/recorded-conflict.js';
import { quoteSqliteIdent, sqlitePathOf } from './sqlite-table.js';

/** A row as SQLite returns it: integers as bigint, the versions as JSON text. */
type ConflictRow = Omit<RecordedConflictRow, 'id' | 'incoming_lsn' | 'incoming_version' | 'stored_version' | 'written'> & {
  id: bigint;
  incoming_lsn: bigint;
  incoming_version: string | null;
  stored_version: string | null;
  written: string | null;
};

/**
 * The newest `limit` conflicts recorded in the SQLite sink at `url` (`<stateSchema>_conflicts`),
 * of the first of `tables` (`schema.table` labels best first: see tableArgLabels) that has conflicts
 * when given, newest first; empty when the file or the table does not exist
 * (no conflict was ever recorded). Opened read-only: WAL mode lets it read while apply writes.
 */
export function listSqliteConflicts(url: string, stateSchema: string, filter: { tables?: readonly string[]; limit: number }): RecordedConflictRow[] {
  const file = sqlitePathOf(url);
  if (file !== ':memory:' && !existsSync(file)) return [];
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    db.defaultSafeIntegers(true);
    const name = `${stateSchema}_conflicts`;
    if (db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(name) === undefined) return [];
    let label: string | undefined;
    if (filter.tables !== undefined) {
      const recorded = db.prepare(`SELECT DISTINCT table_name AS t FROM ${quoteSqliteIdent(name)}`).all() as { t: string }[];
      label = firstPresent(filter.tables, new Set(recorded.map((r) => r.t)));
      if (label === undefined) return [];
    }
    const rows = db
      .prepare(
        `SELECT id, detected_at, table_name, row_key, strategy, winner, incoming_source, stored_source, incoming_lsn,
                incoming_clock, stored_clock, incoming_version, stored_version, written
           FROM ${quoteSqliteIdent(name)} WHERE (? IS NULL OR table_name = ?) ORDER BY id DESC LIMIT ?`,
      )
      .all(label ?? null, label ?? null, filter.limit) as ConflictRow[];
    return rows.map((r) => ({
      ...r,
      id: String(r.id),
      incoming_lsn: formatLsn(BigInt(r.incoming_lsn)),
      incoming_version: jsonOf(r.incoming_version),
      stored_version: jsonOf(r.stored_version),
      written: jsonOf(r.written),
    }));
  } finally {
    db.close();
  }
}

/** The versions are stored as JSON text; NULL (nothing written) stays null. */
function jsonOf(text: string | null): unknown {
  return text === null ? null : (JSON.parse(text) as unknown);
}
